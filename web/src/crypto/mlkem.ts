/**
 * ML-KEM-768 (FIPS 203), which WebCrypto lacks, from @noble/post-quantum.
 * A decapsulation key is kept as its 64-byte seed d ‖ z (PROTOCOL.md §8.3).
 */
import { ml_kem768 } from "@noble/post-quantum/ml-kem.js";
import { randomBytes, type Bytes } from "./bytes";

export const MLKEM_PUBLIC_KEY_BYTES = 1184;
export const MLKEM_CIPHERTEXT_BYTES = 1088;

export interface KemKeyPair {
  seed: Bytes;
  publicKey: Bytes;
}

export function kemKeyPair(seed: Bytes = randomBytes(64)): KemKeyPair {
  if (seed.length !== 64) throw new Error("an ML-KEM-768 seed is 64 bytes");
  return { seed, publicKey: ml_kem768.keygen(seed).publicKey as Bytes };
}

/** Encapsulates to a public key; `m` is the 32 random bytes (given only by test vectors). */
export function kemEncapsulate(publicKey: Bytes, m: Bytes = randomBytes(32)): { ciphertext: Bytes; sharedSecret: Bytes } {
  if (publicKey.length !== MLKEM_PUBLIC_KEY_BYTES) throw new Error("an ML-KEM-768 public key is 1184 bytes");
  const { cipherText, sharedSecret } = ml_kem768.encapsulate(publicKey, m);
  return { ciphertext: cipherText as Bytes, sharedSecret: sharedSecret as Bytes };
}

export function kemDecapsulate(ciphertext: Bytes, seed: Bytes): Bytes {
  if (ciphertext.length !== MLKEM_CIPHERTEXT_BYTES) throw new Error("an ML-KEM-768 ciphertext is 1088 bytes");
  const { secretKey } = ml_kem768.keygen(seed);
  try {
    return ml_kem768.decapsulate(ciphertext, secretKey) as Bytes;
  } finally {
    secretKey.fill(0);
  }
}
