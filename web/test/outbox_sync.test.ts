/**
 * The fan-out of a send (src/core/v2/outbox.ts) against a faked server: a sync
 * copy to one of this account's own devices refused as `duplicate_id` (the
 * recipient took that id in the device's queue first) is skipped and the send
 * goes on; the same answer for a recipient's device still fails the send.
 */
import "fake-indexeddb/auto";
import { afterEach, describe, expect, it, vi } from "vitest";
import { toHex, type Bytes } from "../src/crypto/bytes";
import { generateAgreementKey, generateDeviceKey } from "../src/crypto/p256";
import { kemKeyPair } from "../src/crypto/mlkem";
import type { Context } from "../src/core/v2/context";
import { fanOut } from "../src/core/v2/outbox";
import type { Checked } from "../src/core/v2/peers";
import { initiateSession } from "../src/protocol/session";
import { PrekeyKind, type PrekeyChoice } from "../src/protocol/statements";
import { Store } from "../src/storage/store";
import { RequestError, type Frame } from "../src/transport/connection";

const ME = "+12025550101";
const BOB = "+12025550102";
const ID = "0123456789abcdef0123456789abcdef";

/** A context whose server refuses `device_send` to `refused` with `duplicate_id`, and records what it took. */
async function setUp(name: string, refused: { phone: string; device: number }) {
  const store = await Store.open(name);
  const me = await generateDeviceKey();
  const taken: Frame[] = [];
  const ctx: Context = {
    store,
    request: async (type, fields = {}) => {
      if (type !== "device_send") throw new Error(`unexpected request ${type}`);
      if (fields.to === refused.phone && fields.device === refused.device) {
        throw new RequestError("duplicate_id", "a message with this id is already queued", { type: "error", code: "duplicate_id" });
      }
      taken.push(fields);
      return { type: "ok" };
    },
    emit: () => undefined,
    me: { phone: ME, deviceId: 1, sign: me.sign, agree: me.agree, point: me.point, accountSpki: new Uint8Array(91), accountType: "p256" },
  };
  const sessionTo = async (phone: string, device: number) => {
    const other = await generateDeviceKey();
    const spk = await generateAgreementKey();
    const kem = kemKeyPair();
    const prekey = (kind: PrekeyKind, id: number, key: Bytes) => ({ kind, id, key, createdAt: 0, signature: new Uint8Array(64) });
    const choice: PrekeyChoice = {
      device: { id: device, point: other.point, name: "" },
      signedPrekey: prekey(PrekeyKind.Signed, 1, spk.point),
      kemLastResort: prekey(PrekeyKind.KemLastResort, 2, kem.publicKey),
      oneTimePrekey: null,
      kemPrekey: prekey(PrekeyKind.KemLastResort, 2, kem.publicKey),
    };
    const state = await initiateSession({ phone: ME, deviceId: 1, identity: me.point, agree: me.agree }, { phone, deviceId: device, identity: other.point }, choice);
    await store.saveSession({ peer: phone, device, id: toHex(state.sessionId), usedAt: 1, openedAt: 0, createdAt: 1, state });
  };
  const checked = (phone: string, devices: number[]): Checked => ({ phone, spki: new Uint8Array(91), version: 1, devices, bundles: new Map(), refused: [] });
  return { ctx, taken, sessionTo, checked };
}

afterEach(() => vi.restoreAllMocks());

describe("fan-out", () => {
  it("skips a sync copy refused as duplicate_id and still serves the other own devices", async () => {
    const { ctx, taken, sessionTo, checked } = await setUp("outbox-sync-1", { phone: ME, device: 2 });
    await sessionTo(ME, 2);
    await sessionTo(ME, 3);
    const warn = vi.spyOn(console, "warn").mockImplementation(() => undefined);
    const sync = { type: "sync" as const, to: BOB, id: ID, text: "hello" };
    await expect(fanOut(ctx, checked(ME, [1, 2, 3]), ID, sync, Date.now())).resolves.toEqual({ served: 2, leftOut: [] });
    expect(taken.map((f) => [f.to, f.device, f.id])).toEqual([[ME, 3, ID]]);
    expect(warn).toHaveBeenCalledOnce();
    expect(String(warn.mock.calls[0][0])).toContain("duplicate");
  });

  it("still fails the send when a recipient's device answers duplicate_id", async () => {
    const { ctx, sessionTo, checked } = await setUp("outbox-sync-2", { phone: BOB, device: 2 });
    await sessionTo(BOB, 2);
    const text = { type: "text" as const, text: "hello" };
    await expect(fanOut(ctx, checked(BOB, [2]), ID, text, Date.now())).rejects.toMatchObject({ code: "duplicate_id" });
  });
});
