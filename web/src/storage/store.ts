/**
 * What the client keeps across reloads, as typed records over the database of
 * ./db.ts. The protocol core writes here before it acknowledges or sends
 * anything (PROTOCOL.md §15), so a tab closed at any moment loses nothing.
 */
import type { KeyType } from "../crypto/account";
import type { Bytes } from "../crypto/bytes";
import { openDatabase, promised, transact, type StoreName } from "./db";

export interface AccountRecord {
  id: "me";
  phone: string;
  deviceId: number;
  keyType: KeyType;
  /** The account key's fingerprint (hex), as `whoami` shows it. */
  fingerprint: string;
  createdAt: number;
}

/** Private keys, held as CryptoKey objects (non-extractable where WebCrypto allows). */
export interface KeyRecord {
  name: string;
  sign?: CryptoKey;
  agree?: CryptoKey;
  /** ML-KEM decapsulation seed: WebCrypto has no ML-KEM, so this one is bytes. */
  seed?: Bytes;
  point?: Bytes;
  spki?: Bytes;
  createdAt: number;
  /** Prekeys (names `prekey:<id>`): the kind and id of PROTOCOL §9.8, the public key, and when it was replaced. */
  kind?: number;
  id?: number;
  publicKey?: Bytes;
  replacedAt?: number;
  /** Signed prekeys: SHA-256 (hex) of the base keys of set-ups that used no one-time key (PROTOCOL §10.4). */
  seenBaseKeys?: string[];
  /** The prekey counter (name `prekey-next`): the next id to give out. */
  next?: number;
}

export interface ContactRecord {
  phone: string;
  /** The pinned account key (SPKI DER) and its fingerprint. */
  spki: Bytes;
  fingerprint: string;
  /** A different key the server now reports; nothing is sent or shown until it is trusted. */
  pendingSpki?: Bytes;
  pendingFingerprint?: string;
  /** Highest device-list version accepted (PROTOCOL.md §9.7). */
  listVersion: number;
  devices: { id: number; name: string; point: Bytes }[];
}

export type Direction = "in" | "out";
export type MessageStatus = "sending" | "sent" | "failed" | "received";

export interface MessageRecord {
  peer: string;
  direction: Direction;
  id: string;
  text: string;
  sentAt: number;
  receivedAt: number;
  status: MessageStatus;
  /** Copies the recipient's home server refused, one per device at most: they will never be delivered. */
  undelivered?: Refusal[];
}

/** A refused copy of a sent message, as the sending device's own server told it. */
export interface Refusal {
  device: number;
  code: string;
  reason: string;
}

export interface ConversationRecord {
  peer: string;
  lastText: string;
  lastAt: number;
  lastDirection: Direction | null;
  unread: number;
}

export interface BroadcastRecord {
  id: string;
  from: string;
  text: string;
  sentAt: number;
  receivedAt: number;
  own: boolean;
}

/** Protocol session state: opaque here, owned by the protocol core. */
export interface SessionRecord {
  peer: string;
  device: number;
  id: string;
  usedAt: number;
  /** When a message was last opened in it (0: never) and when it was set up: the newest opened one is sent in. */
  openedAt?: number;
  createdAt?: number;
  state: unknown;
}

/** What a set-up used up: one-time prekeys to delete, or a base key to remember (names and hex digests). */
export interface PrekeysUsed {
  remove: string[];
  remember?: { signedPrekey: string; baseKey: string };
}

export const MAX_BROADCASTS = 500;

const get = <T>(tx: IDBTransaction, store: StoreName, key: IDBValidKey) =>
  promised(tx.objectStore(store).get(key)) as Promise<T | undefined>;
const put = (tx: IDBTransaction, store: StoreName, value: unknown) => promised(tx.objectStore(store).put(value));

/** Sessions kept per peer device (PROTOCOL §14.6); the least recently used go first. */
export const MAX_SESSIONS_PER_DEVICE = 4;

async function pruneSessions(tx: IDBTransaction, saved: SessionRecord): Promise<void> {
  const store = tx.objectStore("sessions");
  const all = (await promised(store.index("byPeer").getAll(saved.peer))) as SessionRecord[];
  const mine = all.filter((s) => s.device === saved.device).sort((a, b) => b.usedAt - a.usedAt);
  for (const old of mine.slice(MAX_SESSIONS_PER_DEVICE)) await promised(store.delete([old.peer, old.device, old.id]));
}

/** Adds a message and updates its conversation inside `tx`; false if the message is there already. */
async function addMessageIn(tx: IDBTransaction, message: MessageRecord, read: boolean): Promise<boolean> {
  const key = [message.peer, message.direction, message.id];
  if (await get(tx, "messages", key)) return false;
  await put(tx, "messages", message);
  const row = (await get<ConversationRecord>(tx, "conversations", message.peer)) ?? {
    peer: message.peer,
    lastText: "",
    lastAt: 0,
    lastDirection: null,
    unread: 0,
  };
  if (message.sentAt >= row.lastAt || row.lastDirection === null) {
    Object.assign(row, { lastText: message.text, lastAt: message.sentAt, lastDirection: message.direction });
  }
  if (message.direction === "in" && !read) row.unread += 1;
  await put(tx, "conversations", row);
  return true;
}

export class Store {
  private constructor(private readonly db: IDBDatabase) {}

  static async open(name = "carrier", factory?: IDBFactory): Promise<Store> {
    return new Store(await openDatabase(name, factory));
  }

  close(): void {
    this.db.close();
  }

  account(): Promise<AccountRecord | undefined> {
    return this.read("account", (tx) => get<AccountRecord>(tx, "account", "me"));
  }

  /** Saves the account together with its keys, so neither exists without the other. */
  saveAccount(account: AccountRecord, keys: KeyRecord[]): Promise<void> {
    return transact(this.db, ["account", "keys"], "readwrite", async (tx) => {
      for (const key of keys) await put(tx, "keys", key);
      await put(tx, "account", account);
    });
  }

  key(name: string): Promise<KeyRecord | undefined> {
    return this.read("keys", (tx) => get<KeyRecord>(tx, "keys", name));
  }

  /** Keys whose names start with `prefix`. */
  keys(prefix: string): Promise<KeyRecord[]> {
    const range = IDBKeyRange.bound(prefix, prefix + "\uffff");
    return this.read("keys", (tx) => promised(tx.objectStore("keys").getAll(range)) as Promise<KeyRecord[]>);
  }

  /** Saves and deletes keys in one transaction. */
  saveKeys(keys: KeyRecord[], remove: string[] = []): Promise<void> {
    return transact(this.db, ["keys"], "readwrite", async (tx) => {
      for (const key of keys) await put(tx, "keys", key);
      for (const name of remove) await promised(tx.objectStore("keys").delete(name));
    });
  }

  hasMessage(peer: string, direction: Direction, id: string): Promise<boolean> {
    return this.read("messages", async (tx) => (await get(tx, "messages", [peer, direction, id])) !== undefined);
  }

  /**
   * What opening one message changes, in one transaction (PROTOCOL §15): the
   * session, the one-time prekeys it used up (or the base key to remember on its
   * signed prekey when it used none), and the message with its conversation.
   * Resolves with whether the message was new.
   */
  commitReceived(session: SessionRecord, used: PrekeysUsed, message: MessageRecord | null, read = false): Promise<boolean> {
    return transact(this.db, ["sessions", "keys", "messages", "conversations"], "readwrite", async (tx) => {
      await put(tx, "sessions", session);
      await pruneSessions(tx, session);
      for (const name of used.remove) await promised(tx.objectStore("keys").delete(name));
      if (used.remember) {
        const signed = await get<KeyRecord>(tx, "keys", used.remember.signedPrekey);
        if (signed) await put(tx, "keys", { ...signed, seenBaseKeys: [...(signed.seenBaseKeys ?? []), used.remember.baseKey] });
      }
      return message ? addMessageIn(tx, message, read) : false;
    });
  }

  /** Forgets every session with `peer` (after their account key changed). */
  deleteSessions(peer: string): Promise<void> {
    return transact(this.db, ["sessions"], "readwrite", async (tx) => {
      const keys = await promised(tx.objectStore("sessions").index("byPeer").getAllKeys(peer));
      for (const key of keys) await promised(tx.objectStore("sessions").delete(key));
    });
  }

  contact(phone: string): Promise<ContactRecord | undefined> {
    return this.read("contacts", (tx) => get<ContactRecord>(tx, "contacts", phone));
  }

  saveContact(contact: ContactRecord): Promise<void> {
    return transact(this.db, ["contacts"], "readwrite", async (tx) => void (await put(tx, "contacts", contact)));
  }

  sessions(peer: string): Promise<SessionRecord[]> {
    return this.read("sessions", (tx) => promised(tx.objectStore("sessions").index("byPeer").getAll(peer)));
  }

  saveSession(session: SessionRecord): Promise<void> {
    return transact(this.db, ["sessions"], "readwrite", async (tx) => {
      await put(tx, "sessions", session);
      await pruneSessions(tx, session);
    });
  }

  /** Makes sure a conversation row exists, e.g. when the user starts one. */
  openConversation(peer: string): Promise<void> {
    return transact(this.db, ["conversations"], "readwrite", async (tx) => {
      if (!(await get(tx, "conversations", peer))) {
        await put(tx, "conversations", { peer, lastText: "", lastAt: Date.now(), lastDirection: null, unread: 0 });
      }
    });
  }

  /**
   * Adds a message and updates its conversation in one transaction. Returns false,
   * changing nothing, if a message with this id is already there (a redelivery).
   * Incoming messages count as unread unless `read` says the user is looking.
   */
  addMessage(message: MessageRecord, read = false): Promise<boolean> {
    return transact(this.db, ["messages", "conversations"], "readwrite", (tx) => addMessageIn(tx, message, read));
  }

  setStatus(peer: string, id: string, status: MessageStatus): Promise<void> {
    return transact(this.db, ["messages"], "readwrite", async (tx) => {
      const message = await get<MessageRecord>(tx, "messages", [peer, "out", id]);
      if (message) await put(tx, "messages", { ...message, status });
    });
  }

  /**
   * Records that one device's copy of a sent message was refused (a later word
   * on the same device replaces the earlier). Resolves with whether the message
   * is in the conversation with `peer`.
   */
  markUndelivered(peer: string, id: string, refusal: Refusal): Promise<boolean> {
    return transact(this.db, ["messages"], "readwrite", async (tx) => {
      const message = await get<MessageRecord>(tx, "messages", [peer, "out", id]);
      if (!message) return false;
      const others = (message.undelivered ?? []).filter((r) => r.device !== refusal.device);
      await put(tx, "messages", { ...message, undelivered: [...others, refusal].sort((a, b) => a.device - b.device) });
      return true;
    });
  }

  /** A conversation's messages, oldest first. */
  history(peer: string): Promise<MessageRecord[]> {
    const range = IDBKeyRange.bound([peer, -Infinity], [peer, Infinity]);
    return this.read("messages", (tx) => promised(tx.objectStore("messages").index("byTime").getAll(range)));
  }

  /** Conversations, most recent first. */
  async conversations(): Promise<ConversationRecord[]> {
    const rows = await this.read("conversations", (tx) => promised(tx.objectStore("conversations").getAll()));
    return (rows as ConversationRecord[]).sort((a, b) => b.lastAt - a.lastAt || a.peer.localeCompare(b.peer));
  }

  markRead(peer: string): Promise<void> {
    return transact(this.db, ["conversations"], "readwrite", async (tx) => {
      const row = await get<ConversationRecord>(tx, "conversations", peer);
      if (row && row.unread !== 0) await put(tx, "conversations", { ...row, unread: 0 });
    });
  }

  /** Keeps a broadcast unless its id was seen; only the newest MAX_BROADCASTS are kept. */
  addBroadcast(broadcast: BroadcastRecord): Promise<boolean> {
    return transact(this.db, ["broadcasts"], "readwrite", async (tx) => {
      const store = tx.objectStore("broadcasts");
      if (await get(tx, "broadcasts", broadcast.id)) return false;
      await put(tx, "broadcasts", broadcast);
      if ((await promised(store.count())) <= MAX_BROADCASTS) return true;
      const all = (await promised(store.getAll())) as BroadcastRecord[];
      const excess = all.sort((a, b) => a.receivedAt - b.receivedAt).slice(0, Math.max(0, all.length - MAX_BROADCASTS));
      for (const old of excess) await promised(store.delete(old.id));
      return true;
    });
  }

  /** Broadcasts, oldest first. */
  async broadcasts(): Promise<BroadcastRecord[]> {
    const rows = (await this.read("broadcasts", (tx) => promised(tx.objectStore("broadcasts").getAll()))) as BroadcastRecord[];
    return rows.sort((a, b) => a.receivedAt - b.receivedAt);
  }

  private read<T>(store: StoreName, work: (tx: IDBTransaction) => Promise<T>): Promise<T> {
    return transact(this.db, [store], "readonly", work);
  }
}
