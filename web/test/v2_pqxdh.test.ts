/** PQXDH over P-256 and ML-KEM-768 (PROTOCOL.md §11), both sides, against §18.3's vector. */
import { describe, expect, it } from "vitest";
import { fromHex, toHex, type Bytes } from "../src/crypto/bytes";
import { importScalar } from "../src/crypto/p256";
import { binding, initiate, respond } from "../src/protocol/pqxdh";
import { pqxdhFixture } from "./v2_fixture";
import { hasVector, loadVector } from "./vectors";

const FILE = "v2_pqxdh.json";
const hex = (s: string): Bytes => fromHex(s);

describe.skipIf(!hasVector(FILE))("PQXDH (PROTOCOL.md §18.3)", () => {
  const vector = hasVector(FILE) ? loadVector(FILE) : { inputs: {} };
  const i = vector.inputs;

  for (const [name, oneTime] of [["with_one_time_prekeys", true], ["last_resort_only", false]] as const) {
    it(`agrees on the vector's root key, ${name.replace(/_/g, " ")}`, async () => {
      const o = vector[name];
      const f = await pqxdhFixture(i);
      const ephemeral = await importScalar(hex(i.ephemeral_scalar), "ECDH");
      expect(toHex(ephemeral.point)).toBe(o.ephemeral_point);

      const { agreement, setUp } = await initiate(
        { ...f.initiator, agree: f.initiatorDevice.key },
        f.responder,
        oneTime ? f.withOneTime : f.lastResort,
        { agree: ephemeral.key, point: ephemeral.point },
        hex(i.kem_randomness),
      );
      expect(toHex(setUp.kemCiphertext)).toBe(o.kem_ciphertext);
      expect(setUp.oneTimePrekeyId).toBe(oneTime ? i.one_time_prekey_id : 0);
      const prekeys = oneTime ? f.withOneTime : f.lastResort;
      expect(toHex(binding(f.initiator, f.responder, prekeys, setUp))).toBe(o.binding);
      expect(toHex(agreement.sessionHash)).toBe(o.session_hash);
      expect(toHex(agreement.sessionId)).toBe(o.session_id);
      expect(toHex(agreement.rootKey)).toBe(o.root_key);

      const bob = await respond({ ...f.responder, agree: f.responderDevice.key }, f.initiator, f.responderKeys(oneTime), setUp);
      expect(toHex(bob.rootKey)).toBe(o.root_key);
    });
  }

  it("disagrees when anything public differs (here: the initiator's device id)", async () => {
    const f = await pqxdhFixture(i);
    const ephemeral = await importScalar(hex(i.ephemeral_scalar), "ECDH");
    const { agreement, setUp } = await initiate({ ...f.initiator, agree: f.initiatorDevice.key }, f.responder, f.withOneTime, { agree: ephemeral.key, point: ephemeral.point });
    const bob = await respond({ ...f.responder, agree: f.responderDevice.key }, { ...f.initiator, deviceId: 8 }, f.responderKeys(true), setUp);
    expect(toHex(bob.rootKey)).not.toBe(toHex(agreement.rootKey));
  });
});
