/**
 * The v1 vectors of docs/PROTOCOL.md §18, opened with this client's primitives:
 * the first proof that WebCrypto's P-256, HKDF, AES-GCM and RSA-PSS agree with the
 * Rust implementation byte for byte. (v2 refuses v1 envelopes on the wire; the
 * vectors remain the cheapest cross-implementation check of the primitives.)
 */
import { describe, expect, it } from "vitest";
import { concat, fromHex, fromUtf8, Reader, toHex, utf8, Writer, type Bytes } from "../src/crypto/bytes";
import { ecdh, fingerprint, importScalar, lowS, sign, spkiFromPoint, verify } from "../src/crypto/p256";
import { aesGcmOpen, aesGcmSeal, hkdf, sha256 } from "../src/crypto/symmetric";
import { importAccountKey, verifyAccountSignature } from "../src/crypto/account";
import { loadVector } from "./vectors";

const p256 = loadVector("envelope_p256.json");
const rsa = loadVector("envelope_rsa.json");
const hex = (s: string) => fromHex(s);

/** Splits a v1 envelope into the regions of version 1's layout (PROTOCOL.md §18.9 describes the file). */
function parseV1(envelope: Bytes) {
  const r = new Reader(envelope);
  const [version, kem, sig, content] = [r.u8(), r.u8(), r.u8(), r.u8()];
  const id = r.bytes(16);
  const counter = r.u64();
  const sentAt = r.u64();
  const sender = fromUtf8(r.prefixed(1));
  const recipient = fromUtf8(r.prefixed(1));
  const keyBlock = r.prefixed(2);
  const aadEnd = r.offset;
  const nonce = r.bytes(12);
  const ciphertext = r.prefixed(4);
  const signedEnd = r.offset;
  const signature = r.prefixed(2);
  r.end();
  return {
    version, kem, sig, content, id, counter, sentAt, sender, recipient, keyBlock, nonce, ciphertext, signature,
    aad: envelope.slice(0, aadEnd),
    signed: envelope.slice(0, signedEnd),
  };
}

describe("v1 P-256 envelope (PROTOCOL.md §18.9)", () => {
  const inputs = p256.inputs;
  const out = p256.outputs;
  const env = parseV1(hex(out.envelope));

  it("parses into the documented header", () => {
    expect([env.version, env.kem, env.sig, env.content]).toEqual([1, 1, 1, 1]);
    expect(toHex(env.id)).toBe(inputs.id);
    expect(env.counter).toBe(BigInt(inputs.counter));
    expect(env.sentAt).toBe(BigInt(inputs.sent_at_ms));
    expect([env.sender, env.recipient]).toEqual([inputs.sender_phone, inputs.recipient_phone]);
    expect(toHex(env.aad)).toBe(out.aad);
  });

  it("derives the same SPKI and fingerprint from the sender's point", async () => {
    const spki = spkiFromPoint(hex(out.sender_point));
    expect(toHex(spki)).toBe(out.sender_spki_der);
    expect(await fingerprint(spki)).toBe(out.sender_fingerprint);
  });

  it("agrees on the ECDH secret from both sides", async () => {
    const recipient = await importScalar(hex(inputs.recipient_scalar), "ECDH");
    expect(toHex(recipient.point)).toBe(out.recipient_point);
    const ephemeral = await importScalar(hex(inputs.ephemeral_scalar), "ECDH");
    expect(toHex(await ecdh(recipient.key, env.keyBlock))).toBe(out.ecdh_shared_x);
    expect(toHex(await ecdh(ephemeral.key, hex(out.recipient_point)))).toBe(out.ecdh_shared_x);
  });

  it("derives the message key with HKDF and opens the text", async () => {
    const salt = concat(utf8("carrier-v1"), hex(out.ephemeral_point), hex(out.recipient_point));
    const key = await hkdf(hex(out.ecdh_shared_x), salt, utf8("carrier-v1 message key"), 32);
    expect(toHex(key)).toBe(out.aes_key);
    const plain = await aesGcmOpen(key, env.nonce, env.ciphertext, env.aad);
    expect(fromUtf8(plain)).toBe(inputs.text);
  });

  it("seals to the same ciphertext and tag", async () => {
    const sealed = await aesGcmSeal(hex(out.aes_key), hex(inputs.nonce), utf8(inputs.text), env.aad);
    expect(toHex(sealed)).toBe(out.ciphertext_and_tag);
  });

  it("refuses a ciphertext with one bit flipped", async () => {
    const bad = env.ciphertext.slice();
    bad[0] ^= 1;
    await expect(aesGcmOpen(hex(out.aes_key), env.nonce, bad, env.aad)).rejects.toThrow();
  });

  it("verifies the sender's signature over the signed region", async () => {
    expect(toHex(await sha256(env.signed))).toBe(out.signed_sha256);
    // v1 signers do not normalise S; this client verifies only low S, so it checks the low twin.
    expect(await verify(hex(out.sender_point), env.signed, lowS(env.signature))).toBe(true);
    const tampered = env.signed.slice();
    tampered[4] ^= 1;
    expect(await verify(hex(out.sender_point), tampered, lowS(env.signature))).toBe(false);
  });

  it("signs with the sender's scalar so that the signature verifies", async () => {
    const { key, point } = await importScalar(hex(inputs.sender_scalar), "ECDSA");
    expect(toHex(point)).toBe(out.sender_point);
    const ours = await sign(key, env.signed);
    expect(ours.length).toBe(64);
    expect(await verify(hex(out.sender_point), env.signed, ours)).toBe(true);
  });
});

describe("v1 login transcript (PROTOCOL.md §9.1, §18.9)", () => {
  const { inputs, outputs } = p256.auth_transcript;

  it("is built byte for byte", async () => {
    const transcript = new Writer()
      .bytes(utf8(`carrier-v1 ${inputs.purpose}\0`))
      .bytes(hex(inputs.exporter))
      .bytes(hex(inputs.nonce))
      .prefixed(utf8(inputs.phone), 1)
      .prefixed(hex(outputs.spki_der), 2)
      .finish();
    expect(transcript.length).toBe(187);
    expect(toHex(transcript)).toBe(outputs.transcript);
    expect(toHex(await sha256(transcript))).toBe("211db9b3341fbef5dff9d3ccdc5d398f2dbf8de75f1c0a61a13b7d8e0b54e40a");
  });

  it("accepts the documented low-S signature and refuses its high-S twin", async () => {
    const point = hex(outputs.spki_der).slice(26);
    const transcript = hex(outputs.transcript);
    const low = hex(outputs.signature);
    expect(toHex(lowS(low))).toBe(outputs.signature);
    expect(await verify(point, transcript, low)).toBe(true);
    expect(await verify(point, transcript, highS(low))).toBe(false);
  });
});

/** The (r, n - s) twin of a low-S signature: what a forger can make from it. */
function highS(signature: Uint8Array): Bytes {
  const order = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n;
  const s = BigInt("0x" + toHex(signature.subarray(32)));
  const twin = signature.slice() as Bytes;
  twin.set(fromHex((order - s).toString(16).padStart(64, "0")), 32);
  return twin;
}

describe("v1 RSA envelope (PROTOCOL.md §18.9)", () => {

  it("verifies the RSA-PSS signature with a 32-byte salt", async () => {
    const env = parseV1(hex(rsa.envelope));
    expect([env.kem, env.sig]).toEqual([2, 2]);
    const account = await importAccountKey(hex(rsa.rsa_spki_der));
    expect(account.type).toBe("rsa");
    expect(await fingerprint(account.spki)).toBe("a287e0dbc03e4547ef10286a1172e36869acd7e1323cd51c53761c00548a9c06");
    expect(await verifyAccountSignature(account, env.signed, env.signature)).toBe(true);
    const tampered = env.signed.slice();
    tampered[30] ^= 1;
    expect(await verifyAccountSignature(account, tampered, env.signature)).toBe(false);
  });
});
