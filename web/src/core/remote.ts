/**
 * The core that speaks to a real Carrier server over its WebSocket (`/ws`).
 *
 * In this first stage it owns the connection (with reconnection) and the stored
 * account and history; the protocol v2 operations (registration proof over
 * WebSocket, device keys and prekeys, PQXDH sessions, the ratchet) plug in here
 * once the server's endpoint and the login binding are specified, and until then
 * answer with a clear error rather than pretending.
 */
import type { Store } from "../storage/store";
import { Transport } from "../transport/connection";
import type { Account, ClientCore } from "./api";
import { CoreError } from "./errors";
import { StoredCore } from "./stored";

async function notYet(): Promise<never> {
  throw new CoreError("unsupported", "This version of the browser client cannot do that with a server yet.");
}

/** The WebSocket address on the page's own server: ws:// beside http://, wss:// beside https://. */
export function socketUrl(location: Location): string {
  return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
}

export class RemoteCore extends StoredCore implements ClientCore {
  private readonly transport: Transport;

  constructor(store: Store, url: string) {
    super(store);
    this.transport = new Transport({ url, onState: (state) => this.emit({ type: "connection", state }) });
  }

  async resume(): Promise<Account | null> {
    this.transport.start();
    return this.storedAccount();
  }

  // Protocol v2 over the server's /ws plugs in here (see the module comment).
  requestCode = notYet;
  register = notYet;
  link = notYet;
  startConversation = notYet;
  send = notYet;
  trust = notYet;
  safetyNumber = notYet;
  broadcast = notYet;
}
