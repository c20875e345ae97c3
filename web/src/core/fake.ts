/**
 * An in-memory stand-in for the protocol core, for tests and `npm run dev` only:
 * the production build never includes it (src/main.ts loads it only in the `fake`
 * build mode). It plays the server and the other users, so the page and its
 * end-to-end tests run before the server's WebSocket exists.
 *
 * What it keeps real: this browser's account and device keys (WebCrypto,
 * non-extractable, in IndexedDB), history, contacts and pins in the real store,
 * safety numbers from the real computation. What it fakes: the network, other
 * users' keys (stable fake bytes per phone and key generation), and encryption.
 */
import { concat, randomBytes, toHex, utf8, type Bytes } from "../crypto/bytes";
import { fingerprint, generateDeviceKey, generateSigningKey, P256_SPKI_PREFIX, spkiFromPoint } from "../crypto/p256";
import { sha256 } from "../crypto/symmetric";
import { safetyNumber } from "../protocol/safety_number";
import type { ContactRecord, Store } from "../storage/store";
import type { Account, ClientCore } from "./api";
import { CoreError, describe } from "./errors";
import { canonicalPhone } from "./phone";
import { StoredCore } from "./stored";

/** Numbers the fake server knows from the start, besides whoever registers. */
export const FAKE_DIRECTORY = ["+12025550102", "+12025550103", "+12025550104", "+447700900123"];

/** Handles for tests and dev mode to play the other side (exposed as `window.carrierFake`). */
export interface FakeControls {
  /** The code the server would print on its console for this phone. */
  lastCode(phone: string): string | undefined;
  /** A link code for an existing account, as `carrier devices add` prints it. */
  linkCode(phone: string): string;
  addUser(phone: string): void;
  deliver(from: string, text: string, sentAt?: number): Promise<void>;
  changeKey(phone: string): Promise<void>;
  broadcastFrom(from: string, text: string): Promise<void>;
  setOnline(online: boolean): void;
  sent(): { to: string; text: string }[];
}

const WORLD_KEY = "carrier-fake-world";

interface WorldState {
  users: string[];
  generations: Record<string, number>;
}

function loadWorld(): WorldState {
  const saved = globalThis.localStorage?.getItem(WORLD_KEY);
  return saved ? (JSON.parse(saved) as WorldState) : { users: [...FAKE_DIRECTORY], generations: {} };
}

function newMessageId(): string {
  const time = new Uint8Array(8);
  new DataView(time.buffer).setBigUint64(0, BigInt(Date.now()));
  return toHex(concat(time.subarray(2), randomBytes(10)));
}

/** The server's default window for codes and wrong tries (`[otp] window_secs`). */
const CODE_WINDOW_MS = 60 * 60_000;

export class FakeCore extends StoredCore implements ClientCore {
  private readonly world = loadWorld();
  private readonly codes = new Map<string, string>();
  /** Wrong tries left for each phone, counted across its codes as the server counts them in its window; at 0 no code is issued or taken. */
  private readonly triesLeft = new Map<string, number>();
  /** When each phone's window began (its first code), so a spent code says, as the server does, when a new one can be had. */
  private readonly windowStart = new Map<string, number>();
  private readonly linkCodes = new Map<string, string>();
  private readonly held = new Map<string, { text: string; sentAt: number }[]>();
  private readonly outbox: { to: string; text: string }[] = [];
  private account: Account | null = null;
  private online = true;


  readonly controls: FakeControls = {
    lastCode: (phone) => this.codes.get(canonicalPhone(phone)),
    linkCode: (phone) => {
      const code = Array.from(randomBytes(16), (b) => "abcdefghijklmnopqrstuvwxyz234567"[b & 31]).join("").slice(0, 26);
      const shown = code.match(/.{1,5}/g)!.join("-");
      this.linkCodes.set(canonicalPhone(phone), shown);
      this.addUser(phone);
      return shown;
    },
    addUser: (phone) => this.addUser(phone),
    deliver: (from, text, sentAt = Date.now()) => this.receive(canonicalPhone(from), text, sentAt),
    changeKey: (phone) => this.changeKey(canonicalPhone(phone)),
    broadcastFrom: async (from, text) => {
      const record = { id: newMessageId(), from: canonicalPhone(from), text, sentAt: Date.now(), receivedAt: Date.now(), own: false };
      if (await this.store.addBroadcast(record)) this.emit({ type: "broadcasts" });
    },
    setOnline: (online) => {
      this.online = online;
      this.emit({ type: "connection", state: online ? { state: "open" } : { state: "waiting", attempt: 1, retryInMs: 1000 } });
    },
    sent: () => [...this.outbox],
  };

  async resume(): Promise<Account | null> {
    this.account = await this.storedAccount();
    this.emit({ type: "connection", state: { state: "open" } });
    return this.account;
  }

  async requestCode(typed: string): Promise<string> {
    const phone = canonicalPhone(typed);
    this.requireOnline();
    this.endWindowIfPassed(phone);
    if (this.triesLeft.get(phone) === 0) throw this.codeDead(phone);
    const code = String(crypto.getRandomValues(new Uint32Array(1))[0] % 1_000_000).padStart(6, "0");
    this.codes.set(phone, code);
    if (!this.triesLeft.has(phone)) {
      this.triesLeft.set(phone, 5);
      this.windowStart.set(phone, Date.now());
    }
    console.info(`OTP for ${phone}: ${code}`);
    return phone;
  }

  async register(typed: string, code: string): Promise<Account> {
    const phone = canonicalPhone(typed);
    this.requireOnline();
    const expected = this.codes.get(phone);
    this.endWindowIfPassed(phone);
    if (this.triesLeft.get(phone) === 0) throw this.codeDead(phone);
    if (!expected) throw new CoreError("no_pending_code");
    if (!/^\d{6}$/.test(code.trim())) throw new CoreError("wrong_code");
    if (code.trim() !== expected) {
      const triesLeft = this.triesLeft.get(phone)! - 1;
      this.triesLeft.set(phone, triesLeft);
      if (triesLeft === 0) {
        this.codes.delete(phone);
        const details = { triesLeft, retryAfterMs: this.retryAfterMs(phone) };
        throw new CoreError("wrong_code", describe("wrong_code", details), details);
      }
      throw new CoreError("wrong_code", describe("wrong_code", { triesLeft }), { triesLeft });
    }
    this.codes.delete(phone);
    this.triesLeft.delete(phone);
    this.windowStart.delete(phone);
    const accountKey = await generateSigningKey();
    const spki = spkiFromPoint(accountKey.point);
    return this.settle(phone, 1, spki, [{ name: "account", sign: accountKey.sign, point: accountKey.point, spki, createdAt: Date.now() }]);
  }

  /** The milliseconds until the phone's window ends, in whole seconds plus one, as the server counts them. */
  private retryAfterMs(phone: string): number {
    const left = Math.max(0, (this.windowStart.get(phone) ?? Date.now()) + CODE_WINDOW_MS - Date.now());
    return (Math.floor(left / 1000) + 1) * 1000;
  }

  private codeDead(phone: string): CoreError {
    const details = { retryAfterMs: this.retryAfterMs(phone) };
    return new CoreError("code_dead", describe("code_dead", details), details);
  }

  /** A passed window forgets the phone's spent tries, as the server's does. */
  private endWindowIfPassed(phone: string): void {
    const start = this.windowStart.get(phone);
    if (start !== undefined && Date.now() - start >= CODE_WINDOW_MS) {
      this.triesLeft.delete(phone);
      this.windowStart.delete(phone);
    }
  }

  async link(typed: string, linkCode: string, _deviceName: string): Promise<Account> {
    const phone = canonicalPhone(typed);
    this.requireOnline();
    if (!linkCode.trim() || this.linkCodes.get(phone) !== linkCode.trim().toLowerCase()) throw new CoreError("no_link");
    this.linkCodes.delete(phone);
    // The account key stays on the device that made the code; this browser learns its public half.
    return this.settle(phone, 2, await this.userKey(phone), [{ name: "account", spki: await this.userKey(phone), createdAt: Date.now() }]);
  }

  private async settle(phone: string, deviceId: number, accountSpki: Bytes, keys: Parameters<Store["saveAccount"]>[1]): Promise<Account> {
    const device = await generateDeviceKey();
    const account = { phone, deviceId, fingerprint: await fingerprint(accountSpki) };
    keys.push({ name: "device", sign: device.sign, agree: device.agree, point: device.point, createdAt: Date.now() });
    await this.store.saveAccount({ id: "me", keyType: "p256", createdAt: Date.now(), ...account }, keys);
    this.addUser(phone);
    this.account = account;
    return account;
  }

  async startConversation(typed: string): Promise<string> {
    const phone = canonicalPhone(typed);
    this.requireOnline();
    if (!this.world.users.includes(phone)) throw new CoreError("unknown_user");
    await this.pin(phone);
    await this.store.openConversation(phone);
    this.emit({ type: "conversation", peer: phone });
    return phone;
  }

  async send(peer: string, text: string): Promise<void> {
    if (!text.trim()) throw new CoreError("empty");
    if (utf8(text).length > 65_536) throw new CoreError("message_too_large");
    const contact = await this.pin(peer);
    if (contact.pendingSpki) throw new CoreError("key_changed");
    const id = newMessageId();
    const now = Date.now();
    await this.store.addMessage({ peer, direction: "out", id, text, sentAt: now, receivedAt: now, status: "sending" });
    this.emit({ type: "conversation", peer });
    if (!this.online) {
      await this.store.setStatus(peer, id, "failed");
      this.emit({ type: "conversation", peer });
      throw new CoreError("unreachable");
    }
    this.outbox.push({ to: peer, text });
    await this.store.setStatus(peer, id, "sent");
    this.emit({ type: "conversation", peer });
    if (peer === this.account?.phone) await this.receive(peer, text, now);
  }

  async trust(peer: string): Promise<void> {
    const contact = await this.store.contact(peer);
    if (!contact?.pendingSpki) return;
    await this.store.saveContact({ ...contact, spki: contact.pendingSpki, fingerprint: contact.pendingFingerprint!, pendingSpki: undefined, pendingFingerprint: undefined });
    this.emit({ type: "contact", phone: peer });
    const held = this.held.get(peer) ?? [];
    this.held.delete(peer);
    for (const message of held) await this.receive(peer, message.text, message.sentAt);
  }

  async safetyNumber(peer: string): Promise<string> {
    const own = await this.store.key("account");
    const contact = await this.store.contact(peer);
    if (!own?.spki || !contact || !this.account) throw new CoreError("unknown_user");
    return safetyNumber(this.account.phone, own.spki, peer, contact.pendingSpki ?? contact.spki);
  }

  async broadcast(text: string): Promise<void> {
    if (!text.trim()) throw new CoreError("empty");
    this.requireOnline();
    const now = Date.now();
    await this.store.addBroadcast({ id: newMessageId(), from: this.account!.phone, text, sentAt: now, receivedAt: now, own: true });
    this.emit({ type: "broadcasts" });
  }

  private requireOnline(): void {
    if (!this.online) throw new CoreError("unreachable");
  }

  private addUser(typed: string): void {
    const phone = canonicalPhone(typed);
    if (!this.world.users.includes(phone)) this.world.users.push(phone);
    this.saveWorld();
  }

  private saveWorld(): void {
    globalThis.localStorage?.setItem(WORLD_KEY, JSON.stringify(this.world));
  }

  /** A stand-in account key per phone and generation: fixed bytes, so a reload sees the same key. */
  private async userKey(phone: string): Promise<Bytes> {
    const seed = utf8(`${phone}/${this.world.generations[phone] ?? 0}`);
    return concat(P256_SPKI_PREFIX, Uint8Array.of(4), await sha256(seed), await sha256(concat(seed, seed)));
  }

  /** Trust on first use: the contact's key is pinned the first time it is seen. */
  private async pin(phone: string): Promise<ContactRecord> {
    const existing = await this.store.contact(phone);
    if (existing) return existing;
    const spki = phone === this.account?.phone ? (await this.store.key("account"))!.spki! : await this.userKey(phone);
    const contact: ContactRecord = { phone, spki, fingerprint: await fingerprint(spki), listVersion: 1, devices: [] };
    await this.store.saveContact(contact);
    return contact;
  }

  private async receive(from: string, text: string, sentAt: number): Promise<void> {
    const contact = await this.pin(from);
    if (contact.pendingSpki) {
      // As the real client keeps such messages on the server: not shown, not acknowledged.
      this.held.set(from, [...(this.held.get(from) ?? []), { text, sentAt }]);
      return;
    }
    const id = newMessageId();
    await this.store.addMessage({ peer: from, direction: "in", id, text, sentAt, receivedAt: Date.now(), status: "received" });
    this.emit({ type: "conversation", peer: from });
  }

  private async changeKey(phone: string): Promise<void> {
    this.world.generations[phone] = (this.world.generations[phone] ?? 0) + 1;
    this.saveWorld();
    const contact = await this.store.contact(phone);
    if (!contact) return;
    const spki = await this.userKey(phone);
    await this.store.saveContact({ ...contact, pendingSpki: spki, pendingFingerprint: await fingerprint(spki) });
    this.emit({ type: "contact", phone });
  }
}
