/** Payload padding (PROTOCOL.md §13, §18.7). */
import { describe, expect, it } from "vitest";
import { isPaddedSize, MAX_PADDED, pad, paddedSize, unpad } from "../src/protocol/padding";
import { hasVector, loadVector } from "./vectors";

/** The valid sizes as §13 lists them: 16 evenly spaced sizes per octave from 256 to 65 536, then 65 536 and 66 048. */
function listedSizes(): number[] {
  const sizes: number[] = [];
  for (let e = 8; e < 16; e++) for (let k = 0; k < 16; k++) sizes.push(2 ** e + k * 2 ** (e - 4));
  return [...sizes, 65_536, MAX_PADDED];
}

const text = (n: number) => ({ sentAt: 1, content: { type: "text", text: "x".repeat(n) } }) as const;

describe("padding", () => {
  it("pads texts to the documented sizes", () => {
    const lengths = [0, 243, 244, 259, 260, 499, 500, 1_011, 1_012, 32_755, 32_756, 65_523, 65_524, 65_536];
    expect(lengths.map((n) => pad(text(n)).length)).toEqual([
      256, 256, 272, 272, 288, 512, 544, 1_024, 1_088, 32_768, 34_816, 65_536, 66_048, 66_048,
    ]);
  });

  it("gives every length the smallest listed size that holds it, and accepts exactly the listed sizes", () => {
    const listed = listedSizes();
    expect(listed.length).toBe(130);
    const valid = new Set(listed);
    let next = 0;
    for (let n = 0; n <= MAX_PADDED + 1; n++) {
      while (next < listed.length && listed[next] < n) next++;
      if (paddedSize(n) !== listed[next]) throw new Error(`${n} bytes: ${paddedSize(n)}, not ${listed[next]}`);
    }
    for (let size = 0; size <= MAX_PADDED + 4_096; size++) {
      if (isPaddedSize(size) !== valid.has(size)) throw new Error(`size ${size}`);
    }
  });

  it("accepts every padded size and refuses its neighbours", () => {
    const short = pad({ sentAt: 1, content: { type: "text", text: "hi" } });
    for (const size of listedSizes()) {
      for (const [length, ok] of [[size, true], [size - 1, false], [size + 1, false]] as const) {
        const payload = new Uint8Array(length);
        payload.set(short.subarray(0, Math.min(length, short.length)));
        if (ok) expect(unpad(payload).content).toEqual({ type: "text", text: "hi" });
        else expect(() => unpad(payload), `${length} bytes`).toThrow(/padded size/);
      }
    }
  });

  it.skipIf(!hasVector("v2_padding.json"))("agrees with the padding vector (§18.7)", () => {
    const v = loadVector("v2_padding.json");
    for (const [length, size] of v.outputs.padded_sizes as [number, number | null][]) {
      expect(paddedSize(length) ?? null, `${length} bytes`).toBe(size);
    }
    expect(listedSizes()).toEqual(v.outputs.valid_sizes);
  });

  it("round-trips texts and sync copies", () => {
    const sync = { type: "sync", to: "+12025550102", id: "01a206d2e2edd327b947c6eb38d84784", text: "café ✉" } as const;
    expect(unpad(pad({ sentAt: 42, content: sync }))).toEqual({ sentAt: 42, content: sync });
    expect(unpad(pad({ sentAt: 7, content: { type: "text", text: "" } }))).toEqual({ sentAt: 7, content: { type: "text", text: "" } });
    const longest = { type: "sync", to: "+123456789012345", id: "01a206d2e2edd327b947c6eb38d84784", text: "x".repeat(65_536) } as const;
    const padded = pad({ sentAt: 3, content: longest });
    expect(padded.length).toBe(MAX_PADDED);
    expect(unpad(padded)).toEqual({ sentAt: 3, content: longest });
  });

  it("pads a sync copy from its text's padded size alone", () => {
    const id = "01a206d2e2edd327b947c6eb38d84784";
    const phones = ["+1202555", "+12025550102", "+123456789012345"];
    const seen = new Map<number, number>();
    for (let length = 0; length < 2_100; length++) {
      const text = "x".repeat(length);
      const textSize = pad({ sentAt: 1, content: { type: "text", text } }).length;
      for (const to of phones) {
        const size = pad({ sentAt: 1, content: { type: "sync", to, id, text } }).length;
        if (!seen.has(textSize)) seen.set(textSize, size);
        expect(size, `${length} bytes to ${to}`).toBe(seen.get(textSize));
      }
    }
    expect(seen.get(256)).toBe(304);
    expect(seen.get(272)).toBe(320);
  });

  it("refuses wrong sizes, overruns, dirty padding and long texts", () => {
    const good = pad({ sentAt: 1, content: { type: "text", text: "hi" } });
    expect(() => unpad(good.subarray(0, 255))).toThrow(/padded size/);
    const dirty = good.slice();
    dirty[200] = 1;
    expect(() => unpad(dirty)).toThrow(/zero/);
    const overrun = good.slice();
    overrun[12] = 0xff;
    expect(() => unpad(overrun)).toThrow(/overruns/);
    expect(() => pad({ sentAt: 1, content: { type: "text", text: "x".repeat(65_537) } })).toThrow(/65 536/);
  });
});
