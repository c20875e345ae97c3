/** Times as the page shows them: a value no Date can hold must not break a view. */
import { describe, expect, it } from "vitest";
import { isoTime, listTime, messageTime } from "../src/ui/format";

describe("time formatting", () => {
  it("shows something for every number, invalid ones included, and never throws", () => {
    const now = new Date(2026, 2, 12, 15, 0);
    for (const ms of [Number.NaN, Infinity, -Infinity, 2 ** 63, -(2 ** 63), 8.64e15 + 1]) {
      expect(isoTime(ms)).toBe("1970-01-01T00:00:00.000Z");
      expect(messageTime(ms, now)).not.toBe("");
      expect(listTime(ms, now)).not.toBe("");
    }
    expect(isoTime(now.getTime())).toBe(now.toISOString());
  });
});
