/** The safety number of PROTOCOL-v2 §11. */
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { fromHex } from "../src/crypto/bytes";
import { spkiFromPoint } from "../src/crypto/p256";
import { safetyNumber } from "../src/protocol/safety_number";
import { loadVector } from "./vectors";

const v1 = loadVector("envelope_p256.json").outputs;
const alice = { phone: "+12025550101", spki: fromHex(v1.sender_spki_der) };
const bob = { phone: "+12025550102", spki: spkiFromPoint(fromHex(v1.recipient_point)) };

describe("safety number", () => {
  // Known answer computed from the text of §11 with Python's hashlib, for the two keys of the v1 vector.
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

  const vectorFile = fileURLToPath(new URL("../../tests/vectors/v2_safety_number.json", import.meta.url));
  it.skipIf(!existsSync(vectorFile))("matches tests/vectors/v2_safety_number.json", async () => {
    const v = loadVector("v2_safety_number.json");
    const i = v.inputs;
    const got = await safetyNumber(i.phone_a ?? i.own_phone, fromHex(i.spki_a ?? i.own_spki), i.phone_b ?? i.peer_phone, fromHex(i.spki_b ?? i.peer_spki));
    expect(got).toBe(v.outputs.safety_number ?? v.safety_number);
  });
});
