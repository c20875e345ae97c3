/**
 * P-256 over WebCrypto: ECDSA in the 64-byte r ‖ s form with low S, ECDH giving the
 * 32-byte x-coordinate, and the two public encodings Carrier uses (65-byte
 * uncompressed points below the account key, SPKI DER for account keys).
 *
 * Private keys are made and kept as non-extractable CryptoKeys; IndexedDB stores
 * the CryptoKey objects themselves, so no private scalar is ever visible to script.
 */
import { concat, equal, fromHex, toHex, type Bytes } from "./bytes";
import { sha256 } from "./symmetric";

const subtle = (): SubtleCrypto => globalThis.crypto.subtle;

/** The 26 bytes that turn a P-256 point into its SPKI DER (docs/PROTOCOL.md §7.1). */
export const P256_SPKI_PREFIX = fromHex("3059301306072a8648ce3d020106082a8648ce3d030107034200");
const CURVE_ORDER = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n;
const HALF_ORDER = CURVE_ORDER >> 1n;
const CURVE = { namedCurve: "P-256" } as const;

export type EcUse = "ECDSA" | "ECDH";

/** A device identity key: one secret, usable for signing and for key agreement (PROTOCOL.md §8.1). */
export interface DeviceKey {
  sign: CryptoKey;
  agree: CryptoKey;
  point: Bytes;
}

export interface SigningKey {
  sign: CryptoKey;
  point: Bytes;
}

export interface AgreementKey {
  agree: CryptoKey;
  point: Bytes;
}

export function checkPoint(point: Uint8Array): void {
  if (point.length !== 65 || point[0] !== 0x04) {
    throw new Error("a P-256 public key must be a 65-byte uncompressed point");
  }
}

export async function exportPoint(publicKey: CryptoKey): Promise<Bytes> {
  return new Uint8Array(await subtle().exportKey("raw", publicKey));
}

/** Imports a public point; WebCrypto refuses points that are not on the curve. */
export async function importPoint(point: Bytes, use: EcUse): Promise<CryptoKey> {
  checkPoint(point);
  const usages: KeyUsage[] = use === "ECDSA" ? ["verify"] : [];
  return subtle().importKey("raw", point, { name: use, ...CURVE }, true, usages);
}

export function spkiFromPoint(point: Uint8Array): Bytes {
  checkPoint(point);
  return concat(P256_SPKI_PREFIX, point);
}

/** The point inside a P-256 SPKI, or null if the bytes are not exactly one. */
export function pointFromSpki(spki: Uint8Array): Bytes | null {
  if (spki.length !== 91 || !equal(spki.subarray(0, 26), P256_SPKI_PREFIX)) return null;
  return spki.slice(26);
}

/** SHA-256 of the SPKI DER as 64 lowercase hex characters (PROTOCOL §1). */
export async function fingerprint(spki: Bytes): Promise<string> {
  return toHex(await sha256(spki));
}

export async function generateSigningKey(): Promise<SigningKey> {
  const pair = await subtle().generateKey({ name: "ECDSA", ...CURVE }, false, ["sign", "verify"]);
  return { sign: pair.privateKey, point: await exportPoint(pair.publicKey) };
}

export async function generateAgreementKey(): Promise<AgreementKey> {
  const pair = await subtle().generateKey({ name: "ECDH", ...CURVE }, false, ["deriveBits"]);
  return { agree: pair.privateKey, point: await exportPoint(pair.publicKey) };
}

/**
 * A device key: WebCrypto binds each CryptoKey to one algorithm, so the secret is
 * generated once, exported as PKCS#8 just long enough to import it twice
 * (non-extractable, once for ECDSA and once for ECDH), and the export is wiped.
 */
export async function generateDeviceKey(): Promise<DeviceKey> {
  const pair = await subtle().generateKey({ name: "ECDSA", ...CURVE }, true, ["sign", "verify"]);
  const pkcs8 = new Uint8Array(await subtle().exportKey("pkcs8", pair.privateKey));
  try {
    return await importDeviceKey(pkcs8, await exportPoint(pair.publicKey));
  } finally {
    pkcs8.fill(0);
  }
}

async function importDeviceKey(pkcs8: Bytes, point: Bytes): Promise<DeviceKey> {
  const sign = await subtle().importKey("pkcs8", pkcs8, { name: "ECDSA", ...CURVE }, false, ["sign"]);
  const agree = await subtle().importKey("pkcs8", pkcs8, { name: "ECDH", ...CURVE }, false, ["deriveBits"]);
  return { sign, agree, point };
}

/** PKCS#8 of a P-256 key with the scalar alone (RFC 5915 without the optional public key). */
const SCALAR_PKCS8_PREFIX = fromHex("3041020100301306072a8648ce3d020106082a8648ce3d030107042730250201010420");

/**
 * Imports a private key given as its raw scalar (test vectors, stored states of
 * other clients). WebCrypto computes the public point itself: the key is imported
 * once extractable to read the point, then again non-extractable for use.
 */
export async function importScalar(scalar: Bytes, use: EcUse): Promise<{ key: CryptoKey; point: Bytes }> {
  if (scalar.length !== 32) throw new Error("a P-256 scalar is 32 bytes");
  const pkcs8 = concat(SCALAR_PKCS8_PREFIX, scalar);
  try {
    const usages: KeyUsage[] = use === "ECDSA" ? ["sign"] : ["deriveBits"];
    const readable = await subtle().importKey("pkcs8", pkcs8, { name: use, ...CURVE }, true, usages);
    const jwk = await subtle().exportKey("jwk", readable);
    const point = concat(Uint8Array.of(4), fromBase64Url(jwk.x!), fromBase64Url(jwk.y!));
    const key = await subtle().importKey("pkcs8", pkcs8, { name: use, ...CURVE }, false, usages);
    return { key, point };
  } finally {
    pkcs8.fill(0);
  }
}

function fromBase64Url(text: string): Bytes {
  return Uint8Array.from(atob(text.replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0));
}

function readScalar(bytes: Uint8Array): bigint {
  return BigInt("0x" + (toHex(bytes) || "0"));
}

function writeScalar(n: bigint): Bytes {
  return fromHex(n.toString(16).padStart(64, "0"));
}

/** ECDSA-SHA256, r ‖ s, with s replaced by n − s when s > n/2 (PROTOCOL.md §8.2). */
export async function sign(key: CryptoKey, message: Bytes): Promise<Bytes> {
  const sig = new Uint8Array(await subtle().sign({ name: "ECDSA", hash: "SHA-256" }, key, message));
  return lowS(sig);
}

/** The low-S twin of a signature (identity if it is already low). */
export function lowS(signature: Uint8Array): Bytes {
  const s = readScalar(signature.subarray(32));
  const out = signature.slice() as Bytes;
  if (s > HALF_ORDER) out.set(writeScalar(CURVE_ORDER - s), 32);
  return out;
}

/** Verifies a 64-byte r ‖ s signature; high-S signatures are refused as malleated. */
export async function verify(publicKey: CryptoKey | Bytes, message: Bytes, signature: Uint8Array): Promise<boolean> {
  if (signature.length !== 64) return false;
  const s = readScalar(signature.subarray(32));
  if (s === 0n || s > HALF_ORDER) return false;
  const key = publicKey instanceof Uint8Array ? await importPoint(publicKey, "ECDSA") : publicKey;
  return subtle().verify({ name: "ECDSA", hash: "SHA-256" }, key, signature as Bytes, message);
}

/** ECDH: the 32-byte big-endian x-coordinate of d·Q, unhashed. */
export async function ecdh(privateKey: CryptoKey, peerPoint: Bytes): Promise<Bytes> {
  const peer = await importPoint(peerPoint, "ECDH");
  return new Uint8Array(await subtle().deriveBits({ name: "ECDH", public: peer }, privateKey, 256));
}
