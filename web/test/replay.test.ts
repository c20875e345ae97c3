/**
 * A replayed first message (PROTOCOL-v2 §4.4, last row; §5.4): a set-up that used
 * neither one-time key is remembered by its base key on the signed prekey, so
 * the same set-up is refused even when its session is gone and whatever the
 * message id, and receiving it changes no state.
 */
import "fake-indexeddb/auto";
import { describe, expect, it } from "vitest";
import { fromBase64, randomBytes, toBase64, toHex } from "../src/crypto/bytes";
import { generateDeviceKey } from "../src/crypto/p256";
import type { Context } from "../src/core/v2/context";
import { receive } from "../src/core/v2/inbox";
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
  const ctx: Context = {
    store,
    request: async (type, fields = {}) => {
      if (type !== "publish_prekeys") throw new Error(`unexpected request ${type}`);
      published.push(fields);
      return { type: "prekeys_published", one_time: 100, kem_one_time: 40 };
    },
    emit: () => undefined,
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
  const seal = async (state: SessionState, text: string) => {
    const id = randomBytes(16);
    const sealed = await sealMessage(state, id, { sentAt: Date.now(), content: { type: "text", text } }, alice.sign);
    return { frame: { type: "message", id: toHex(id), from: ALICE, device: 2, envelope: toBase64(sealed.envelope) }, state: sealed.state };
  };
  return { ctx, store, start, seal, signedPrekey };
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
