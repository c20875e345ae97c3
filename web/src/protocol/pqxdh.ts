/**
 * Session set-up: PQXDH over P-256 and ML-KEM-768 (docs/PROTOCOL.md §11). Both
 * sides hash every public input into one binding, whose hash is both the KDF's
 * info and every message's associated data; they agree on a root key only if they
 * agree on all of it.
 */
import { concat, utf8, Writer, type Bytes } from "../crypto/bytes";
import { ecdh, type AgreementKey } from "../crypto/p256";
import { kemDecapsulate, kemEncapsulate } from "../crypto/mlkem";
import { hkdf, sha256 } from "../crypto/symmetric";
import type { PrekeyChoice } from "./statements";

const BINDING_LABEL = utf8("carrier-v2 session\0");
const KDF_INFO_LABEL = utf8("carrier-v2 pqxdh\0");

/** One end of a session: an account's phone and one of its devices. */
export interface Party {
  phone: string;
  deviceId: number;
  /** The device identity key, as a 65-byte point. */
  identity: Bytes;
}

/** What the initiator's prekey envelopes carry so the responder can set up the same session. */
export interface SetUp {
  signedPrekeyId: number;
  oneTimePrekeyId: number;
  kemPrekeyId: number;
  ephemeral: Bytes;
  kemCiphertext: Bytes;
}

export interface Agreement {
  rootKey: Bytes;
  sessionHash: Bytes;
  /** The first 16 bytes of the session hash; named in every envelope. */
  sessionId: Bytes;
}

/** The public prekeys the set-up used, by id and key. */
interface PublicPrekeys {
  signedPrekey: { id: number; key: Bytes };
  oneTimePrekey: { id: number; key: Bytes } | null;
  kemPrekey: { id: number; key: Bytes };
}

function writeParty(w: Writer, p: Party): void {
  w.prefixed(utf8(p.phone), 1).u32(p.deviceId).bytes(p.identity);
}

export function binding(initiator: Party, responder: Party, prekeys: PublicPrekeys, setUp: SetUp): Bytes {
  const w = new Writer().bytes(BINDING_LABEL);
  writeParty(w, initiator);
  writeParty(w, responder);
  w.u32(prekeys.signedPrekey.id).bytes(prekeys.signedPrekey.key);
  if (prekeys.oneTimePrekey) w.u32(prekeys.oneTimePrekey.id).bytes(prekeys.oneTimePrekey.key);
  else w.u32(0);
  w.u32(prekeys.kemPrekey.id).bytes(prekeys.kemPrekey.key);
  return w.bytes(setUp.ephemeral).bytes(setUp.kemCiphertext).finish();
}

/** SK = HKDF(salt = 0³², IKM = FF³² ‖ DH1 ‖ DH2 ‖ DH3 [‖ DH4] ‖ SS, info = label ‖ session hash). */
async function derive(bindingBytes: Bytes, secrets: Bytes[]): Promise<Agreement> {
  const sessionHash = await sha256(bindingBytes);
  const ikm = concat(new Uint8Array(32).fill(0xff), ...secrets);
  try {
    const rootKey = await hkdf(ikm, new Uint8Array(32), concat(KDF_INFO_LABEL, sessionHash), 32);
    return { rootKey, sessionHash, sessionId: sessionHash.slice(0, 16) };
  } finally {
    ikm.fill(0);
    secrets.forEach((s) => s.fill(0));
  }
}

/**
 * Alice's side: from Bob's verified bundle and claim, a fresh ephemeral key and
 * fresh KEM randomness (both given only by test vectors).
 */
export async function initiate(
  own: Party & { agree: CryptoKey },
  peer: Party,
  choice: PrekeyChoice,
  ephemeral: AgreementKey,
  kemRandomness?: Bytes,
): Promise<{ agreement: Agreement; setUp: SetUp }> {
  const { ciphertext, sharedSecret } = kemEncapsulate(choice.kemPrekey.key, kemRandomness);
  const setUp: SetUp = {
    signedPrekeyId: choice.signedPrekey.id,
    oneTimePrekeyId: choice.oneTimePrekey?.id ?? 0,
    kemPrekeyId: choice.kemPrekey.id,
    ephemeral: ephemeral.point,
    kemCiphertext: ciphertext,
  };
  const secrets = [
    await ecdh(own.agree, choice.signedPrekey.key),
    await ecdh(ephemeral.agree, peer.identity),
    await ecdh(ephemeral.agree, choice.signedPrekey.key),
  ];
  if (choice.oneTimePrekey) secrets.push(await ecdh(ephemeral.agree, choice.oneTimePrekey.key));
  secrets.push(sharedSecret);
  const own_: Party = { phone: own.phone, deviceId: own.deviceId, identity: own.identity };
  return { agreement: await derive(binding(own_, peer, choice, setUp), secrets), setUp };
}

/** The private halves Bob looks up by the ids in the set-up (current or retained). */
export interface ResponderPrekeys {
  signedPrekey: AgreementKey & { id: number };
  oneTimePrekey: (AgreementKey & { id: number }) | null;
  kemPrekey: { id: number; seed: Bytes; publicKey: Bytes };
}

/** Bob's side: the same agreement from the set-up Alice's first envelopes carry. */
export async function respond(own: Party & { agree: CryptoKey }, peer: Party, keys: ResponderPrekeys, setUp: SetUp): Promise<Agreement> {
  const secrets = [
    await ecdh(keys.signedPrekey.agree, peer.identity),
    await ecdh(own.agree, setUp.ephemeral),
    await ecdh(keys.signedPrekey.agree, setUp.ephemeral),
  ];
  if (keys.oneTimePrekey) secrets.push(await ecdh(keys.oneTimePrekey.agree, setUp.ephemeral));
  secrets.push(kemDecapsulate(setUp.kemCiphertext, keys.kemPrekey.seed));
  const prekeys: PublicPrekeys = {
    signedPrekey: { id: keys.signedPrekey.id, key: keys.signedPrekey.point },
    oneTimePrekey: keys.oneTimePrekey && { id: keys.oneTimePrekey.id, key: keys.oneTimePrekey.point },
    kemPrekey: { id: keys.kemPrekey.id, key: keys.kemPrekey.publicKey },
  };
  const own_: Party = { phone: own.phone, deviceId: own.deviceId, identity: own.identity };
  return derive(binding(peer, own_, prekeys, setUp), secrets);
}
