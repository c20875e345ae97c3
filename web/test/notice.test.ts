/**
 * Undeliverable notices (src/protocol/notice.rs): the exact bytes the server
 * queues (pinned on the Rust side by tests/integration/web.rs) mark the refused
 * message in its conversation and are acknowledged; a notice not from this
 * account's own server, or not well formed, is acknowledged and said quietly,
 * changing nothing.
 */
import "fake-indexeddb/auto";
import { describe, expect, it } from "vitest";
import { toBase64, utf8 } from "../src/crypto/bytes";
import type { CoreEvent } from "../src/core/api";
import { isolate } from "../src/core/isolate";
import type { Context } from "../src/core/v2/context";
import { receive } from "../src/core/v2/inbox";
import { MAX_REASON_BYTES, parseNotice } from "../src/core/v2/notice";
import { Store } from "../src/storage/store";

const ME = "+12025550101";
const BOB = "+12025550102";
const ID = "0123456789abcdef0123456789abcdef";
const REASON = "the device list changed: \u202eé";

/** Byte for byte what `Undeliverable::to_bytes` gives in tests/integration/web.rs. */
const RUST_BYTES = new Uint8Array([0, ...utf8(`{"type":"undeliverable","id":"${ID}","to":"${BOB}","device":2,"code":"stale_devices","reason":"${REASON}"}`)]);

const noticeBytes = (fields: Record<string, unknown>) => new Uint8Array([0, ...utf8(JSON.stringify({ type: "undeliverable", id: ID, to: BOB, device: 2, code: "stale_devices", reason: "gone", ...fields }))]);
const delivery = (bytes: Uint8Array, extra: Record<string, unknown> = {}) => ({ type: "message", id: "fe".repeat(16), from: ME, envelope: toBase64(bytes), ...extra });

async function setUp(name: string) {
  const store = await Store.open(name);
  const events: CoreEvent[] = [];
  const ctx = {
    store,
    request: async (type: string) => {
      throw new Error(`unexpected request ${type}`);
    },
    emit: (event: CoreEvent) => void events.push(event),
    me: { phone: ME, deviceId: 1 },
  } as unknown as Context;
  const now = Date.now();
  await store.addMessage({ peer: BOB, direction: "out", id: ID, text: "hello", sentAt: now, receivedAt: now, status: "sent" });
  return { store, ctx, events };
}

describe("parsing a notice", () => {
  it("takes the server's exact bytes", () => {
    expect(parseNotice(RUST_BYTES)).toEqual({ type: "undeliverable", id: ID, to: BOB, device: 2, code: "stale_devices", reason: REASON });
  });

  it("refuses every field out of shape, other types and bytes that are not JSON", () => {
    expect(parseNotice(noticeBytes({}))).not.toBeNull();
    expect(parseNotice(noticeBytes({ reason: "é".repeat(MAX_REASON_BYTES / 2) }))).not.toBeNull();
    for (const bad of [
      { type: "delivered" },
      { id: "zz".repeat(16) },
      { id: ID.slice(2) },
      { to: "<b>+1</b>" },
      { to: 12025550102 },
      { device: 0 },
      { device: 1.5 },
      { device: "2" },
      { code: "Stale Devices" },
      { reason: 7 },
      { reason: "x".repeat(MAX_REASON_BYTES + 1) },
    ]) {
      expect(parseNotice(noticeBytes(bad)), JSON.stringify(bad).slice(0, 60)).toBeNull();
    }
    for (const bytes of [new Uint8Array([0]), new Uint8Array([0, 0x7b]), new Uint8Array([0, ...utf8("[1]")]), new Uint8Array([0, 0xff, 0xfe]), new Uint8Array([2, ...RUST_BYTES.subarray(1)])]) {
      expect(parseNotice(bytes)).toBeNull();
    }
  });
});

describe("receiving a notice", () => {
  it("marks the refused copy on its message, tells the conversation, and is acknowledged, once however often it comes", async () => {
    const { store, ctx, events } = await setUp("notice-1");
    expect(await receive(ctx, delivery(RUST_BYTES))).toEqual({ verdict: "ack", setUp: false });
    expect(await receive(ctx, delivery(RUST_BYTES))).toEqual({ verdict: "ack", setUp: false });
    const [message] = await store.history(BOB);
    expect(message.undelivered).toEqual([{ device: 2, code: "stale_devices", reason: REASON }]);
    expect(message.text).toBe("hello");
    expect(events).toEqual([{ type: "conversation", peer: BOB }, { type: "conversation", peer: BOB }]);
    // Another device's copy refused too: both are kept.
    await receive(ctx, delivery(noticeBytes({ device: 3, code: "unknown_device" })));
    expect((await store.history(BOB))[0].undelivered?.map((r) => r.device)).toEqual([2, 3]);
    store.close();
  });

  it("finds a refused sync copy (to this account) under the message's recipient", async () => {
    const { store, ctx } = await setUp("notice-2");
    expect(await receive(ctx, delivery(noticeBytes({ to: ME })))).toMatchObject({ verdict: "ack" });
    expect((await store.history(BOB))[0].undelivered).toEqual([{ device: 2, code: "stale_devices", reason: "gone" }]);
    store.close();
  });

  it("tells a refusal of a message not in this browser's history as a warning", async () => {
    const { store, ctx, events } = await setUp("notice-3");
    expect(await receive(ctx, delivery(noticeBytes({ id: "ab".repeat(16), reason: "\u202egone" })))).toMatchObject({ verdict: "ack" });
    expect(events).toEqual([{ type: "warning", text: `A message to ${isolate(BOB)} was refused by their server for their device 2 and will not be delivered there: ${isolate("gone")} (stale_devices).` }]);
    expect((await store.history(BOB))[0].undelivered).toBeUndefined();
    store.close();
  });

  it("acknowledges and ignores a notice from another number, with a sending device, or not well formed, saying so quietly", async () => {
    const { store, ctx, events } = await setUp("notice-4");
    for (const m of [
      delivery(RUST_BYTES, { from: BOB }),
      delivery(RUST_BYTES, { device: 1 }),
      delivery(noticeBytes({ type: "broadcast" })),
      delivery(new Uint8Array([0, ...utf8("not json")])),
      delivery(new Uint8Array([0])),
    ]) {
      expect(await receive(ctx, m)).toEqual({ verdict: "ack", setUp: false });
    }
    expect(events).toHaveLength(5);
    expect(events.every((e) => e.type === "notice" && e.text.includes("was ignored"))).toBe(true);
    expect((await store.history(BOB))[0].undelivered).toBeUndefined();
    store.close();
  });
});
