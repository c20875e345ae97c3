/**
 * What every core shares: the page's reads come straight from the store, and
 * events fan out to the page. The protocol parts are each core's own.
 */
import type { Store } from "../storage/store";
import { Emitter, type Account, type ContactView, type CoreEvent } from "./api";

export abstract class StoredCore {
  protected readonly events = new Emitter();

  constructor(protected readonly store: Store) {}

  subscribe(listener: (event: CoreEvent) => void): () => void {
    return this.events.subscribe(listener);
  }
  async contact(phone: string): Promise<ContactView | undefined> {
    const c = await this.store.contact(phone);
    return c && { phone: c.phone, fingerprint: c.fingerprint, keyChanged: c.pendingSpki !== undefined };
  }
  conversations() {
    return this.store.conversations();
  }
  history(peer: string) {
    return this.store.history(peer);
  }
  markRead(peer: string) {
    return this.store.markRead(peer);
  }
  broadcasts() {
    return this.store.broadcasts();
  }

  protected async storedAccount(): Promise<Account | null> {
    const stored = await this.store.account();
    return stored ? { phone: stored.phone, deviceId: stored.deviceId, fingerprint: stored.fingerprint } : null;
  }

  protected emit(event: CoreEvent): void {
    this.events.emit(event);
  }
}
