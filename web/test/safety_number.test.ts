/** The safety number of PROTOCOL.md §17. */
import { describe, expect, it } from "vitest";
import { fromHex } from "../src/crypto/bytes";
import { spkiFromPoint } from "../src/crypto/p256";
import { safetyNumber } from "../src/protocol/safety_number";
import { hasVector, loadVector } from "./vectors";

const v1 = loadVector("envelope_p256.json").outputs;
const alice = { phone: "+12025550101", spki: fromHex(v1.sender_spki_der) };
const bob = { phone: "+12025550102", spki: spkiFromPoint(fromHex(v1.recipient_point)) };

describe("safety number", () => {
  // Known answer computed from the text of §17 with Python's hashlib, for the two keys of the v1 vector.
  it("matches an independent computation", async () => {
    expect(await safetyNumber(alice.phone, alice.spki, bob.phone, bob.spki)).toBe(
      "60618 88097 46271 43551 24795 56509 76363 07770 91805 78538 95789 24204",
    );
  });

  it("is the same from both sides and changes with either key", async () => {
    const ab = await safetyNumber(alice.phone, alice.spki, bob.phone, bob.spki);
    expect(await safetyNumber(bob.phone, bob.spki, alice.phone, alice.spki)).toBe(ab);
    expect(ab.replace(/ /g, "")).toMatch(/^\d{60}$/);
    const other = alice.spki.slice();
    other[90] ^= 1;
    expect(await safetyNumber(alice.phone, other, bob.phone, bob.spki)).not.toBe(ab);
  });

  it.skipIf(!hasVector("v2_safety_number.json"))("matches the v2 vector (PROTOCOL.md §18.5)", async () => {
    const { inputs, outputs } = loadVector("v2_safety_number.json");
    const number = await safetyNumber(inputs.phone_a, fromHex(outputs.spki_a), inputs.phone_b, fromHex(outputs.spki_b));
    expect(number).toBe(outputs.safety_number);
  });
});
