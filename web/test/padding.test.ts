/** Payload padding (PROTOCOL.md §13, §18.7). */
import { describe, expect, it } from "vitest";
import { pad, unpad } from "../src/protocol/padding";

describe("padding", () => {
  it("puts texts in the documented buckets", () => {
    const sizes = [0, 243, 244, 65_523, 65_524].map((n) => pad({ sentAt: 1, content: { type: "text", text: "x".repeat(n) } }).length);
    expect(sizes).toEqual([256, 256, 512, 65_536, 66_048]);
  });

  it("round-trips texts and sync copies", () => {
    const sync = { type: "sync", to: "+12025550102", id: "01a206d2e2edd327b947c6eb38d84784", text: "café ✉" } as const;
    expect(unpad(pad({ sentAt: 42, content: sync }))).toEqual({ sentAt: 42, content: sync });
    expect(unpad(pad({ sentAt: 7, content: { type: "text", text: "" } }))).toEqual({ sentAt: 7, content: { type: "text", text: "" } });
  });

  it("refuses wrong sizes, overruns, dirty padding and long texts", () => {
    const good = pad({ sentAt: 1, content: { type: "text", text: "hi" } });
    expect(() => unpad(good.subarray(0, 255))).toThrow(/bucket/);
    const dirty = good.slice();
    dirty[200] = 1;
    expect(() => unpad(dirty)).toThrow(/zero/);
    const overrun = good.slice();
    overrun[12] = 0xff;
    expect(() => unpad(overrun)).toThrow(/overruns/);
    expect(() => pad({ sentAt: 1, content: { type: "text", text: "x".repeat(65_537) } })).toThrow(/65 536/);
  });
});
