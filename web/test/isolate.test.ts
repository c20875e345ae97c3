/** Peer text set inside the client's own sentences keeps its bidi controls to itself. */
import { describe, expect, it } from "vitest";
import { FSI, isolate, PDI } from "../src/core/isolate";

describe("isolate", () => {
  it("wraps text in one isolate and drops every bidi control in it, so none can spill or close it early", () => {
    expect(isolate("laptop")).toBe(`${FSI}laptop${PDI}`);
    const hostile = "\u202Efdp.exe\u2069\u202B\u202A\u202C\u202D\u2066\u2067\u2068\u200E\u200F\u061C";
    expect(isolate(hostile)).toBe(`${FSI}fdp.exe${PDI}`);
    expect(isolate("שלום")).toBe(`${FSI}שלום${PDI}`);
  });
});
