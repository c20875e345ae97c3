/**
 * What every part of the protocol v2 core works with: this browser's device,
 * the store, the way to ask the server, and the page's event stream.
 */
import { toHex, type Bytes } from "../../crypto/bytes";
import type { KeyType } from "../../crypto/account";
import type { Store } from "../../storage/store";
import type { Frame } from "../../transport/connection";
import type { CoreEvent } from "../api";
import { CoreError } from "../errors";

/** This browser as a device of its account, with its keys as non-extractable CryptoKeys. */
export interface Me {
  phone: string;
  deviceId: number;
  sign: CryptoKey;
  agree: CryptoKey;
  point: Bytes;
  accountSpki: Bytes;
  accountType: KeyType;
  /** The account key; absent when another device kept it. */
  accountSign?: CryptoKey;
}

export interface Context {
  store: Store;
  request: (type: string, fields?: Frame) => Promise<Frame>;
  me: Me;
  emit(event: CoreEvent): void;
}

/** Loads this browser's device from the store, or null before registration or linking. */
export async function loadMe(store: Store): Promise<Me | null> {
  const account = await store.account();
  const device = await store.key("device");
  const accountKey = await store.key("account");
  if (!account || !device?.sign || !device.agree || !device.point || !accountKey?.spki) return null;
  return {
    phone: account.phone,
    deviceId: account.deviceId,
    sign: device.sign,
    agree: device.agree,
    point: device.point,
    accountSpki: accountKey.spki,
    accountType: account.keyType,
    accountSign: accountKey.sign,
  };
}

/** A new message id: the clock in ms as 6 bytes, then 10 random bytes (PROTOCOL.md §1). */
export function newMessageId(now = Date.now()): string {
  const out = new Uint8Array(16);
  let t = now;
  for (let i = 5; i >= 0; i--, t = Math.floor(t / 256)) out[i] = t & 0xff;
  out.set(crypto.getRandomValues(new Uint8Array(10)), 6);
  return toHex(out);
}

/** A string field of a server frame, or a protocol error. */
export function text(frame: Frame, name: string): string {
  const value = frame[name];
  if (typeof value !== "string") throw new CoreError("internal", `The server's answer lacks ${name}.`);
  return value;
}
