/**
 * The browser's database: one IndexedDB database per account holder, with the
 * object stores below. IndexedDB stores CryptoKey objects by structured clone,
 * non-extractable ones included, so private keys are kept without ever being
 * exported. Each operation that must be atomic (a message and its conversation's
 * counters, a session and the prekey it used) runs in one transaction.
 */

export const DB_VERSION = 1;

/** Object stores and their primary keys. */
export const STORES = {
  /** The account held here (one record, key "me"). */
  account: { keyPath: "id" },
  /** Private keys as CryptoKey objects, by role ("account", "device"); v2 prekeys join here. */
  keys: { keyPath: "name" },
  /** Contacts: pinned account key, a pending new key, known devices and list version. */
  contacts: { keyPath: "phone" },
  /** Protocol sessions, opaque to storage, per (peer phone, peer device, session id). */
  sessions: { keyPath: ["peer", "device", "id"] },
  /** Every message shown, per (conversation, direction, message id). */
  messages: { keyPath: ["peer", "direction", "id"] },
  /** One row per conversation: last message and unread count. */
  conversations: { keyPath: "peer" },
  /** Public broadcasts received or sent. */
  broadcasts: { keyPath: "id" },
} as const;

export type StoreName = keyof typeof STORES;

function upgrade(db: IDBDatabase, tx: IDBTransaction): void {
  for (const [name, options] of Object.entries(STORES)) {
    if (!db.objectStoreNames.contains(name)) db.createObjectStore(name, options as IDBObjectStoreParameters);
  }
  const messages = tx.objectStore("messages");
  if (!messages.indexNames.contains("byTime")) messages.createIndex("byTime", ["peer", "sentAt"]);
  const sessions = tx.objectStore("sessions");
  if (!sessions.indexNames.contains("byPeer")) sessions.createIndex("byPeer", "peer");
}

export function openDatabase(name: string, factory: IDBFactory = indexedDB): Promise<IDBDatabase> {
  return new Promise((resolve, reject) => {
    const request = factory.open(name, DB_VERSION);
    request.onupgradeneeded = () => upgrade(request.result, request.transaction!);
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error ?? new Error("could not open the browser database"));
    request.onblocked = () => reject(new Error("Carrier is open in another tab with an older version; close it and reload."));
  });
}

export function promised<T>(request: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

/** Runs `work` in one transaction and resolves with its result once the transaction has committed. */
export function transact<T>(
  db: IDBDatabase,
  names: StoreName[],
  mode: IDBTransactionMode,
  work: (tx: IDBTransaction) => Promise<T> | T,
): Promise<T> {
  return new Promise((resolve, reject) => {
    const tx = db.transaction(names, mode, { durability: "strict" } as IDBTransactionOptions);
    let result: T;
    tx.oncomplete = () => resolve(result);
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error ?? new Error("the browser database transaction was aborted"));
    Promise.resolve(work(tx)).then(
      (value) => {
        result = value;
      },
      (error) => {
        try {
          tx.abort();
        } catch {
          /* already finished */
        }
        reject(error);
      },
    );
  });
}
