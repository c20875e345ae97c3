/**
 * Sessions between freshly generated devices (no vectors needed): random order,
 * loss and replays; the bounds of the skipped-key store; and a session that goes
 * through IndexedDB (as a reload would) and carries on.
 */
import "fake-indexeddb/auto";
import { describe, expect, it } from "vitest";
import { randomBytes, toHex, type Bytes } from "../src/crypto/bytes";
import { generateAgreementKey, generateDeviceKey, type DeviceKey } from "../src/crypto/p256";
import { kemKeyPair } from "../src/crypto/mlkem";
import { parseEnvelope, verifyEnvelope } from "../src/protocol/envelope";
import type { Party } from "../src/protocol/pqxdh";
import { MAX_SKIP, receive } from "../src/protocol/ratchet";
import { acceptSession, initiateSession, openMessage, sealMessage, type SessionState } from "../src/protocol/session";
import { PrekeyKind, type PrekeyChoice } from "../src/protocol/statements";
import { Store } from "../src/storage/store";

interface Device {
  key: DeviceKey;
  party: Party;
}

async function device(phone: string, deviceId: number): Promise<Device> {
  const key = await generateDeviceKey();
  return { key, party: { phone, deviceId, identity: key.point } };
}

/** Alice's session to Bob, and Bob's answer to her first envelope. */
async function pair() {
  const alice = await device("+12025550101", 1);
  const bob = await device("+12025550102", 3);
  const spk = await generateAgreementKey();
  const opk = await generateAgreementKey();
  const kem = kemKeyPair();
  const prekey = (kind: PrekeyKind, id: number, key: Bytes) => ({ kind, id, key, createdAt: 0, signature: new Uint8Array(64) });
  const choice: PrekeyChoice = {
    device: { id: 3, point: bob.key.point, name: "phone" },
    signedPrekey: prekey(PrekeyKind.Signed, 1, spk.point),
    kemLastResort: prekey(PrekeyKind.KemLastResort, 2, kem.publicKey),
    oneTimePrekey: prekey(PrekeyKind.OneTime, 3, opk.point),
    kemPrekey: prekey(PrekeyKind.KemLastResort, 2, kem.publicKey),
  };
  const aliceSession = await initiateSession({ ...alice.party, agree: alice.key.agree }, bob.party, choice);
  const keys = { signedPrekey: { ...spk, id: 1 }, oneTimePrekey: { ...opk, id: 3 }, kemPrekey: { id: 2, ...kem } };
  return { alice, bob, aliceSession, keys };
}

const text = (t: string) => ({ sentAt: Date.now(), content: { type: "text" as const, text: t } });

describe("sessions between generated devices", () => {
  it("deliver every message once under random order and loss, and refuse replays", async () => {
    const { alice, bob, aliceSession, keys } = await pair();
    const sessions: Record<"alice" | "bob", SessionState | null> = { alice: aliceSession, bob: null };
    const inFlight: { to: "alice" | "bob"; envelope: Bytes; text: string }[] = [];
    const opened: string[] = [];
    const sent: string[] = [];
    let seed = 7;
    const rand = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;

    for (let step = 0; step < 120; step++) {
      const from = rand() < 0.5 || !sessions.bob ? "alice" : "bob";
      if (rand() < 0.55) {
        const t = `${from} ${step}`;
        const me = from === "alice" ? alice : bob;
        const sealed = await sealMessage(sessions[from]!, randomBytes(16), text(t), me.key.sign);
        sessions[from] = sealed.state;
        sent.push(t);
        if (rand() < 0.9) inFlight.push({ to: from === "alice" ? "bob" : "alice", envelope: sealed.envelope, text: t });
      } else if (inFlight.length) {
        const [m] = inFlight.splice(Math.floor(rand() * inFlight.length), 1);
        if (m.to === "alice" && !sessions.bob) continue;
        const envelope = parseEnvelope(m.envelope);
        const sender = m.to === "bob" ? alice : bob;
        expect(await verifyEnvelope(envelope, sender.party.identity)).toBe(true);
        if (m.to === "bob" && !sessions.bob) {
          sessions.bob = await acceptSession({ ...bob.party, agree: bob.key.agree }, alice.party, envelope, keys);
        }
        const result = await openMessage(sessions[m.to]!, envelope);
        expect(result.payload.content).toMatchObject({ text: m.text });
        sessions[m.to] = result.state;
        opened.push(m.text);
        await expect(openMessage(sessions[m.to]!, envelope)).rejects.toThrow();
      }
    }
    expect(new Set(opened).size).toBe(opened.length);
    expect(opened.length).toBeGreaterThan(20);
    expect(opened.every((t) => sent.includes(t))).toBe(true);
  });

  it("refuses to skip more than MAX_SKIP keys in one chain, changing nothing", async () => {
    const { alice, bob, aliceSession, keys } = await pair();
    const sealed = await sealMessage(aliceSession, randomBytes(16), text("hi"), alice.key.sign);
    const first = parseEnvelope(sealed.envelope);
    const bobSession = (await openMessage(await acceptSession({ ...bob.party, agree: bob.key.agree }, alice.party, first, keys), first)).state;
    const header = { ratchetKey: first.header.ratchetKey, pn: 0, n: bobSession.ratchet.nr + MAX_SKIP + 1 };
    await expect(receive(bobSession.ratchet, header, async () => "never")).rejects.toMatchObject({ code: "too_far_ahead" });
  });

  it("survives a trip through IndexedDB, non-extractable ratchet key included", async () => {
    const { alice, bob, aliceSession, keys } = await pair();
    let a = aliceSession;
    const first = await sealMessage(a, randomBytes(16), text("one"), alice.key.sign);
    a = first.state;
    const env = parseEnvelope(first.envelope);
    let b = (await openMessage(await acceptSession({ ...bob.party, agree: bob.key.agree }, alice.party, env, keys), env)).state;
    const reply = await sealMessage(b, randomBytes(16), text("two"), bob.key.sign);
    b = reply.state;

    const name = `carrier-session-${toHex(randomBytes(4))}`;
    const store = await Store.open(name);
    await store.saveSession({ peer: alice.party.phone, device: 1, id: toHex(b.sessionId), usedAt: Date.now(), state: b });
    store.close();
    const reopened = await Store.open(name);
    const loaded = (await reopened.sessions(alice.party.phone))[0].state as SessionState;
    expect(loaded.ratchet.dhs!.agree.extractable).toBe(false);

    a = (await openMessage(a, parseEnvelope(reply.envelope))).state;
    const third = await sealMessage(a, randomBytes(16), text("three"), alice.key.sign);
    const opened = await openMessage(loaded, parseEnvelope(third.envelope));
    expect(opened.payload.content).toMatchObject({ text: "three" });
  });
});
