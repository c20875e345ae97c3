/** The IndexedDB store, over an in-memory IndexedDB (fake-indexeddb), reopened as a reload would. */
import "fake-indexeddb/auto";
import { describe, expect, it } from "vitest";
import { utf8 } from "../src/crypto/bytes";
import { generateDeviceKey, sign, verify } from "../src/crypto/p256";
import { MAX_BROADCASTS, Store, type MessageRecord } from "../src/storage/store";

let dbCount = 0;
const freshName = () => `carrier-test-${++dbCount}`;

const message = (over: Partial<MessageRecord>): MessageRecord => ({
  peer: "+12025550102",
  direction: "in",
  id: "01",
  text: "hi",
  sentAt: 1000,
  receivedAt: 1000,
  status: "received",
  ...over,
});

describe("Store", () => {
  it("keeps the account and its non-extractable keys across a reopen", async () => {
    const name = freshName();
    const device = await generateDeviceKey();
    const store = await Store.open(name);
    await store.saveAccount(
      { id: "me", phone: "+12025550101", deviceId: 1, keyType: "p256", fingerprint: "ab".repeat(32), createdAt: 5 },
      [{ name: "device", sign: device.sign, agree: device.agree, point: device.point, createdAt: 5 }],
    );
    store.close();

    const again = await Store.open(name);
    expect(await again.account()).toMatchObject({ phone: "+12025550101", deviceId: 1 });
    const key = await again.key("device");
    expect(key!.sign!.extractable).toBe(false);
    const sig = await sign(key!.sign!, utf8("still mine"));
    expect(await verify(device.point, utf8("still mine"), sig)).toBe(true);
  });

  it("stores a message once, counts unread, and clears on read", async () => {
    const store = await Store.open(freshName());
    expect(await store.addMessage(message({ id: "01", sentAt: 1 }))).toBe(true);
    expect(await store.addMessage(message({ id: "01", sentAt: 1, text: "replayed" }))).toBe(false);
    expect(await store.addMessage(message({ id: "02", sentAt: 3, text: "later" }))).toBe(true);
    expect(await store.addMessage(message({ id: "03", sentAt: 2, direction: "out", status: "sending" }))).toBe(true);
    const [row] = await store.conversations();
    expect(row).toMatchObject({ peer: "+12025550102", unread: 2, lastText: "later", lastDirection: "in" });
    expect((await store.history("+12025550102")).map((m) => m.id)).toEqual(["01", "03", "02"]);
    await store.markRead("+12025550102");
    expect((await store.conversations())[0].unread).toBe(0);
    await store.setStatus("+12025550102", "03", "sent");
    expect((await store.history("+12025550102"))[1].status).toBe("sent");
  });

  it("does not count messages read while the conversation is open", async () => {
    const store = await Store.open(freshName());
    await store.addMessage(message({ id: "01" }), true);
    expect((await store.conversations())[0].unread).toBe(0);
  });

  it("lists conversations newest first and keeps them apart", async () => {
    const store = await Store.open(freshName());
    await store.addMessage(message({ peer: "+12025550102", id: "a", sentAt: 10 }));
    await store.addMessage(message({ peer: "+12025550103", id: "a", sentAt: 20 }));
    await store.openConversation("+12025550104");
    const peers = (await store.conversations()).map((c) => c.peer);
    expect(peers[0]).toBe("+12025550104");
    expect(peers.slice(1)).toEqual(["+12025550103", "+12025550102"]);
    expect(await store.history("+12025550102")).toHaveLength(1);
  });

  it("keeps broadcasts once each and only the newest 500", async () => {
    const store = await Store.open(freshName());
    const b = (i: number) => ({ id: `b${i}`, from: "+12025550102", text: `t${i}`, sentAt: i, receivedAt: i, own: false });
    expect(await store.addBroadcast(b(0))).toBe(true);
    expect(await store.addBroadcast(b(0))).toBe(false);
    for (let i = 1; i <= MAX_BROADCASTS; i++) await store.addBroadcast(b(i));
    const kept = await store.broadcasts();
    expect(kept).toHaveLength(MAX_BROADCASTS);
    expect(kept[0].id).toBe("b1");
    expect(kept.at(-1)!.id).toBe(`b${MAX_BROADCASTS}`);
  });
});

describe("sessions kept per peer device", () => {
  it("keeps the 4 most recently used", async () => {
    const store = await Store.open("sessions-prune");
    for (let i = 1; i <= 6; i++) await store.saveSession({ peer: "+12025550102", device: 1, id: `s${i}`, usedAt: i, state: null });
    await store.saveSession({ peer: "+12025550102", device: 2, id: "other", usedAt: 0, state: null });
    const kept = (await store.sessions("+12025550102")).filter((s) => s.device === 1).map((s) => s.id).sort();
    expect(kept).toEqual(["s3", "s4", "s5", "s6"]);
    expect((await store.sessions("+12025550102")).some((s) => s.id === "other")).toBe(true);
    store.close();
  });
});
