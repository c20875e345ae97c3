/**
 * The seam between the page and the protocol: everything the user interface asks
 * of "Carrier", and everything it is told. The real core (protocol v2 over the
 * server's WebSocket, src/transport/, with state in src/storage/) implements this;
 * so does the in-memory fake (./fake.ts) that drives the page in tests and dev mode.
 *
 * The page reads history and conversations through the core and re-reads them when
 * an event says they changed; it never holds protocol state of its own.
 */
import type { BroadcastRecord, ConversationRecord, MessageRecord, Refusal } from "../storage/store";
import type { ConnectionState } from "../transport/connection";

export type { BroadcastRecord, ConversationRecord, MessageRecord, Refusal, ConnectionState };

export interface Account {
  /** Canonical E.164, as the server returned it. */
  phone: string;
  deviceId: number;
  /** The account key's fingerprint (64 hex characters). */
  fingerprint: string;
}

export interface ContactView {
  phone: string;
  fingerprint: string;
  /** The server reports a different account key: nothing is sent or shown until `trust`. */
  keyChanged: boolean;
}

export type CoreEvent =
  /** A message was added to the conversation with `peer`, or one's status changed. */
  | { type: "conversation"; peer: string }
  /** A contact's key changed, or a changed key was trusted. */
  | { type: "contact"; phone: string }
  | { type: "broadcasts" }
  | { type: "connection"; state: ConnectionState }
  /** Something to tell the user once, e.g. "+1… added a device: laptop". */
  | { type: "notice"; text: string }
  /** Something went wrong that the user should know of, e.g. the server sent what the protocol does not allow. */
  | { type: "warning"; text: string };

export interface ClientCore {
  /** The account stored in this browser (and connects), or null when there is none yet. */
  resume(): Promise<Account | null>;
  /** `register`: the server sends a code out of band; resolves with the canonical phone. */
  requestCode(phone: string): Promise<string>;
  /** `verify` with the code, then sets up this browser as device 1 and publishes its keys. */
  register(phone: string, code: string): Promise<Account>;
  /** Links this browser as a new device of an existing account, with a code from `carrier devices add`. */
  link(phone: string, linkCode: string, deviceName: string): Promise<Account>;

  /** Looks a number up, pins its key on first contact, and opens the conversation; resolves with the canonical phone. */
  startConversation(phone: string): Promise<string>;
  contact(phone: string): Promise<ContactView | undefined>;
  /** Seals and sends to every device of `peer` (and a sync copy to this account's other devices). */
  send(peer: string, text: string): Promise<void>;
  /** Accepts a contact's new key; held messages are then opened and shown. */
  trust(peer: string): Promise<void>;
  /** The 60-digit safety number with `peer`, in 12 groups of 5. */
  safetyNumber(peer: string): Promise<string>;
  broadcast(text: string): Promise<void>;

  conversations(): Promise<ConversationRecord[]>;
  history(peer: string): Promise<MessageRecord[]>;
  markRead(peer: string): Promise<void>;
  broadcasts(): Promise<BroadcastRecord[]>;

  subscribe(listener: (event: CoreEvent) => void): () => void;
}

/**
 * A small event fan-out for cores. The connection's state is a state, not news:
 * a listener that subscribes late is told the current one at once.
 */
export class Emitter {
  private readonly listeners = new Set<(event: CoreEvent) => void>();
  private connection: CoreEvent | null = null;

  subscribe(listener: (event: CoreEvent) => void): () => void {
    this.listeners.add(listener);
    if (this.connection) listener(this.connection);
    return () => this.listeners.delete(listener);
  }

  emit(event: CoreEvent): void {
    if (event.type === "connection") this.connection = event;
    for (const listener of this.listeners) listener(event);
  }
}
