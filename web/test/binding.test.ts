import { describe, expect, it } from "vitest";
import { fromHex, toBase64, toHex } from "../src/crypto/bytes";
import { wsBinding } from "../src/protocol/binding";

describe("the WebSocket login binding (PROTOCOL.md §12.3)", () => {
  it("matches the vector", async () => {
    const binding = await wsBinding({
      challenge: toBase64(fromHex("11".repeat(32))),
      fingerprint: "22".repeat(32),
      connection: toBase64(fromHex("33".repeat(16))),
    });
    expect(toHex(binding)).toBe("68766cd8950ad03d89a89ca87f4dc92ad9a718b4fb71e479f71e31bea4d197ef");
  });
});
