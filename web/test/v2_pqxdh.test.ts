/** PQXDH over P-256 and ML-KEM-768 (PROTOCOL-v2 §5), both sides, against §12.2's vector. */
import { describe, expect, it } from "vitest";
import { fromHex, toHex, type Bytes } from "../src/crypto/bytes";
import { importScalar } from "../src/crypto/p256";
import { kemKeyPair } from "../src/crypto/mlkem";
import { binding, initiate, respond, type Party } from "../src/protocol/pqxdh";
import { PrekeyKind, type Prekey, type PrekeyChoice } from "../src/protocol/statements";
import { hasVector, loadVector } from "./vectors";

const FILE = "v2_pqxdh.json";
const hex = (s: string): Bytes => fromHex(s);

/** The responder's keys and both parties, from the vector's inputs. */
export async function pqxdhFixture(i: Record<string, any>) {
  const responderDevice = await importScalar(hex(i.device_scalar), "ECDH");
  const initiatorDevice = await importScalar(hex(i.initiator_device_scalar), "ECDH");
  const spk = await importScalar(hex(i.signed_prekey_scalar), "ECDH");
  const opk = await importScalar(hex(i.one_time_prekey_scalar), "ECDH");
  const kemLast = kemKeyPair(hex(i.kem_last_resort_seed));
  const kemOne = kemKeyPair(hex(i.kem_one_time_seed));
  const responder: Party = { phone: i.phone, deviceId: i.device_id, identity: responderDevice.point };
  const initiator: Party = { phone: i.initiator_phone, deviceId: i.initiator_device_id, identity: initiatorDevice.point };
  const prekey = (kind: PrekeyKind, id: number, key: Bytes): Prekey => ({ kind, id, key, createdAt: i.prekeys_created_at_ms, signature: new Uint8Array(64) });
  const bundle = {
    device: { id: i.device_id, point: responderDevice.point, name: "" },
    signedPrekey: prekey(PrekeyKind.Signed, i.signed_prekey_id, spk.point),
    kemLastResort: prekey(PrekeyKind.KemLastResort, i.kem_last_resort_id, kemLast.publicKey),
  };
  const withOneTime: PrekeyChoice = { ...bundle, oneTimePrekey: prekey(PrekeyKind.OneTime, i.one_time_prekey_id, opk.point), kemPrekey: prekey(PrekeyKind.KemOneTime, i.kem_one_time_id, kemOne.publicKey) };
  const lastResort: PrekeyChoice = { ...bundle, oneTimePrekey: null, kemPrekey: bundle.kemLastResort };
  const responderKeys = (oneTime: boolean) => ({
    signedPrekey: { ...spk, agree: spk.key, id: i.signed_prekey_id },
    oneTimePrekey: oneTime ? { ...opk, agree: opk.key, id: i.one_time_prekey_id } : null,
    kemPrekey: oneTime ? { id: i.kem_one_time_id, ...kemOne } : { id: i.kem_last_resort_id, ...kemLast },
  });
  return { responderDevice, initiatorDevice, responder, initiator, withOneTime, lastResort, responderKeys };
}

describe.skipIf(!hasVector(FILE))("PQXDH (PROTOCOL-v2 §12.2)", () => {
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
