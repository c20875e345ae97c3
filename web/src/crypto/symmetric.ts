/**
 * Hashes, key derivation and the AEAD over WebCrypto (docs/PROTOCOL.md §8.3).
 * Raw key bytes are imported non-extractable for each use, so the only copy a
 * caller holds is its own and WebCrypto never hands one back.
 */
import type { Bytes } from "./bytes";

const subtle = (): SubtleCrypto => globalThis.crypto.subtle;

export async function sha256(data: Uint8Array<ArrayBuffer>): Promise<Bytes> {
  return new Uint8Array(await subtle().digest("SHA-256", data));
}

export async function sha512(data: Uint8Array<ArrayBuffer>): Promise<Bytes> {
  return new Uint8Array(await subtle().digest("SHA-512", data));
}

/** HKDF-SHA256 (RFC 5869) with output length in bytes. */
export async function hkdf(
  ikm: Uint8Array<ArrayBuffer>,
  salt: Uint8Array<ArrayBuffer>,
  info: Uint8Array<ArrayBuffer>,
  length: number,
): Promise<Bytes> {
  const key = await subtle().importKey("raw", ikm, "HKDF", false, ["deriveBits"]);
  const bits = await subtle().deriveBits({ name: "HKDF", hash: "SHA-256", salt, info }, key, length * 8);
  return new Uint8Array(bits);
}

export async function hmacSha256(key: Uint8Array<ArrayBuffer>, data: Uint8Array<ArrayBuffer>): Promise<Bytes> {
  const k = await subtle().importKey("raw", key, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return new Uint8Array(await subtle().sign("HMAC", k, data));
}

async function aesKey(key: Uint8Array<ArrayBuffer>, use: KeyUsage): Promise<CryptoKey> {
  if (key.length !== 32) throw new Error("AES-256-GCM needs a 32-byte key");
  return subtle().importKey("raw", key, "AES-GCM", false, [use]);
}

const gcm = (iv: Uint8Array<ArrayBuffer>, additionalData: Uint8Array<ArrayBuffer>): AesGcmParams => ({ name: "AES-GCM", iv, additionalData, tagLength: 128 });

/** AES-256-GCM; returns ciphertext ‖ 16-byte tag. */
export async function aesGcmSeal(
  key: Uint8Array<ArrayBuffer>,
  nonce: Uint8Array<ArrayBuffer>,
  plaintext: Uint8Array<ArrayBuffer>,
  aad: Uint8Array<ArrayBuffer>,
): Promise<Bytes> {
  return new Uint8Array(await subtle().encrypt(gcm(nonce, aad), await aesKey(key, "encrypt"), plaintext));
}

/** Opens ciphertext ‖ tag; throws when the tag does not verify. */
export async function aesGcmOpen(
  key: Uint8Array<ArrayBuffer>,
  nonce: Uint8Array<ArrayBuffer>,
  sealed: Uint8Array<ArrayBuffer>,
  aad: Uint8Array<ArrayBuffer>,
): Promise<Bytes> {
  return new Uint8Array(await subtle().decrypt(gcm(nonce, aad), await aesKey(key, "decrypt"), sealed));
}
