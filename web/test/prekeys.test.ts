/**
 * The device's prekeys (PROTOCOL §10.4) against a stand-in for the server's
 * `publish_prekeys`: first publication, top-ups against the server's pools,
 * rotation after 7 days, and deletion 30 days after replacement.
 */
import "fake-indexeddb/auto";
import { describe, expect, it } from "vitest";
import { fromBase64 } from "../src/crypto/bytes";
import { generateDeviceKey } from "../src/crypto/p256";
import type { Context } from "../src/core/v2/context";
import { maintainPrekeys, responderPrekeys, RETAIN_REPLACED_MS, ROTATE_AFTER_MS } from "../src/core/v2/prekeys";
import { sendingSession } from "../src/core/v2/outbox";
import { parsePrekey, PrekeyKind, prekeyStatement } from "../src/protocol/statements";
import { verify } from "../src/crypto/p256";
import { Store } from "../src/storage/store";
import type { Frame } from "../src/transport/connection";

async function setup(name: string) {
  const store = await Store.open(name);
  const device = await generateDeviceKey();
  const server = { oneTime: 0, kem: 0, published: [] as Uint8Array[] };
  const request = async (type: string, fields: Frame = {}): Promise<Frame> => {
    expect(type).toBe("publish_prekeys");
    for (const p of fields.prekeys as string[]) {
      const prekey = parsePrekey(fromBase64(p));
      expect(await verify(device.point, prekeyStatement(prekey), prekey.signature)).toBe(true);
      if (prekey.kind === PrekeyKind.OneTime) server.oneTime++;
      if (prekey.kind === PrekeyKind.KemOneTime) server.kem++;
      server.published.push(fromBase64(p));
    }
    expect(JSON.stringify(fields).length).toBeLessThan(131_072);
    return { type: "prekeys_published", one_time: server.oneTime, kem_one_time: server.kem };
  };
  const ctx: Context = {
    store,
    request,
    emit: () => undefined,
    me: { phone: "+12025550101", deviceId: 1, sign: device.sign, agree: device.agree, point: device.point, accountSpki: new Uint8Array(91), accountType: "p256" },
  };
  return { ctx, store, server };
}

const kinds = (published: Uint8Array[]) => published.map((p) => parsePrekey(p as Uint8Array<ArrayBuffer>).kind);

describe("prekeys", () => {
  it("publishes a full set at first, tops up only below the low marks, and rotates after 7 days", async () => {
    const { ctx, store, server } = await setup("prekeys-1");
    const t0 = 1_800_000_000_000;
    await maintainPrekeys(ctx, t0);
    const first = kinds(server.published);
    expect(first.filter((k) => k === PrekeyKind.Signed)).toHaveLength(1);
    expect(first.filter((k) => k === PrekeyKind.KemLastResort)).toHaveLength(1);
    expect(server.oneTime).toBe(100);
    expect(server.kem).toBe(40);

    server.published = [];
    server.oneTime = 30; // others claimed 70, still above the low mark
    await maintainPrekeys(ctx, t0 + 1000);
    expect(server.published).toHaveLength(0);

    server.oneTime = 20;
    await maintainPrekeys(ctx, t0 + 2000);
    expect(server.oneTime).toBe(100);

    server.published = [];
    const before = (await store.keys("prekey:")).find((k) => k.kind === PrekeyKind.Signed && k.replacedAt === undefined)!;
    await maintainPrekeys(ctx, t0 + ROTATE_AFTER_MS);
    expect(kinds(server.published).sort()).toEqual([PrekeyKind.Signed, PrekeyKind.KemLastResort]);
    // The replaced one still opens prekey messages queued meanwhile…
    const kept = await responderPrekeys(ctx, { signedPrekeyId: before.id!, oneTimePrekeyId: 0, kemPrekeyId: (await store.keys("prekey:")).find((k) => k.kind === PrekeyKind.KemLastResort)!.id!, ephemeral: new Uint8Array(65), kemCiphertext: new Uint8Array(1088) });
    expect(kept?.keys.signedPrekey.id).toBe(before.id);
    // …until 30 days after its replacement.
    await maintainPrekeys(ctx, t0 + ROTATE_AFTER_MS + RETAIN_REPLACED_MS);
    expect(await store.key(`prekey:${before.id}`)).toBeUndefined();
    store.close();
  });

  it("names a used one-time prekey for deletion with the session, and a missing one as unopenable", async () => {
    const { ctx, store } = await setup("prekeys-2");
    await maintainPrekeys(ctx, Date.now());
    const all = await store.keys("prekey:");
    const spk = all.find((k) => k.kind === PrekeyKind.Signed)!;
    const opk = all.find((k) => k.kind === PrekeyKind.OneTime)!;
    const kem = all.find((k) => k.kind === PrekeyKind.KemOneTime)!;
    const setUp = { signedPrekeyId: spk.id!, oneTimePrekeyId: opk.id!, kemPrekeyId: kem.id!, ephemeral: new Uint8Array(65), kemCiphertext: new Uint8Array(1088) };
    const found = await responderPrekeys(ctx, setUp);
    expect(found?.used.remove.sort()).toEqual([opk.name, kem.name].sort());
    expect(found?.used.remember).toBeUndefined();
    expect(await responderPrekeys(ctx, { ...setUp, oneTimePrekeyId: 999_999 })).toBeNull();
    expect(await responderPrekeys(ctx, { ...setUp, signedPrekeyId: opk.id! })).toBeNull();
    store.close();
  });
});

describe("the session to send in", () => {
  it("is the one last opened in, else the newest", () => {
    const s = (id: string, device: number, openedAt: number, createdAt: number) => ({ peer: "+1", device, id, usedAt: 0, openedAt, createdAt, state: null });
    expect(sendingSession([s("a", 1, 0, 10), s("b", 1, 0, 20), s("c", 2, 0, 30)], 1)?.id).toBe("b");
    expect(sendingSession([s("a", 1, 50, 10), s("b", 1, 0, 20)], 1)?.id).toBe("a");
    expect(sendingSession([s("a", 1, 0, 10)], 3)).toBeUndefined();
  });
});
