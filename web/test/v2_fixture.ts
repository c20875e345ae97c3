/** Keys and parties of the v2 PQXDH and session vectors (PROTOCOL.md §18.3, §18.4), from their inputs. */
import { fromHex, type Bytes } from "../src/crypto/bytes";
import { importScalar } from "../src/crypto/p256";
import { kemKeyPair } from "../src/crypto/mlkem";
import type { Party } from "../src/protocol/pqxdh";
import { PrekeyKind, type Prekey, type PrekeyChoice } from "../src/protocol/statements";

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

