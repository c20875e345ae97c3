/**
 * Error codes come from the server: a code that names a property every object
 * inherits (`constructor`, `__proto__`, `toString`) is an unknown code like any
 * other, told in the general sentence or the server's own message, never as the
 * text of a function.
 */
import { describe, expect, it } from "vitest";
import { asCoreError, describe as sentence } from "../src/core/errors";
import { RequestError } from "../src/transport/connection";

const GENERAL = "Something went wrong. Try again in a moment.";
const INHERITED = ["constructor", "__proto__", "toString", "hasOwnProperty", "valueOf"];

describe("an error code that names an inherited property", () => {
  it.each(INHERITED)("%s gets the general sentence", (code) => {
    expect(sentence(code)).toBe(GENERAL);
  });

  it.each(INHERITED)("%s from the server keeps the server's message", (code) => {
    const error = asCoreError(new RequestError(code, "the server's own words", { type: "error", code }));
    expect(error.code).toBe(code);
    expect(error.message).toBe("the server's own words");
  });

  it("does not change the sentence of a known code", () => {
    expect(sentence("quota_exceeded")).toBe("The recipient's mailbox is full. Try again later.");
    expect(asCoreError(new RequestError("quota_exceeded", "queue full")).message).toBe("The recipient's mailbox is full. Try again later.");
  });
});
