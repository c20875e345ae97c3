/**
 * Devices a send leaves out (src/core/v2/peers.ts, outbox.ts), against a faked
 * server: a bundle whose prekey is forged, whose certificate is forged, or
 * whose prekeys are out of date is refused; a send tells each device left out
 * once, across `stale_devices` rounds, naming it only when its certificate
 * checked out and never when it took the message, a forgery over mere age;
 * any number of bad bundles costs one refusal each device and one for the
 * rest; a listed device that came with no bundle is told as having published
 * no keys; a lookup alone tells nothing; a send that reaches no device says why,
 * and one that stops after the message reached a device (its list forged
 * halfway, a refusal, a dropped connection) resolves as sent and says what had
 * already gone and what was not done.
 */
import "fake-indexeddb/auto";
import { describe, expect, it } from "vitest";
import { toBase64 } from "../src/crypto/bytes";
import type { CoreError } from "../src/core/errors";
import { isolate } from "../src/core/isolate";
import type { Context } from "../src/core/v2/context";
import { sendText } from "../src/core/v2/outbox";
import { devicesOf } from "../src/core/v2/peers";
import { Store } from "../src/storage/store";
import { RequestError, type Frame } from "../src/transport/connection";
import { account, type BundleSpec } from "./hostile_account";

const ME = "+12025550101";
const BOB = "+12025550102";
const ID = "0123456789abcdef0123456789abcdef";

/**
 * This browser as device 1 of ME, and a server that answers `lookup` for BOB
 * with `bob` and for ME with this device and `others`; `device_send` goes to
 * `onSend`, which may throw a refusal.
 */
async function setUp(name: string, bob: Frame, onSend: (fields: Frame) => Promise<void> = async () => undefined, others: BundleSpec[] = []) {
  const store = await Store.open(name);
  const mine = await account(ME);
  const me = await mine.device(1);
  const own = await mine.answer(1, [{ id: 1 }, ...others]);
  const warnings: string[] = [];
  const sent: Frame[] = [];
  const ctx: Context = {
    store,
    request: async (type, fields = {}) => {
      if (type === "lookup") return fields.phone === ME ? own : bob;
      if (type === "claim") return { type: "claimed", claims: [] };
      if (type !== "device_send") throw new Error(`unexpected request ${type}`);
      await onSend(fields);
      sent.push(fields);
      return { type: "ok" };
    },
    emit: (event) => void (event.type === "warning" && warnings.push(event.text)),
    me: { phone: ME, deviceId: 1, sign: me.sign, agree: me.agree, point: me.point, accountSpki: mine.key.spki, accountType: "p256" },
  };
  return { ctx, store, warnings, sent };
}

const send = (ctx: Context) => sendText(ctx, BOB, ID, "hello", Date.now());

describe("a contact's bundles that do not check out", () => {
  it("are refused with why, the device named only when its certificate checked out, the signature checked before the age, and nothing told on a lookup", async () => {
    const bob = await account(BOB);
    const { ctx, store, warnings } = await setUp(
      "left-out-1",
      await bob.answer(1, [{ id: 1 }, { id: 2, forgedPrekey: true }, { id: 3, days: 38 }, { id: 4, days: 38, forgedPrekey: true }, { id: 5, forgedCertificate: true }]),
    );
    const checked = await devicesOf(ctx, BOB);
    expect(checked.devices).toEqual([1]);
    expect(checked.refused).toEqual([
      { device: 2, reason: "a prekey's signature does not verify", outOfDate: false },
      { device: 3, reason: "out of date", outOfDate: true },
      { device: 4, reason: "a prekey's signature does not verify", outOfDate: false },
      { device: null, reason: "the device certificate's signature does not verify", outOfDate: false },
    ]);
    expect(warnings).toEqual([]);
    store.close();
  });
});

describe("a send that leaves devices out", () => {
  it("tells each device once, in one warning, and only the ones that got nothing", async () => {
    const bob = await account(BOB);
    const first = await bob.answer(1, [{ id: 1 }, { id: 2, forgedPrekey: true }, { id: 3, days: 38 }, { id: 5, forgedCertificate: true }, { id: 6, forgedCertificate: true }]);
    // Device 3 has published fresh keys by the second round; device 2 is still forged.
    const second = await bob.answer(2, [{ id: 1 }, { id: 2, forgedPrekey: true }, { id: 3 }, { id: 5, forgedCertificate: true }]);
    const { ctx, store, warnings, sent } = await setUp("left-out-2", first, async (fields) => {
      if (fields.list_version === 1) throw new RequestError("stale_devices", "the device list changed", { ...second, type: "error", code: "stale_devices" });
    });
    await send(ctx);
    expect(sent.map((f) => [f.to, f.device, f.list_version])).toEqual([
      [BOB, 1, 2],
      [BOB, 3, 2],
    ]);
    expect(warnings).toEqual([
      [
        `Device 2 of ${isolate(BOB)} gets nothing from this send: its keys were refused (a prekey's signature does not verify).`,
        `A device of ${isolate(BOB)} gets nothing from this send: its keys were refused (the device certificate's signature does not verify).`,
      ].join(" "),
    ]);
    store.close();
  });

  it("tells this account's own devices the sync copies leave out, after the recipient's", async () => {
    const bob = await account(BOB);
    const { ctx, store, warnings, sent } = await setUp("left-out-6", await bob.answer(1, [{ id: 1 }, { id: 2, days: 38 }]), undefined, [{ id: 2, days: 40 }, { id: 3 }]);
    await send(ctx);
    expect(sent.map((f) => [f.to, f.device])).toEqual([
      [BOB, 1],
      [ME, 3],
    ]);
    expect(warnings).toEqual([
      `Device 2 of ${isolate(BOB)} gets nothing from this send: its keys were refused (out of date). Device 2 of ${isolate(ME)} gets nothing from this send: its keys were refused (out of date).`,
    ]);
    store.close();
  });

  it("that reaches no device fails, saying the keys do not check out when any was forged", async () => {
    const bob = await account(BOB);
    const { ctx, store, warnings, sent } = await setUp("left-out-3", await bob.answer(1, [{ id: 1, days: 38 }, { id: 2, forgedPrekey: true }]));
    const error = (await send(ctx).catch((e: unknown) => e)) as CoreError;
    expect(error).toMatchObject({ code: "forged", message: `The server offered keys for ${BOB} that do not check out against their account key; nothing was sent.` });
    expect(sent).toEqual([]);
    expect(warnings).toEqual([
      `Device 1 of ${isolate(BOB)} gets nothing from this send: its keys were refused (out of date). Device 2 of ${isolate(BOB)} gets nothing from this send: its keys were refused (a prekey's signature does not verify).`,
    ]);
    store.close();
  });

  it("that reaches no device because every key is out of date says to try again once one has been online", async () => {
    const bob = await account(BOB);
    const { ctx, store, sent } = await setUp("left-out-4", await bob.answer(1, [{ id: 1, days: 38 }, { id: 2, days: 40 }]));
    await expect(send(ctx)).rejects.toMatchObject({
      code: "no_devices",
      message: `${BOB} has no device that can receive now: their published keys are out of date. Try again once one of their devices has been online.`,
    });
    expect(sent).toEqual([]);
    store.close();
  });

  it("that reaches no device because a forged prekey is also out of date calls it forged, not out of date", async () => {
    const bob = await account(BOB);
    const { ctx, store } = await setUp("left-out-5", await bob.answer(1, [{ id: 1, days: 38, forgedPrekey: true }]));
    await expect(send(ctx)).rejects.toMatchObject({ code: "forged" });
    store.close();
  });

  it("that reaches no device because of a replayed old bundle and a forged one for the same device calls it forged", async () => {
    const bob = await account(BOB);
    const { ctx, store, warnings, sent } = await setUp("left-out-7", await bob.answer(1, [{ id: 1, days: 40 }, { id: 1, forgedPrekey: true }]));
    await expect(send(ctx)).rejects.toMatchObject({ code: "forged" });
    expect(sent).toEqual([]);
    expect(warnings).toEqual([`Device 1 of ${isolate(BOB)} gets nothing from this send: its keys were refused (a prekey's signature does not verify).`]);
    store.close();
  });

  it("tells a device forged in a later round as forged, though an earlier round found its keys merely out of date", async () => {
    const bob = await account(BOB);
    const second = await bob.answer(2, [{ id: 1 }, { id: 2, forgedPrekey: true }]);
    const { ctx, store, warnings } = await setUp("left-out-8", await bob.answer(1, [{ id: 1 }, { id: 2, days: 40 }]), async (fields) => {
      if (fields.list_version === 1) throw new RequestError("stale_devices", "the device list changed", { ...second, type: "error", code: "stale_devices" });
    });
    await send(ctx);
    expect(warnings).toEqual([`Device 2 of ${isolate(BOB)} gets nothing from this send: its keys were refused (a prekey's signature does not verify).`]);
    store.close();
  });
});

describe("a send to listed devices that have published no keys", () => {
  it("names each once, in the one warning with the other devices left out, the recipient's then this account's", async () => {
    const bob = await account(BOB);
    const { ctx, store, warnings, sent } = await setUp(
      "left-out-20",
      await bob.answer(1, [{ id: 1 }, { id: 2, withheld: true }, { id: 3, days: 38 }]),
      undefined,
      [{ id: 2, withheld: true }, { id: 3 }],
    );
    await send(ctx);
    expect(sent.map((f) => [f.to, f.device])).toEqual([
      [BOB, 1],
      [ME, 3],
    ]);
    expect(warnings).toEqual([
      [
        `Device 3 of ${isolate(BOB)} gets nothing from this send: its keys were refused (out of date).`,
        `Device 2 of ${isolate(BOB)} gets nothing from this send: it has published no keys yet.`,
        `Device 2 of ${isolate(ME)} gets nothing from this send: it has published no keys yet.`,
      ].join(" "),
    ]);
    store.close();
  });

  it("that reaches no device for it says none can receive yet, not that keys are forged or out of date", async () => {
    const bob = await account(BOB);
    const { ctx, store, warnings, sent } = await setUp("left-out-21", await bob.answer(1, [{ id: 1, withheld: true }]));
    await expect(send(ctx)).rejects.toMatchObject({ code: "no_devices", message: "That person has no device that can receive messages yet. Try again later." });
    expect(sent).toEqual([]);
    expect(warnings).toEqual([`Device 1 of ${isolate(BOB)} gets nothing from this send: it has published no keys yet.`]);
    store.close();
  });

  it("tells a device forged in a later round as forged, and one that took the message in a later round not at all", async () => {
    const bob = await account(BOB);
    const second = await bob.answer(2, [{ id: 1 }, { id: 2, forgedPrekey: true }, { id: 3 }]);
    const { ctx, store, warnings, sent } = await setUp("left-out-22", await bob.answer(1, [{ id: 1 }, { id: 2, withheld: true }, { id: 3, withheld: true }]), async (fields) => {
      if (fields.list_version === 1) throw new RequestError("stale_devices", "the device list changed", { ...second, type: "error", code: "stale_devices" });
    });
    await send(ctx);
    expect(sent.map((f) => [f.device, f.list_version])).toEqual([
      [1, 2],
      [3, 2],
    ]);
    expect(warnings).toEqual([`Device 2 of ${isolate(BOB)} gets nothing from this send: its keys were refused (a prekey's signature does not verify).`]);
    store.close();
  });
});

describe("a lookup answer padded with junk bundles", () => {
  it("costs one refusal for all of them, and the device with good keys still gets the message", async () => {
    const bob = await account(BOB);
    const answer = await bob.answer(1, [{ id: 1 }]);
    // Some 600 KB of JSON: far under the response limit, far over what a call's arguments can hold.
    const padded = { ...answer, bundles: (answer.bundles as string[]).concat(new Array<string>(300_000).fill("0")) };
    const { ctx, store, warnings, sent } = await setUp("left-out-9", padded);
    await send(ctx);
    expect(sent.map((f) => [f.to, f.device])).toEqual([[BOB, 1]]);
    expect(warnings).toEqual([`A device of ${isolate(BOB)} gets nothing from this send: its keys were refused (the bundle is malformed).`]);
    expect((await devicesOf(ctx, BOB)).refused).toEqual([{ device: null, reason: "the bundle is malformed", outOfDate: false }]);
    store.close();
  });
});

describe("a device list forged during a send", () => {
  const forgedRefusal = async (version: number) => ({ ...(await (await account(BOB)).answer(version, [{ id: 1 }])), type: "error", code: "stale_devices" });

  it("in a stale_devices refusal says nothing was sent when no device had the message yet", async () => {
    const bob = await account(BOB);
    const refusal = await forgedRefusal(2);
    const { ctx, store } = await setUp("left-out-10", await bob.answer(1, [{ id: 1 }, { id: 2 }]), async () => {
      throw new RequestError("stale_devices", "the device list changed", refusal);
    });
    await expect(send(ctx)).rejects.toMatchObject({
      code: "forged",
      message: `The device list of ${BOB} does not check out (the device list is for another account); nothing was sent.`,
    });
    store.close();
  });

  it("in a stale_devices refusal, once one of the recipient's devices had taken it, is sent, and says the message had reached some devices", async () => {
    const bob = await account(BOB);
    const refusal = await forgedRefusal(2);
    const { ctx, store, sent, warnings } = await setUp("left-out-11", await bob.answer(1, [{ id: 1 }, { id: 2, days: 38 }, { id: 3 }]), async (fields) => {
      if (fields.device === 3) throw new RequestError("stale_devices", "the device list changed", refusal);
    });
    await send(ctx);
    expect(sent.map((f) => f.device)).toEqual([1]);
    expect(warnings).toEqual([
      `Device 2 of ${isolate(BOB)} gets nothing from this send: its keys were refused (out of date). The device list of ${BOB} does not check out (the device list is for another account); the message had reached some devices, and was not sent to the rest.`,
    ]);
    store.close();
  });

  it("says so too when it comes for a sync copy, the recipient having the message", async () => {
    const bob = await account(BOB);
    const refusal = { ...(await (await account(ME)).answer(2, [{ id: 1 }])), type: "error", code: "stale_devices" };
    const { ctx, store, sent, warnings } = await setUp(
      "left-out-12",
      await bob.answer(1, [{ id: 1 }]),
      async (fields) => {
        if (fields.to === ME) throw new RequestError("stale_devices", "the device list changed", refusal);
      },
      [{ id: 2 }],
    );
    await send(ctx);
    expect(sent.map((f) => [f.to, f.device])).toEqual([[BOB, 1]]);
    expect(warnings).toEqual([`The device list of ${ME} does not check out (the device list is for another account); the message had reached some devices, and was not sent to the rest.`]);
    store.close();
  });

  it("says so too when this account's own list, looked up for the sync copies, is forged", async () => {
    const bob = await account(BOB);
    const forgedOwn = await (await account(ME)).answer(2, [{ id: 1 }, { id: 2 }]);
    const { ctx, store, sent, warnings } = await setUp("left-out-13", await bob.answer(1, [{ id: 1 }]));
    // Under this account's real key, so only the list's signature gives it away.
    const forged = { ...forgedOwn, public_key: toBase64(ctx.me.accountSpki) };
    const serve = ctx.request;
    ctx.request = async (type, fields = {}) => (type === "lookup" && fields.phone === ME ? forged : serve(type, fields));
    await send(ctx);
    expect(sent.map((f) => [f.to, f.device])).toEqual([[BOB, 1]]);
    expect(warnings).toEqual([`The device list of ${ME} does not check out (the device list is for another account); the message had reached some devices, and was not sent to the rest.`]);
    store.close();
  });
});

describe("a send that stops after the message reached a device", () => {
  it("is sent when a later device's claimed prekey does not check out, and says which step failed", async () => {
    const bob = await account(BOB);
    // Device 3 joins in the list a stale_devices refusal carries; its claim is answered for another device.
    const second = { ...(await bob.answer(2, [{ id: 1 }, { id: 2 }, { id: 3 }])), type: "error", code: "stale_devices" };
    const { ctx, store, sent, warnings } = await setUp("left-out-14", await bob.answer(1, [{ id: 1 }, { id: 2 }]), async (fields) => {
      if (fields.list_version === 1 && fields.device === 2) throw new RequestError("stale_devices", "the device list changed", second);
    });
    const serve = ctx.request;
    ctx.request = async (type, fields = {}) => {
      const devices = fields.devices as number[] | undefined;
      if (type === "claim" && devices?.includes(3)) return { type: "claimed", claims: [toBase64(new Uint8Array([0, 0, 0, 9, 0, 0, 0, 0]))] };
      return serve(type, fields);
    };
    await send(ctx);
    expect(sent.map((f) => [f.to, f.device])).toEqual([[BOB, 1]]);
    expect(warnings).toEqual([`The keys the server gave for ${isolate(BOB)} do not check out (the claim is for another device); the message had reached some devices, and was not sent to the rest.`]);
    store.close();
  });

  it("is sent when the server refuses a later device's copy, and names the refusal", async () => {
    const bob = await account(BOB);
    const { ctx, store, sent, warnings } = await setUp("left-out-15", await bob.answer(1, [{ id: 1 }, { id: 2 }]), async (fields) => {
      if (fields.device === 2) throw new RequestError("quota_exceeded", "the mailbox is full", { type: "error", code: "quota_exceeded" });
    });
    await send(ctx);
    expect(sent.map((f) => [f.to, f.device])).toEqual([[BOB, 1]]);
    expect(warnings).toEqual([`The server refused sending to ${isolate(BOB)} (${isolate("quota_exceeded")}); the message had reached some devices, and was not sent to the rest.`]);
    store.close();
  });

  it("is sent when the recipient's list keeps changing after a device took it", async () => {
    const bob = await account(BOB);
    const { ctx, store, sent, warnings } = await setUp("left-out-16", await bob.answer(1, [{ id: 1 }, { id: 2 }]), async (fields) => {
      if (fields.device !== 2) return;
      const next = await bob.answer(Number(fields.list_version) + 1, [{ id: 1 }, { id: 2 }]);
      throw new RequestError("stale_devices", "the device list changed", { ...next, type: "error", code: "stale_devices" });
    });
    await send(ctx);
    expect(sent.map((f) => [f.to, f.device])).toEqual([[BOB, 1]]);
    expect(warnings).toEqual([`The devices of ${isolate(BOB)} kept changing while sending; the message had reached some devices, and was not sent to the rest.`]);
    store.close();
  });

  it("still fails when the list keeps changing before any device took it", async () => {
    const bob = await account(BOB);
    const { ctx, store, sent } = await setUp("left-out-17", await bob.answer(1, [{ id: 1 }]), async (fields) => {
      const next = await bob.answer(Number(fields.list_version) + 1, [{ id: 1 }]);
      throw new RequestError("stale_devices", "the device list changed", { ...next, type: "error", code: "stale_devices" });
    });
    await expect(send(ctx)).rejects.toMatchObject({ code: "devices_changing", message: `The devices of ${BOB} kept changing while sending; try again.` });
    expect(sent).toEqual([]);
    store.close();
  });

  it("is sent when the server gives no device list for the sync copies", async () => {
    const bob = await account(BOB);
    const { ctx, store, sent, warnings } = await setUp("left-out-18", await bob.answer(1, [{ id: 1 }]));
    const serve = ctx.request;
    ctx.request = async (type, fields = {}) =>
      type === "lookup" && fields.phone === ME ? { type: "user", phone: ME, public_key: toBase64(ctx.me.accountSpki) } : serve(type, fields);
    await send(ctx);
    expect(sent.map((f) => [f.to, f.device])).toEqual([[BOB, 1]]);
    expect(warnings).toEqual([`The server gave no device list for ${isolate(ME)}; the message had reached some devices, and was not sent to the rest.`]);
    store.close();
  });

  it("is sent when the connection drops after the recipient's device took it, and says the rest may not have it", async () => {
    const bob = await account(BOB);
    const { ctx, store, sent, warnings } = await setUp(
      "left-out-19",
      await bob.answer(1, [{ id: 1 }]),
      async (fields) => {
        if (fields.to === ME) throw new RequestError("disconnected", "The connection dropped; try again.");
      },
      [{ id: 2 }],
    );
    await send(ctx);
    expect(sent.map((f) => [f.to, f.device])).toEqual([[BOB, 1]]);
    expect(warnings).toEqual([
      `The connection to the Carrier server dropped while sending to ${isolate(ME)}; the message had reached some devices, and may not have reached the rest.`,
    ]);
    store.close();
  });
});
