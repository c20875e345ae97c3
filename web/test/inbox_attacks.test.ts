/**
 * Receiving under attack: a replayed first message (PROTOCOL §10.4, last row;
 * §5.4) is refused by its base key even when its session is gone and whatever
 * its id; forged and tampered envelopes change no state; a tab closed between
 * opening and acknowledging loses nothing and shows nothing twice.
 */
import "fake-indexeddb/auto";
import { describe, expect, it } from "vitest";
import { fromBase64, randomBytes, toBase64, toHex } from "../src/crypto/bytes";
import { generateDeviceKey } from "../src/crypto/p256";
import type { Context } from "../src/core/v2/context";
import { drainQueue, receive, shownTime, wellFormedDelivery } from "../src/core/v2/inbox";
import { baseKeyDigest, maintainPrekeys, MAX_SEEN_BASE_KEYS, responderPrekeys, SetUpRefused } from "../src/core/v2/prekeys";
import { initiateSession, sealMessage, type SessionState } from "../src/protocol/session";
import { parsePrekey, PrekeyKind, type PrekeyChoice } from "../src/protocol/statements";
import { Store } from "../src/storage/store";
import type { Frame } from "../src/transport/connection";

const ALICE = "+12025550101";
const BOB = "+12025550102";

/** Bob's device with published prekeys, and Alice's device pinned in his contacts. */
async function bobAndAlice(name: string) {
  const store = await Store.open(name);
  const bob = await generateDeviceKey();
  const alice = await generateDeviceKey();
  const published: Frame[] = [];
  const warnings: string[] = [];
  const ctx: Context = {
    store,
    request: async (type, fields = {}) => {
      // The server vouches for a device list that does not verify under Alice's pinned key.
      if (type === "lookup") return { type: "user", phone: ALICE, public_key: toBase64(new Uint8Array(91)), device_list: toBase64(randomBytes(120)), bundles: [] };
      if (type !== "publish_prekeys") throw new Error(`unexpected request ${type}`);
      published.push(fields);
      return { type: "prekeys_published", one_time: 100, kem_one_time: 40 };
    },
    emit: (event) => void (event.type === "warning" && warnings.push(event.text)),
    me: { phone: BOB, deviceId: 1, sign: bob.sign, agree: bob.agree, point: bob.point, accountSpki: new Uint8Array(91), accountType: "p256" },
  };
  await maintainPrekeys(ctx);
  await store.saveContact({ phone: ALICE, spki: new Uint8Array(91), fingerprint: "00", listVersion: 1, devices: [{ id: 2, name: "laptop", point: alice.point }] });
  const prekeys = published.flatMap((f) => (f.prekeys as string[]).map((p) => parsePrekey(fromBase64(p))));
  const signedPrekey = prekeys.find((p) => p.kind === PrekeyKind.Signed)!;
  const kemLastResort = prekeys.find((p) => p.kind === PrekeyKind.KemLastResort)!;
  // The server's one-time pools are empty: the last-resort set-up of §5.5.
  const choice: PrekeyChoice = { device: { id: 1, point: bob.point, name: "browser" }, signedPrekey, kemLastResort, oneTimePrekey: null, kemPrekey: kemLastResort };
  const start = await initiateSession({ phone: ALICE, deviceId: 2, identity: alice.point, agree: alice.agree }, { phone: BOB, deviceId: 1, identity: bob.point }, choice);
  const seal = async (state: SessionState, text: string, signKey = alice.sign, sentAt = Date.now()) => {
    const id = randomBytes(16);
    const sealed = await sealMessage(state, id, { sentAt, content: { type: "text", text } }, signKey);
    return { frame: { type: "message", id: toHex(id), from: ALICE, device: 2, envelope: toBase64(sealed.envelope) }, state: sealed.state };
  };
  return { ctx, store, start, seal, signedPrekey, warnings };
}

describe("set-ups without a one-time prekey", () => {
  it("are remembered by base key, so a replayed set-up opens nothing even after its session is gone", async () => {
    const { ctx, store, start, seal, signedPrekey } = await bobAndAlice("replay-1");
    const first = await seal(start, "hello");
    expect(await receive(ctx, first.frame)).toMatchObject({ verdict: "ack" });
    expect((await store.history(ALICE)).map((m) => m.text)).toEqual(["hello"]);
    const spk = await store.key(`prekey:${signedPrekey.id}`);
    expect(spk?.seenBaseKeys).toEqual([await baseKeyDigest(start.pending!.ephemeral)]);

    // The session is dropped (as the least recently used one is), then the same
    // set-up comes again under a new message id: its base key gives it away.
    await store.deleteSessions(ALICE);
    const again = await seal(start, "hello again");
    expect(await receive(ctx, again.frame)).toMatchObject({ verdict: "ack", setUp: false });
    expect((await store.history(ALICE)).map((m) => m.text)).toEqual(["hello"]);
    expect(await store.sessions(ALICE)).toHaveLength(0);
    expect((await store.key(`prekey:${signedPrekey.id}`))?.seenBaseKeys).toHaveLength(1);
    await expect(responderPrekeys(ctx, start.pending!)).rejects.toMatchObject({ code: "replay" });
    store.close();
  });

  it("refuses a replay of the first envelope byte for byte with its session still there, changing no state", async () => {
    const { ctx, store, start, seal } = await bobAndAlice("replay-2");
    const first = await seal(start, "hello");
    await receive(ctx, first.frame);
    const before = await store.sessions(ALICE);
    // Replayed under another delivery id the envelope's own id no longer matches: refused at once.
    expect(await receive(ctx, { ...first.frame, id: toHex(randomBytes(16)) })).toMatchObject({ verdict: "ack" });
    // Replayed as it was: a duplicate.
    expect(await receive(ctx, first.frame)).toMatchObject({ verdict: "ack", setUp: false });
    expect(await store.sessions(ALICE)).toEqual(before);
    expect(await store.history(ALICE)).toHaveLength(1);
    store.close();
  });

  it("are refused once a signed prekey has remembered its maximum, storing nothing", async () => {
    const { ctx, store, start, seal, signedPrekey } = await bobAndAlice("replay-3");
    const name = `prekey:${signedPrekey.id}`;
    const full = Array.from({ length: MAX_SEEN_BASE_KEYS }, (_, i) => i.toString(16).padStart(64, "0"));
    await store.saveKeys([{ ...(await store.key(name))!, seenBaseKeys: full }]);
    const refused = responderPrekeys(ctx, start.pending!);
    await expect(refused).rejects.toBeInstanceOf(SetUpRefused);
    await expect(refused).rejects.toMatchObject({ code: "exhausted" });
    expect(await receive(ctx, (await seal(start, "hello")).frame)).toMatchObject({ verdict: "ack" });
    expect(await store.history(ALICE)).toHaveLength(0);
    expect(await store.sessions(ALICE)).toHaveLength(0);
    store.close();
  });
});

describe("forged and tampered envelopes", () => {
  it("open nothing and change no session state; the user is warned; the real next message opens", async () => {
    const { ctx, store, start, seal, warnings } = await bobAndAlice("forged-1");
    const first = await seal(start, "hello");
    await receive(ctx, first.frame);
    const before = await store.sessions(ALICE);

    // Signed by a key that is not Alice's device: the fresh device list the server offers does not verify either.
    const mallory = await generateDeviceKey();
    const forged = await seal(first.state, "send me your password", mallory.sign);
    expect(await receive(ctx, forged.frame)).toMatchObject({ verdict: "ack", setUp: false });
    // Alice's real envelope with one ciphertext byte flipped.
    const real = await seal(first.state, "the real one");
    const bytes = fromBase64(real.frame.envelope);
    bytes[bytes.length - 70] ^= 1;
    expect(await receive(ctx, { ...real.frame, envelope: toBase64(bytes) })).toMatchObject({ verdict: "ack" });

    expect(await store.sessions(ALICE)).toEqual(before);
    expect((await store.history(ALICE)).map((m) => m.text)).toEqual(["hello"]);
    expect(warnings).toHaveLength(2);
    expect(warnings[0]).toContain("was not signed by any of their devices");
    // The untouched envelope still opens in the unchanged session.
    await receive(ctx, real.frame);
    expect((await store.history(ALICE)).map((m) => m.text)).toEqual(["hello", "the real one"]);
    store.close();
  });

  it("deliveries without the protocol's fields are not taken at all", () => {
    const good = { type: "message", id: "00".repeat(16), from: ALICE, device: 2, envelope: "AA==" };
    expect(wellFormedDelivery(good)).toBe(true);
    for (const bad of [null, 7, [], { ...good, id: "zz".repeat(16) }, { ...good, id: 5 }, { ...good, from: { a: 1 } }, { ...good, envelope: null }, { ...good, device: "2" }, { ...good, from: "+1".repeat(40) }]) {
      expect(wellFormedDelivery(bad)).toBe(false);
    }
  });
});

describe("a tab closed between opening a message and acknowledging it", () => {
  it("keeps the message and its session across the reload, and shows the redelivery once", async () => {
    const { ctx, store, start, seal } = await bobAndAlice("crash-1");
    const first = await seal(start, "hello");
    // Opened and committed; the ack never left (the tab closed).
    await receive(ctx, first.frame);
    store.close();
    const reopened = await Store.open("crash-1");
    const after = { ...ctx, store: reopened };
    expect(await receive(after, first.frame)).toMatchObject({ verdict: "ack", setUp: false });
    expect((await reopened.history(ALICE)).map((m) => m.text)).toEqual(["hello"]);
    expect((await reopened.conversations()).find((c) => c.peer === ALICE)?.unread).toBe(1);
    // The session saved before the crash carries on.
    await receive(after, (await seal(first.state, "still here")).frame);
    expect((await reopened.history(ALICE)).map((m) => m.text)).toEqual(["hello", "still here"]);
    reopened.close();
  });
});

describe("a sender's clock", () => {
  it("is not believed when no Date can hold it or it is far ahead: the arrival time is shown instead", async () => {
    const { ctx, store, start, seal } = await bobAndAlice("clock-1");
    const before = Date.now();
    const first = await seal(start, "from the far future", undefined, 2 ** 60);
    await receive(ctx, first.frame);
    const second = await seal(first.state, "next year", undefined, Date.now() + 365 * 24 * 3600 * 1000);
    await receive(ctx, second.frame);
    const third = await seal(second.state, "an hour ago", undefined, before - 3600_000);
    await receive(ctx, third.frame);
    const shown = await store.history(ALICE);
    // The two arrival times may be the same millisecond, so their order is not asserted.
    expect(shown[0].text).toBe("an hour ago");
    expect(shown.slice(1).map((m) => m.text).sort()).toEqual(["from the far future", "next year"]);
    for (const m of shown.slice(1)) {
      expect(m.sentAt).toBeGreaterThanOrEqual(before);
      expect(m.sentAt).toBeLessThanOrEqual(Date.now());
    }
    expect(shownTime(before - 3600_000, before)).toBe(before - 3600_000);
    expect(shownTime(Number.NaN, before)).toBe(before);
    expect(shownTime(-5, before)).toBe(before);
    store.close();
  });
});

describe("draining the queue from a hostile server", () => {
  it("ignores malformed entries, acknowledges only what it took, and stops on a cursor that does not move", async () => {
    const { ctx, store, start, seal } = await bobAndAlice("drain-1");
    const first = await seal(start, "queued");
    const sent: Frame[] = [];
    const warned: string[] = [];
    const hostile: Context = {
      ...ctx,
      request: async (type, fields = {}) => {
        sent.push({ type, ...fields });
        if (type === "fetch") return { type: "fetched", messages: [first.frame, { id: 7 }, "junk"], more: true, cursor: 5 };
        if (type === "ack") return { type: "acked" };
        return ctx.request(type, fields);
      },
    };
    await drainQueue(hostile, (text) => warned.push(text));
    expect(sent.filter((f) => f.type === "fetch")).toHaveLength(2);
    expect(sent.filter((f) => f.type === "ack").map((f) => f.ids)).toEqual([[first.frame.id], [first.frame.id]]);
    expect(warned).toContain("The server sent messages that are not well formed; they were ignored.");
    expect(warned).toContain("The server sent a queue cursor that does not move forward; the rest of the queue is fetched at the next connection.");
    expect((await store.history(ALICE)).map((m) => m.text)).toEqual(["queued"]);
    store.close();
  });
});
