/**
 * The first messages of a session (PROTOCOL.md §18.4): the vector's envelopes are
 * rebuilt byte for byte up to their signature (WebCrypto's ECDSA nonces are random,
 * so signatures are verified instead) and opened in the vector's order: m1, m3
 * (skipping m2), r1 (a DH step), m4 (another), then m2 from the skipped keys.
 */
import { describe, expect, it } from "vitest";
import { fromHex, toHex, type Bytes } from "../src/crypto/bytes";
import { importScalar, type AgreementKey } from "../src/crypto/p256";
import { parseEnvelope, verifyEnvelope } from "../src/protocol/envelope";
import { messageEncryption, RatchetError } from "../src/protocol/ratchet";
import { acceptSession, initiateSession, openMessage, sealMessage, type SessionState } from "../src/protocol/session";
import { hasVector, loadVector } from "./vectors";
import { pqxdhFixture } from "./v2_fixture";

const FILE = "v2_session.json";
const hex = (s: string): Bytes => fromHex(s);

describe.skipIf(!hasVector(FILE))("a v2 session (PROTOCOL.md §18.4)", () => {
  const vector = hasVector(FILE) ? loadVector(FILE) : { inputs: { messages: [] }, outputs: {} };
  const { inputs: i, outputs: o } = vector;
  const message = (name: string) => i.messages.find((m: { name: string }) => m.name === name);
  const ratchetKey = async (name: string): Promise<AgreementKey> => {
    const { key, point } = await importScalar(hex(i.ratchet_scalars[name]), "ECDH");
    expect(toHex(point)).toBe(o.ratchet_points[name]);
    return { agree: key, point };
  };
  const payload = (name: string) => ({ sentAt: message(name).sent_at_ms, content: { type: "text" as const, text: message(name).text } });
  const withoutSignature = (hexEnvelope: string) => hexEnvelope.slice(0, hexEnvelope.length - 128);

  it("derives each message's AES key and nonce from its message key", async () => {
    for (const name of ["m1", "m2", "m3", "r1", "m4"]) {
      const { key, nonce } = await messageEncryption(hex(o[name].message_key));
      expect([toHex(key), toHex(nonce)]).toEqual([o[name].aes_key, o[name].nonce]);
    }
  });

  it("seals and opens every message as the vector says", async () => {
    const f = await pqxdhFixture(i);
    const aliceSign = (await importScalar(hex(i.initiator_device_scalar), "ECDSA")).key;
    const bobSign = (await importScalar(hex(i.device_scalar), "ECDSA")).key;
    const ephemeral = await importScalar(hex(i.ephemeral_scalar), "ECDH");
    let alice: SessionState = await initiateSession({ ...f.initiator, agree: f.initiatorDevice.key }, f.responder, f.withOneTime, {
      ephemeral: { agree: ephemeral.key, point: ephemeral.point },
      kemRandomness: hex(i.kem_randomness),
    });

    const seal = async (from: "alice" | "bob", name: string, ratchet?: string) => {
      const state = from === "alice" ? alice : bob!;
      const sealed = await sealMessage(state, hex(message(name).id), payload(name), from === "alice" ? aliceSign : bobSign, ratchet ? () => ratchetKey(ratchet) : undefined);
      expect(withoutSignature(toHex(sealed.envelope))).toBe(withoutSignature(o[name].envelope));
      if (from === "alice") alice = sealed.state;
      else bob = sealed.state;
    };
    /** Opens the vector's own envelope (with its RFC 6979 signature) after checking that signature. */
    const open = async (to: "alice" | "bob", name: string) => {
      const envelope = parseEnvelope(hex(o[name].envelope));
      const senderPoint = to === "bob" ? f.initiator.identity : f.responder.identity;
      expect(await verifyEnvelope(envelope, senderPoint)).toBe(true);
      const state = to === "alice" ? alice : bob!;
      const opened = await openMessage(state, envelope);
      expect(opened.payload).toEqual(payload(name));
      if (to === "alice") alice = opened.state;
      else bob = opened.state;
    };

    await seal("alice", "m1", "m1");
    expect(toHex(alice.ratchet.root)).toBe(o.root_keys[0]);
    await seal("alice", "m2");
    await seal("alice", "m3");

    const first = parseEnvelope(hex(o.m1.envelope));
    let bob: SessionState | undefined = await acceptSession({ ...f.responder, agree: f.responderDevice.key }, f.initiator, first, f.responderKeys(true));
    await open("bob", "m1");
    await open("bob", "m3");
    expect(bob!.ratchet.skipped.map((k) => k.n)).toEqual([1]);

    await seal("bob", "r1", "r1");
    expect(toHex(bob!.ratchet.root)).toBe(o.root_keys[1]);
    await open("alice", "r1");
    expect(alice.pending).toBeNull();
    await seal("alice", "m4", "m4");
    expect(toHex(alice.ratchet.root)).toBe(o.root_keys[2]);
    expect(parseEnvelope(hex(o.m4.envelope)).header).toMatchObject({ pn: 3, n: 0 });

    await open("bob", "m4");
    await open("bob", "m2");
    expect(bob!.ratchet.skipped).toEqual([]);

    // Replays fail by construction and leave the state as it was.
    const before = bob!;
    for (const name of ["m2", "m4"]) {
      await expect(openMessage(before, parseEnvelope(hex(o[name].envelope)))).rejects.toBeInstanceOf(Error);
    }
    await expect(openMessage(before, parseEnvelope(hex(o.m4.envelope)))).rejects.toMatchObject({ code: "replay" } satisfies Partial<RatchetError>);
    expect(bob).toBe(before);
  });

  it("refuses an envelope whose signature does not verify, or was made by another device", async () => {
    const f = await pqxdhFixture(i);
    const bytes = hex(o.r1.envelope);
    const envelope = parseEnvelope(bytes);
    expect(await verifyEnvelope(envelope, f.responder.identity)).toBe(true);
    expect(await verifyEnvelope(envelope, f.initiator.identity)).toBe(false);
    bytes[200] ^= 1;
    expect(await verifyEnvelope(parseEnvelope(bytes), f.responder.identity)).toBe(false);
  });

  it("refuses v1 envelopes with a clear reason", () => {
    const v1 = hex(loadVector("envelope_p256.json").outputs.envelope);
    expect(() => parseEnvelope(v1)).toThrow(/v1 envelopes are no longer accepted/);
  });
});
