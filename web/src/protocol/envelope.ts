/**
 * The v2 envelope (docs/PROTOCOL.md §14.1): one message to one device. Servers
 * read its clear header; the rest is between the two devices. Every envelope is
 * signed by the sending device's key over a label and everything before the
 * signature, and checked before anything secret is touched.
 */
import { concat, fromUtf8, Reader, utf8, Writer, type Bytes } from "../crypto/bytes";
import { checkPoint, sign, verify } from "../crypto/p256";
import { MLKEM_CIPHERTEXT_BYTES } from "../crypto/mlkem";
import type { SetUp } from "./pqxdh";
import type { RatchetHeader } from "./ratchet";

export const ENVELOPE_VERSION = 2;
export const MAX_ENVELOPE_BYTES = 67_584;
const SIGNATURE_LABEL = utf8("carrier-v2 envelope\0");

export enum EnvelopeKind {
  Prekey = 1,
  Message = 2,
}

export interface Address {
  phone: string;
  deviceId: number;
}

export interface Envelope {
  kind: EnvelopeKind;
  id: Bytes;
  sessionId: Bytes;
  sender: Address;
  recipient: Address;
  setUp: SetUp | null;
  header: RatchetHeader;
  ciphertext: Bytes;
  signature: Bytes;
  /** [0, X+77): AES-GCM's associated data after the session hash. */
  authenticated: Bytes;
  /** [0, X+77+C): what the signature covers, after the label. */
  signed: Bytes;
}

export class EnvelopeError extends Error {}

/** Everything up to and including C: the part the ciphertext is bound to. */
export function envelopeHead(e: Omit<Envelope, "ciphertext" | "signature" | "authenticated" | "signed" | "kind">, ciphertextLength: number): Bytes {
  const w = new Writer()
    .u8(ENVELOPE_VERSION)
    .u8(e.setUp ? EnvelopeKind.Prekey : EnvelopeKind.Message)
    .bytes(e.id)
    .bytes(e.sessionId)
    .prefixed(utf8(e.sender.phone), 1)
    .u32(e.sender.deviceId)
    .prefixed(utf8(e.recipient.phone), 1)
    .u32(e.recipient.deviceId);
  if (e.setUp) {
    w.u32(e.setUp.signedPrekeyId).u32(e.setUp.oneTimePrekeyId).u32(e.setUp.kemPrekeyId).bytes(e.setUp.ephemeral).bytes(e.setUp.kemCiphertext);
  }
  return w.bytes(e.header.ratchetKey).u32(e.header.pn).u32(e.header.n).u32(ciphertextLength).finish();
}

/** Appends the ciphertext and the device's signature to a head. */
export async function finishEnvelope(head: Bytes, ciphertext: Bytes, deviceKey: CryptoKey): Promise<Bytes> {
  const signed = concat(head, ciphertext);
  return concat(signed, await sign(deviceKey, concat(SIGNATURE_LABEL, signed)));
}

export function parseEnvelope(bytes: Bytes): Envelope {
  if (bytes.length > MAX_ENVELOPE_BYTES) throw new EnvelopeError("the envelope is too large");
  try {
    const r = new Reader(bytes);
    const version = r.u8();
    if (version === 1) throw new EnvelopeError("v1 envelopes are no longer accepted");
    if (version !== ENVELOPE_VERSION) throw new EnvelopeError(`unknown envelope version ${version}`);
    const kind = r.u8() as EnvelopeKind;
    if (kind !== EnvelopeKind.Prekey && kind !== EnvelopeKind.Message) throw new EnvelopeError("unknown envelope kind");
    const id = r.bytes(16);
    const sessionId = r.bytes(16);
    const sender = { phone: fromUtf8(r.prefixed(1)), deviceId: r.u32() };
    const recipient = { phone: fromUtf8(r.prefixed(1)), deviceId: r.u32() };
    if (sender.deviceId < 1 || recipient.deviceId < 1) throw new EnvelopeError("device ids start at 1");
    const setUp: SetUp | null =
      kind === EnvelopeKind.Prekey
        ? { signedPrekeyId: r.u32(), oneTimePrekeyId: r.u32(), kemPrekeyId: r.u32(), ephemeral: point(r), kemCiphertext: r.bytes(MLKEM_CIPHERTEXT_BYTES) }
        : null;
    const header = { ratchetKey: point(r), pn: r.u32(), n: r.u32() };
    const length = r.u32();
    const authenticated = bytes.slice(0, r.offset);
    const ciphertext = r.bytes(length);
    const signed = bytes.slice(0, r.offset);
    const signature = r.bytes(64);
    r.end();
    return { kind, id, sessionId, sender, recipient, setUp, header, ciphertext, signature, authenticated, signed };
  } catch (error) {
    if (error instanceof EnvelopeError) throw error;
    throw new EnvelopeError("the envelope is malformed");
  }
}

function point(r: Reader): Bytes {
  const p = r.bytes(65);
  checkPoint(p);
  return p;
}

/** The sender's signature, checked with the device key of its verified device list (low S). */
export function verifyEnvelope(e: Envelope, senderDevicePoint: Bytes): Promise<boolean> {
  return verify(senderDevicePoint, concat(SIGNATURE_LABEL, e.signed), e.signature);
}
