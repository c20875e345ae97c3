/**
 * Notices a device's own server queues for it (src/protocol/notice.rs),
 * delivered like messages but not envelopes: the bytes start with NOTICE_TAG, a
 * first byte no envelope has, and the rest is one JSON object. Nobody signs a
 * notice; it is believed only under this account's own number with no sending
 * device, which only the server can give a delivery (a peer's copy always
 * carries the device that sent it).
 */

/** The first byte of a notice's bytes. */
export const NOTICE_TAG = 0;

/** Longest reason a notice carries, in UTF-8 bytes. */
export const MAX_REASON_BYTES = 1024;

/** One copy of a message this device sent that the recipient's home server refused: it will never be delivered. */
export interface Undeliverable {
  type: "undeliverable";
  /** The refused message's id, lower-case hex. */
  id: string;
  /** The message's recipient. */
  to: string;
  /** The recipient's device whose copy was refused. */
  device: number;
  /** The refusal's error code. */
  code: string;
  /** The refusing server's reason, for people. */
  reason: string;
}

const MESSAGE_ID = /^[0-9a-fA-F]{32}$/;
const PHONE = /^\+[1-9][0-9]{1,14}$/;
const ERROR_CODE = /^[a-z][a-z0-9_]{0,63}$/;

/** Whether delivered bytes are a notice (good or bad) rather than an envelope. */
export function isNotice(bytes: Uint8Array): boolean {
  return bytes[0] === NOTICE_TAG;
}

/** The notice in delivered bytes, or null for bytes that are not one this client knows, in every field. */
export function parseNotice(bytes: Uint8Array): Undeliverable | null {
  if (!isNotice(bytes)) return null;
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(1)));
  } catch {
    return null;
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) return null;
  const n = value as Record<string, unknown>;
  if (n.type !== "undeliverable") return null;
  if (typeof n.id !== "string" || !MESSAGE_ID.test(n.id)) return null;
  if (typeof n.to !== "string" || !PHONE.test(n.to)) return null;
  if (typeof n.device !== "number" || !Number.isSafeInteger(n.device) || n.device < 1 || n.device > 0xffff_ffff) return null;
  if (typeof n.code !== "string" || !ERROR_CODE.test(n.code)) return null;
  if (typeof n.reason !== "string" || new TextEncoder().encode(n.reason).length > MAX_REASON_BYTES) return null;
  return { type: "undeliverable", id: n.id.toLowerCase(), to: n.to, device: n.device, code: n.code, reason: n.reason };
}
