/**
 * Account keys: P-256 or RSA (docs/PROTOCOL.md §7.1), always carried as SPKI DER.
 * In v2 they only sign; contacts verify with the key they pinned. A key is taken
 * only in its canonical DER, so each key has exactly one fingerprint.
 */
import { equal, type Bytes } from "./bytes";
import { pointFromSpki, verify as verifyP256 } from "./p256";

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
