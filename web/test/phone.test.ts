/** The client-side phone check: loose spellings in, canonical E.164 out, the impossible refused. */
import { describe, expect, it } from "vitest";
import { CoreError } from "../src/core/errors";
import { canonicalPhone } from "../src/core/phone";

describe("canonicalPhone", () => {
  it("accepts what the server accepts and writes it canonically", () => {
    expect(canonicalPhone(" +1 (202) 555-0101 ")).toBe("+12025550101");
    expect(canonicalPhone("+44.7700.900123")).toBe("+447700900123");
  });

  it("refuses numbers without +, with letters, a leading 0, or too many digits", () => {
    for (const bad of ["2025550101", "+1 202 CALL NOW", "+0123456", "+1234567890123456", "+1", "+"]) {
      expect(() => canonicalPhone(bad), bad).toThrow(CoreError);
    }
  });
});
