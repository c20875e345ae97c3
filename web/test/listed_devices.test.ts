/**
 * Who a contact's devices are is the signed device list's word, not their
 * bundles' (src/core/v2/peers.ts): every listed device is remembered even when
 * the server spoils, ages or withholds its prekeys, so a hostile server can
 * neither make a device's arrival be told again and again nor have a genuine
 * message from a listed device discarded as from an unknown one.
 */
import "fake-indexeddb/auto";
import { describe, expect, it } from "vitest";
import { fromBase64, randomBytes, toBase64, toHex } from "../src/crypto/bytes";
import { generateDeviceKey } from "../src/crypto/p256";
import { isolate } from "../src/core/isolate";
import type { Context } from "../src/core/v2/context";
import { receive } from "../src/core/v2/inbox";
import { devicesOf } from "../src/core/v2/peers";
import { maintainPrekeys } from "../src/core/v2/prekeys";
import { initiateSession, sealMessage } from "../src/protocol/session";
import { parsePrekey, PrekeyKind, type PrekeyChoice } from "../src/protocol/statements";
import { Store } from "../src/storage/store";
import type { Frame } from "../src/transport/connection";
import { account, type BundleSpec } from "./hostile_account";

const ALICE = "+12025550101";
const BOB = "+12025550102";

/** This browser as Bob's device 1, a server answering `lookup` for Alice with what `serve` last set, and what the page was told. */
async function bob(name: string) {
  const store = await Store.open(name);
  const me = await generateDeviceKey();
  let answer: Frame = {};
  const published: Frame[] = [];
  const told: string[] = [];
  const ctx: Context = {
    store,
    request: async (type, fields = {}) => {
      if (type === "lookup") return answer;
      if (type !== "publish_prekeys") throw new Error(`unexpected request ${type}`);
      published.push(fields);
      return { type: "prekeys_published", one_time: 100, kem_one_time: 40 };
    },
    emit: (event) => void ((event.type === "warning" || event.type === "notice") && told.push(event.text)),
    me: { phone: BOB, deviceId: 1, sign: me.sign, agree: me.agree, point: me.point, accountSpki: new Uint8Array(91), accountType: "p256" },
  };
  return { ctx, store, me, published, told, serve: (frame: Frame) => (answer = frame) };
}

describe("a contact's device whose bundle is refused", () => {
  it("is told as added once, when the list first names it, however the server alternates its bundle", async () => {
    const alice = await account(ALICE);
    const { ctx, store, told, serve } = await bob("listed-1");
    const lookups: [number, BundleSpec[]][] = [
      [1, [{ id: 1 }]],
      [2, [{ id: 1 }, { id: 2, forgedPrekey: true }]],
      [2, [{ id: 1 }, { id: 2 }]],
      [2, [{ id: 1 }, { id: 2, days: 40 }]],
      [2, [{ id: 1 }, { id: 2 }]],
    ];
    for (const [version, specs] of lookups) {
      serve(await alice.answer(version, specs));
      await devicesOf(ctx, ALICE);
    }
    expect(told).toEqual([`${isolate(ALICE)} added a device: ${isolate("device 2")}`]);
    store.close();
  });

  it("is told by its number when the server withholds its bundle, and keeps the name a certificate gave it", async () => {
    const alice = await account(ALICE);
    const { ctx, store, told, serve } = await bob("listed-2");
    serve(await alice.answer(1, [{ id: 1 }]));
    await devicesOf(ctx, ALICE);
    serve(await alice.answer(2, [{ id: 1 }, { id: 2, withheld: true }]));
    expect((await devicesOf(ctx, ALICE)).devices).toEqual([1]);
    serve(await alice.answer(2, [{ id: 1 }, { id: 2 }]));
    await devicesOf(ctx, ALICE);
    serve(await alice.answer(2, [{ id: 1 }, { id: 2, withheld: true }]));
    await devicesOf(ctx, ALICE);
    expect(told).toEqual([`${isolate(ALICE)} added device 2; its name is not known yet.`]);
    expect((await store.contact(ALICE))?.devices.map((d) => [d.id, d.name])).toEqual([
      [1, "device 1"],
      [2, "device 2"],
    ]);
    store.close();
  });

  for (const [why, spoiled] of [
    ["forged", { forgedPrekey: true }],
    ["out of date", { days: 40 }],
  ] as const) {
    it(`(${why}) still has its messages opened: its key is the list's`, async () => {
      const alice = await account(ALICE);
      const { ctx, store, me, published, told, serve } = await bob(`listed-3-${why}`);
      await maintainPrekeys(ctx);
      // Device 2 is listed with good keys, so device 1 is not taken for one added after the list.
      serve(await alice.answer(1, [{ id: 1, ...spoiled }, { id: 2 }]));
      const prekeys = published.flatMap((f) => (f.prekeys as string[]).map((p) => parsePrekey(fromBase64(p))));
      const kemLastResort = prekeys.find((p) => p.kind === PrekeyKind.KemLastResort)!;
      const choice: PrekeyChoice = {
        device: { id: 1, point: me.point, name: "browser" },
        signedPrekey: prekeys.find((p) => p.kind === PrekeyKind.Signed)!,
        kemLastResort,
        oneTimePrekey: null,
        kemPrekey: kemLastResort,
      };
      const sender = await alice.device(1);
      const state = await initiateSession({ phone: ALICE, deviceId: 1, identity: sender.point, agree: sender.agree }, { phone: BOB, deviceId: 1, identity: me.point }, choice);
      const id = randomBytes(16);
      const sealed = await sealMessage(state, id, { sentAt: Date.now(), content: { type: "text", text: "hello" } }, sender.sign);

      const frame = { type: "message", id: toHex(id), from: ALICE, device: 1, envelope: toBase64(sealed.envelope) };
      expect(await receive(ctx, frame)).toMatchObject({ verdict: "ack" });
      expect((await store.history(ALICE)).map((m) => m.text)).toEqual(["hello"]);
      expect(told).toEqual([]);
      store.close();
    });
  }
});
