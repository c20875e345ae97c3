/**
 * Link codes (docs/PROTOCOL.md §16, §5.5): how a new device joins an
 * account with the code `carrier devices add` shows. The code never reaches the
 * server; it only sees the rendezvous id derived from it and two sealed messages
 * it can neither read nor alter.
 */
import { concat, Reader, randomBytes, utf8, Writer, type Bytes } from "../crypto/bytes";
import { sign, type DeviceKey } from "../crypto/p256";
import { aesGcmOpen, aesGcmSeal, hkdf } from "../crypto/symmetric";

const ALPHABET = "abcdefghijklmnopqrstuvwxyz234567";
const CODE_CHARS = 26;
const REQUEST_LABEL = utf8("carrier-v2 link request\0");
const RESPONSE_LABEL = utf8("carrier-v2 link response\0");
const NONCE_BYTES = 12;

export class LinkError extends Error {}

/** The 16 bytes behind a code as shown (case, spaces and dashes ignored; trailing bits must be zero). */
export function parseLinkCode(typed: string): Bytes {
  const chars = typed.replace(/[- ]/g, "").toLowerCase();
  if (chars.length !== CODE_CHARS) throw new LinkError("not a link code");
  let bits = 0n;
  for (let i = 0; i < CODE_CHARS; i++) {
    const v = ALPHABET.indexOf(chars[i]);
    if (v < 0) throw new LinkError("not a link code");
    if (i === CODE_CHARS - 1) {
      if (v & 0b11) throw new LinkError("not a link code");
      bits = (bits << 3n) | BigInt(v >> 2);
    } else {
      bits = (bits << 5n) | BigInt(v);
    }
  }
  const out = new Uint8Array(16);
  for (let i = 15; i >= 0; i--, bits >>= 8n) out[i] = Number(bits & 0xffn);
  return out;
}

export interface LinkKeys {
  rendezvous: Bytes;
  key: Bytes;
}

export async function linkKeys(code: Bytes): Promise<LinkKeys> {
  const salt = new Uint8Array(32);
  return {
    rendezvous: await hkdf(code, salt, utf8("carrier-v2 link rendezvous"), 16),
    key: await hkdf(code, salt, utf8("carrier-v2 link key"), 32),
  };
}

function aad(label: Bytes, keys: LinkKeys, phone: string): Bytes {
  return new Writer().bytes(label).bytes(keys.rendezvous).prefixed(utf8(phone), 1).finish();
}

/** The new device's request: its name and key, signed by that key, sealed under the code. */
export async function sealLinkRequest(keys: LinkKeys, phone: string, name: string, device: DeviceKey): Promise<Bytes> {
  const body = new Writer().prefixed(utf8(name), 1).bytes(device.point).finish();
  const signature = await sign(device.sign, concat(REQUEST_LABEL, keys.rendezvous, body));
  const nonce = randomBytes(NONCE_BYTES);
  return concat(nonce, await aesGcmSeal(keys.key, nonce, concat(body, signature), aad(REQUEST_LABEL, keys, phone)));
}

export interface LinkResponse {
  certificate: Bytes;
  list: Bytes;
  /** The account key's PKCS#8 DER, or null when it stays on the other device. */
  accountPkcs8: Bytes | null;
}

export async function openLinkResponse(keys: LinkKeys, phone: string, sealed: Bytes): Promise<LinkResponse> {
  if (sealed.length < NONCE_BYTES) throw new LinkError("the link answer is too short");
  let body: Bytes;
  try {
    body = await aesGcmOpen(keys.key, sealed.slice(0, NONCE_BYTES), sealed.slice(NONCE_BYTES), aad(RESPONSE_LABEL, keys, phone));
  } catch {
    throw new LinkError("the link answer does not open with this code");
  }
  try {
    const r = new Reader(body);
    const certificate = r.prefixed(2);
    const list = r.prefixed(2);
    const key = r.prefixed(2);
    r.end();
    return { certificate, list, accountPkcs8: key.length ? key : null };
  } finally {
    body.fill(0);
  }
}
