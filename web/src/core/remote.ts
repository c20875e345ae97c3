/**
 * The core that speaks protocol v2 to a real Carrier server over its WebSocket
 * (`/ws`, docs/PROTOCOL.md §12). Each time the connection opens it logs in as
 * this browser's device, keeps its prekeys topped up, and drains its queue;
 * pushed messages are opened as they come. Protocol work runs one piece at a
 * time (`exclusive`), so sessions and prekeys are never read and written by two
 * pieces at once, and every state change is committed to IndexedDB before the
 * envelope it made leaves or the message it opened is acknowledged.
 */
import { signAsAccount, importAccountKey, verifyAccountSignature, type AccountSigner } from "../crypto/account";
import { fromBase64, fromHex, toBase64, utf8 } from "../crypto/bytes";
import { MAX_TEXT_BYTES } from "../protocol/padding";
import { safetyNumber } from "../protocol/safety_number";
import { broadcastStatement } from "../protocol/statements";
import type { Store } from "../storage/store";
import { Transport, type Frame, type Hello } from "../transport/connection";
import type { Account, ClientCore } from "./api";
import { asCoreError, CoreError } from "./errors";
import { isolate } from "./isolate";
import { canonicalPhone } from "./phone";
import { StoredCore } from "./stored";
import { loadMe, newMessageId, type Context, type Me } from "./v2/context";
import { deviceLogin, firstDevice, linkDevice, newAccountKey, verifyRegistration } from "./v2/enrol";
import { drainQueue, receive, shownTime, wellFormedDelivery } from "./v2/inbox";
import { sendText } from "./v2/outbox";
import { lookUp } from "./v2/peers";
import { maintainPrekeys } from "./v2/prekeys";

/** The WebSocket address on the page's own server: ws:// beside http://, wss:// beside https://. */
export function socketUrl(location: Location): string {
  return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
}

/** A tab left open still rotates its signed prekeys and tops its pools up. */
const MAINTAIN_EVERY_MS = 3600_000;

interface BroadcastFrame extends Frame {
  id: string;
  from: string;
  sent_at: number;
  text: string;
  signature: string;
}

/** A pushed `broadcast` with the fields of PROTOCOL.md §4 and their types. */
function wellFormedBroadcast(f: Frame): f is BroadcastFrame {
  return (
    typeof f.id === "string" &&
    /^[0-9a-fA-F]{32}$/.test(f.id) &&
    typeof f.from === "string" &&
    /^\+[1-9][0-9]{1,14}$/.test(f.from) &&
    typeof f.sent_at === "number" &&
    Number.isSafeInteger(f.sent_at) &&
    typeof f.text === "string" &&
    typeof f.signature === "string"
  );
}

export class RemoteCore extends StoredCore implements ClientCore {
  private readonly transport: Transport;
  private me: Me | null = null;
  /** The account key made at `requestCode`, kept until `register` proves it. */
  private pending: { phone: string; key: AccountSigner } | null = null;
  private queue: Promise<unknown> = Promise.resolve();
  private loggedIn: Array<() => void> = [];
  /** The code of the last failed device login, so a repeated failure is told once. */
  private loginFailure: string | null = null;
  private lastWarning = "";

  constructor(store: Store, url: string) {
    super(store);
    this.transport = new Transport({
      url,
      awaitHello: true,
      onState: (state) => this.emit({ type: "connection", state }),
      onOpen: (request, hello) => this.opened(request, hello),
      onEvent: (frame) => this.pushed(frame),
      onProtocolError: (reason) => this.warn(reason),
    });
  }

  async resume(): Promise<Account | null> {
    this.me = await loadMe(this.store);
    this.transport.start();
    setInterval(() => {
      if (this.me) void this.exclusive((ctx) => maintainPrekeys(ctx)).catch(() => undefined);
    }, MAINTAIN_EVERY_MS);
    return this.storedAccount();
  }

  async requestCode(typed: string): Promise<string> {
    const phone = canonicalPhone(typed);
    if (this.pending?.phone !== phone) this.pending = { phone, key: await newAccountKey() };
    const answer = await this.call("register", { phone, key_type: "p256", public_key: toBase64(this.pending.key.spki) });
    const canonical = String(answer.phone ?? phone);
    this.pending.phone = canonical;
    return canonical;
  }

  async register(typed: string, code: string): Promise<Account> {
    const phone = canonicalPhone(typed);
    const pending = this.pending;
    if (!pending || pending.phone !== phone) throw new CoreError("no_pending_code");
    if (!/^\s*\d{6}\s*$/.test(code)) throw new CoreError("wrong_code");
    const request = (type: string, fields?: Frame) => this.call(type, fields);
    await verifyRegistration(request, this.transport.hello, phone, code, pending.key);
    const account = await firstDevice(this.store, request, phone, pending.key);
    this.pending = null;
    await this.becomeDevice();
    return account;
  }

  async link(typed: string, linkCode: string, deviceName: string): Promise<Account> {
    const phone = canonicalPhone(typed);
    const account = await linkDevice(this.store, (type, fields) => this.call(type, fields), phone, linkCode, deviceName);
    await this.becomeDevice();
    return account;
  }

  async startConversation(typed: string): Promise<string> {
    const phone = canonicalPhone(typed);
    await this.exclusive(async (ctx) => {
      try {
        await lookUp(ctx, phone);
      } catch (error) {
        // A changed key still opens the conversation: it shows the warning there.
        if (!(error instanceof CoreError && error.code === "key_changed")) throw error;
      }
    });
    await this.store.openConversation(phone);
    this.emit({ type: "conversation", peer: phone });
    return phone;
  }

  async send(peer: string, text: string): Promise<void> {
    if (!text.trim()) throw new CoreError("empty");
    if (utf8(text).length > MAX_TEXT_BYTES) throw new CoreError("message_too_large");
    if ((await this.store.contact(peer))?.pendingSpki) throw new CoreError("key_changed");
    const id = newMessageId();
    const now = Date.now();
    await this.store.addMessage({ peer, direction: "out", id, text, sentAt: now, receivedAt: now, status: "sending" });
    this.emit({ type: "conversation", peer });
    try {
      await this.exclusive((ctx) => sendText(ctx, peer, id, text, now));
      await this.store.setStatus(peer, id, "sent");
    } catch (error) {
      await this.store.setStatus(peer, id, "failed");
      throw asCoreError(error);
    } finally {
      this.emit({ type: "conversation", peer });
    }
  }

  async trust(peer: string): Promise<void> {
    const contact = await this.store.contact(peer);
    if (!contact?.pendingSpki) return;
    await this.store.saveContact({
      phone: peer,
      spki: contact.pendingSpki,
      fingerprint: contact.pendingFingerprint!,
      listVersion: 0,
      devices: [],
    });
    await this.store.deleteSessions(peer);
    this.emit({ type: "contact", phone: peer });
    // What was kept back on the server while the key was untrusted opens now.
    await this.exclusive((ctx) => this.drain(ctx));
  }

  async safetyNumber(peer: string): Promise<string> {
    const me = this.requireMe();
    const contact = peer === me.phone ? { spki: me.accountSpki, pendingSpki: undefined } : await this.store.contact(peer);
    if (!contact) throw new CoreError("unknown_user");
    return safetyNumber(me.phone, me.accountSpki, peer, contact.pendingSpki ?? contact.spki);
  }

  async broadcast(text: string): Promise<void> {
    if (!text.trim()) throw new CoreError("empty");
    if (utf8(text).length > MAX_TEXT_BYTES) throw new CoreError("message_too_large");
    const me = this.requireMe();
    if (!me.accountSign) throw new CoreError("no_account_key");
    const id = newMessageId();
    const sentAt = Date.now();
    const signature = await signAsAccount({ type: me.accountType, sign: me.accountSign }, broadcastStatement(fromHex(id), sentAt, me.phone, text));
    await this.call("broadcast", { id, sent_at: sentAt, text, signature: toBase64(signature) });
    await this.store.addBroadcast({ id, from: me.phone, text, sentAt, receivedAt: Date.now(), own: true });
    this.emit({ type: "broadcasts" });
  }

  /** A request whose failure reaches the page as a CoreError with a sentence. */
  private async call(type: string, fields?: Frame): Promise<Frame> {
    try {
      return await this.transport.request(type, fields);
    } catch (error) {
      throw asCoreError(error);
    }
  }

  private requireMe(): Me {
    if (!this.me) throw new CoreError("no_account");
    return this.me;
  }

  /** After registering or linking: log in again as the new device, and wait until its prekeys are out. */
  private async becomeDevice(): Promise<void> {
    this.me = await loadMe(this.store);
    const settled = new Promise<void>((resolve) => this.loggedIn.push(resolve));
    this.transport.reconnect();
    await settled;
  }

  /** Runs on every (re)connect: logs in as this device, before any other request goes out. */
  private async opened(request: (type: string, fields?: Frame) => Promise<Frame>, hello: Hello | null): Promise<void> {
    if (!this.me) return;
    try {
      await deviceLogin(request, hello, this.me);
    } catch (error) {
      // The connection is dropped and tried again; the user learns why it does not come up.
      const reason = asCoreError(error);
      const transient = ["disconnected", "timeout", "stopped"].includes(reason.code);
      if (!transient && reason.code !== this.loginFailure) this.emit({ type: "notice", text: reason.message });
      this.loginFailure = reason.code;
      throw error;
    }
    this.loginFailure = null;
    void this.exclusive(async (ctx) => {
      try {
        await maintainPrekeys(ctx);
      } finally {
        const waiting = this.loggedIn;
        this.loggedIn = [];
        waiting.forEach((wake) => wake());
      }
      await this.drain(ctx);
    }).catch((error) => this.emit({ type: "notice", text: asCoreError(error).message }));
  }

  /** Fetches the whole queue, opening and acknowledging page by page; kept-back messages stay. */
  private async drain(ctx: Context): Promise<void> {
    await drainQueue(ctx, (text) => this.warn(text));
  }

  private pushed(frame: Frame): void {
    if (frame.type === "message") {
      if (!wellFormedDelivery(frame)) return this.warn("The server sent a message that is not well formed; it was ignored.");
      void this.exclusive(async (ctx) => {
        const outcome = await receive(ctx, frame);
        if (outcome.verdict === "ack") await ctx.request("ack", { ids: [frame.id] });
        if (outcome.setUp) await maintainPrekeys(ctx);
      }).catch((error) => console.warn("Carrier: a pushed message was not taken", error));
    } else if (frame.type === "broadcast") {
      if (!wellFormedBroadcast(frame)) return this.warn("The server sent a broadcast that is not well formed; it was ignored.");
      void this.exclusive((ctx) => this.takeBroadcast(ctx, frame)).catch((error) => console.warn("Carrier: a broadcast was not taken", error));
    } else if (frame.type === "error") {
      // An error tied to no request is a warning (PROTOCOL.md §4); the connection carries on or comes back.
      const said = typeof frame.message === "string" ? frame.message.slice(0, 300) : String(frame.code ?? "");
      this.warn(`The server reported a problem: ${said}`);
    }
  }

  /** Tells the page once per distinct sentence in a row, so a server repeating itself does not flood it. */
  private warn(text: string): void {
    if (text === this.lastWarning) return;
    this.lastWarning = text;
    this.emit({ type: "warning", text });
  }

  /** Shows a broadcast whose signature verifies under its author's pinned key (pinned now on first sight). */
  private async takeBroadcast(ctx: Context, b: BroadcastFrame): Promise<void> {
    const from = b.from;
    const contact = await ctx.store.contact(from);
    const spki = contact ? (contact.pendingSpki ? null : contact.spki) : (await lookUp(ctx, from)).spki;
    if (!spki) return;
    const statement = broadcastStatement(fromHex(b.id), b.sent_at, from, b.text);
    if (!(await verifyAccountSignature(await importAccountKey(spki), statement, fromBase64(b.signature)))) {
      this.warn(`A broadcast said to be from ${isolate(from)} is not signed by their key; it is not shown.`);
      return;
    }
    const receivedAt = Date.now();
    const record = { id: b.id.toLowerCase(), from, text: b.text, sentAt: shownTime(b.sent_at, receivedAt), receivedAt, own: false };
    if (await ctx.store.addBroadcast(record)) ctx.emit({ type: "broadcasts" });
  }

  /** Runs protocol work one piece at a time, on the open connection. */
  private exclusive<T>(work: (ctx: Context) => Promise<T>): Promise<T> {
    const run = this.queue.then(() => {
      const ctx: Context = {
        store: this.store,
        me: this.requireMe(),
        request: (type, fields) => this.transport.request(type, fields),
        emit: (event) => this.emit(event),
      };
      return work(ctx);
    });
    this.queue = run.catch(() => undefined);
    return run;
  }
}
