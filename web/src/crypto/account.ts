/**
 * Account keys: P-256 or RSA (docs/PROTOCOL.md §7.1), always carried as SPKI DER.
 * In v2 they only sign; contacts verify with the key they pinned. A key is taken
 * only in its canonical DER, so each key has exactly one fingerprint.
 */
import { concat, equal, type Bytes } from "./bytes";
import { pointFromSpki, sign as signP256, spkiFromPoint, verify as verifyP256 } from "./p256";

const subtle = (): SubtleCrypto => globalThis.crypto.subtle;

export type KeyType = "p256" | "rsa";

export interface AccountPublicKey {
  type: KeyType;
  spki: Bytes;
  key: CryptoKey;
}

const RSA_PSS = { name: "RSA-PSS", hash: "SHA-256" } as const;

/** Parses an account SPKI; throws with a reason when it is not a key Carrier accepts. */
export async function importAccountKey(spki: Bytes): Promise<AccountPublicKey> {
  const point = pointFromSpki(spki);
  if (point) {
    const key = await subtle().importKey("raw", point, { name: "ECDSA", namedCurve: "P-256" }, true, ["verify"]);
    return { type: "p256", spki, key };
  }
  const key = await subtle().importKey("spki", spki, RSA_PSS, true, ["verify"]);
  const algorithm = key.algorithm as RsaHashedKeyAlgorithm;
  const exponent = Array.from(algorithm.publicExponent).join(",");
  if (algorithm.modulusLength < 2048 || algorithm.modulusLength > 4096 || exponent !== "1,0,1") {
    throw new Error("RSA account keys must have a 2048–4096-bit modulus and exponent 65537");
  }
  const canonical = new Uint8Array(await subtle().exportKey("spki", key));
  if (!equal(canonical, spki)) throw new Error("the key is not in canonical DER");
  return { type: "rsa", spki, key };
}

/** RSASSA-PSS with SHA-256, MGF1-SHA-256 and a 32-byte salt. */
export async function verifyRsaPss(key: CryptoKey, message: Bytes, signature: Bytes): Promise<boolean> {
  return subtle().verify({ name: "RSA-PSS", saltLength: 32 }, key, signature, message);
}

/** Verifies a statement signed by an account key, in that key's algorithm (PROTOCOL.md §8.2). */
export async function verifyAccountSignature(account: AccountPublicKey, message: Bytes, signature: Bytes): Promise<boolean> {
  return account.type === "p256"
    ? verifyP256(account.key, message, signature)
    : verifyRsaPss(account.key, message, signature);
}

/** The account key's private half as this browser holds it: a non-extractable CryptoKey. */
export interface AccountSigner {
  type: KeyType;
  sign: CryptoKey;
  spki: Bytes;
}

/** Signs a statement with the account key, in that key's algorithm (ECDSA low S, or RSA-PSS). */
export async function signAsAccount(key: { type: KeyType; sign: CryptoKey }, message: Bytes): Promise<Bytes> {
  if (key.type === "p256") return signP256(key.sign, message);
  return new Uint8Array(await subtle().sign({ name: "RSA-PSS", saltLength: 32 }, key.sign, message));
}

/**
 * Takes the account key another device handed over (PKCS#8 DER, §10.3): imported
 * once extractable only to learn its public half, then again non-extractable, the
 * one kept.
 */
export async function importAccountPkcs8(pkcs8: Bytes): Promise<AccountSigner> {
  try {
    const ec = await subtle().importKey("pkcs8", pkcs8, { name: "ECDSA", namedCurve: "P-256" }, true, ["sign"]);
    const jwk = await subtle().exportKey("jwk", ec);
    const point = concat(Uint8Array.of(4), fromBase64Url(jwk.x!), fromBase64Url(jwk.y!));
    const sign = await subtle().importKey("pkcs8", pkcs8, { name: "ECDSA", namedCurve: "P-256" }, false, ["sign"]);
    return { type: "p256", sign, spki: spkiFromPoint(point) };
  } catch {
    const rsa = await subtle().importKey("pkcs8", pkcs8, RSA_PSS, true, ["sign"]);
    const jwk = await subtle().exportKey("jwk", rsa);
    const publicKey = await subtle().importKey("jwk", { kty: "RSA", n: jwk.n, e: jwk.e, ext: true }, RSA_PSS, true, ["verify"]);
    const spki = new Uint8Array(await subtle().exportKey("spki", publicKey));
    const sign = await subtle().importKey("pkcs8", pkcs8, RSA_PSS, false, ["sign"]);
    return { type: "rsa", sign, spki };
  }
}

function fromBase64Url(text: string): Bytes {
  return Uint8Array.from(atob(text.replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0));
}
