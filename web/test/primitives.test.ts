/** Known answers and refusals for the primitive layer (src/crypto/). */
import { describe, expect, it } from "vitest";
import { fromBase64, fromHex, toBase64, toHex, utf8, Writer, Reader } from "../src/crypto/bytes";
import { ecdh, generateDeviceKey, generateSigningKey, importPoint, lowS, sign, verify } from "../src/crypto/p256";
import { hkdf, hmacSha256, sha256 } from "../src/crypto/symmetric";
import { kemDecapsulate, kemEncapsulate, kemKeyPair } from "../src/crypto/mlkem";

const HALF_ORDER = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n >> 1n;
const sOf = (sig: Uint8Array) => BigInt("0x" + toHex(sig.subarray(32)));

describe("ECDSA P-256", () => {
  it("always signs with low S", async () => {
    const key = await generateSigningKey();
    const message = utf8("carrier");
    // Without normalisation half of all signatures have high S: 32 in a row would all be low 1 time in 2^32.
    for (let i = 0; i < 32; i++) {
      const sig = await sign(key.sign, message);
      expect(sOf(sig) <= HALF_ORDER).toBe(true);
      expect(await verify(key.point, message, sig)).toBe(true);
    }
  });

  it("refuses the high-S twin of a valid signature", async () => {
    const key = await generateSigningKey();
    const message = utf8("malleable?");
    const sig = await sign(key.sign, message);
    const high = sig.slice();
    const n = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n;
    high.set(fromHex((n - sOf(sig)).toString(16).padStart(64, "0")), 32);
    expect(await verify(key.point, message, high)).toBe(false);
    expect(toHex(lowS(high))).toBe(toHex(sig));
  });

  it("refuses wrong lengths, zero S and other messages", async () => {
    const key = await generateSigningKey();
    const sig = await sign(key.sign, utf8("a"));
    expect(await verify(key.point, utf8("b"), sig)).toBe(false);
    expect(await verify(key.point, utf8("a"), sig.subarray(0, 63))).toBe(false);
    const zeroS = sig.slice();
    zeroS.fill(0, 32);
    expect(await verify(key.point, utf8("a"), zeroS)).toBe(false);
  });

  it("refuses compressed, short and off-curve points", async () => {
    const key = await generateSigningKey();
    const compressed = new Uint8Array(33);
    compressed.set(key.point.subarray(0, 33));
    compressed[0] = 2 + (key.point[64] & 1);
    await expect(importPoint(compressed, "ECDSA")).rejects.toThrow(/65-byte/);
    const offCurve = key.point.slice();
    offCurve[64] ^= 1;
    await expect(importPoint(offCurve, "ECDH")).rejects.toThrow();
  });

  it("keeps private keys non-extractable", async () => {
    const device = await generateDeviceKey();
    for (const key of [device.sign, device.agree]) {
      expect(key.extractable).toBe(false);
      await expect(crypto.subtle.exportKey("pkcs8", key)).rejects.toThrow();
    }
  });
});

describe("device keys", () => {
  it("sign and agree with the same secret", async () => {
    const a = await generateDeviceKey();
    const b = await generateDeviceKey();
    const ab = await ecdh(a.agree, b.point);
    expect(ab.length).toBe(32);
    expect(toHex(await ecdh(b.agree, a.point))).toBe(toHex(ab));
    expect(await verify(a.point, utf8("x"), await sign(a.sign, utf8("x")))).toBe(true);
  });
});

describe("HKDF, HMAC, SHA-256", () => {
  it("HKDF-SHA256 matches RFC 5869 test case 1", async () => {
    const okm = await hkdf(fromHex("0b".repeat(22)), fromHex("000102030405060708090a0b0c"), fromHex("f0f1f2f3f4f5f6f7f8f9"), 42);
    expect(toHex(okm)).toBe("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865");
  });

  it("HMAC-SHA256 matches RFC 4231 test case 2", async () => {
    const mac = await hmacSha256(utf8("Jefe"), utf8("what do ya want for nothing?"));
    expect(toHex(mac)).toBe("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  });

  it("SHA-256 of 'abc'", async () => {
    expect(toHex(await sha256(utf8("abc")))).toBe("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  });
});

describe("ML-KEM-768", () => {
  // Known answer computed with an independent implementation (kyber-py 1.2.0):
  // seed d = 00..1f, z = 20..3f; encapsulation randomness m = 42 × 32.
  const seed = Uint8Array.from({ length: 64 }, (_, i) => i);
  const m = new Uint8Array(32).fill(0x42);

  it("matches the known answer for key generation and encapsulation", async () => {
    const pair = kemKeyPair(seed);
    expect(pair.publicKey.length).toBe(1184);
    expect(toHex(await sha256(pair.publicKey))).toBe("0b7934c83125c788995e2ba6bd761e33046b3e40571be53e023309a29f398cc9");
    const { ciphertext, sharedSecret } = kemEncapsulate(pair.publicKey, m);
    expect(ciphertext.length).toBe(1088);
    expect(toHex(await sha256(ciphertext))).toBe("9c7b2f8d05c70575ec03ed8f93b7bb298e1506b97e54e5e885748965b1466f1c");
    expect(toHex(sharedSecret)).toBe("b83e7f23b33f909715c7a50b0d4b1f6684d53e1f4b9056f803b29f058ccb5566");
    expect(toHex(kemDecapsulate(ciphertext, seed))).toBe(toHex(sharedSecret));
  });

  it("gives a different secret for a damaged ciphertext (implicit rejection)", () => {
    const pair = kemKeyPair();
    const { ciphertext, sharedSecret } = kemEncapsulate(pair.publicKey);
    ciphertext[0] ^= 1;
    expect(toHex(kemDecapsulate(ciphertext, pair.seed))).not.toBe(toHex(sharedSecret));
  });
});

describe("byte encodings", () => {
  it("base64 round-trips every padding length", () => {
    for (let n = 0; n < 7; n++) {
      const bytes = Uint8Array.from({ length: n }, (_, i) => 250 - i * 37);
      expect(toHex(fromBase64(toBase64(bytes)))).toBe(toHex(bytes));
      expect(toBase64(bytes)).toBe(Buffer.from(bytes).toString("base64"));
    }
  });

  it("base64 refuses what the server refuses", () => {
    for (const bad of ["AQ", "AQ==\n", "-_8=", "AR==", "A Q==", "AQ=A"]) {
      expect(() => fromBase64(bad), bad).toThrow();
    }
  });

  it("writes and reads big-endian layouts", () => {
    const bytes = new Writer().u8(1).u16(0x0203).u32(0x04050607).u64(0x08090a0b0c0d0e0fn).prefixed(utf8("+1"), 1).finish();
    expect(toHex(bytes)).toBe("0102030405060708090a0b0c0d0e0f022b31");
    const r = new Reader(bytes);
    expect([r.u8(), r.u16(), r.u32(), r.u64()]).toEqual([1, 0x0203, 0x04050607, 0x08090a0b0c0d0e0fn]);
    expect(toHex(r.prefixed(1))).toBe("2b31");
    r.end();
    expect(() => new Writer().u8(256)).toThrow();
    expect(() => new Reader(bytes).bytes(99)).toThrow(/truncated/);
  });
});
