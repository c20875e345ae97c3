/**
 * The Double Ratchet over P-256 (docs/PROTOCOL.md §12), with Signal's deferred
 * generation of ratchet keys: a new key is made when the next message is sent,
 * so opening needs no randomness.
 *
 * The state is a plain object that IndexedDB stores by structured clone (the
 * sending ratchet key stays a non-extractable CryptoKey). Opening works on a copy
 * that replaces the state only if the message decrypts, so a forged, replayed or
 * garbled message changes nothing.
 */
import { toHex, utf8, type Bytes } from "../crypto/bytes";
import { ecdh, generateAgreementKey, type AgreementKey } from "../crypto/p256";
import { hkdf, hmacSha256 } from "../crypto/symmetric";

const ROOT_INFO = utf8("carrier-v2 ratchet");
const MESSAGE_INFO = utf8("carrier-v2 message key");

export const MAX_SKIP = 1000;
export const MAX_SKIPPED_KEYS = 2000;
export const SKIPPED_KEY_LIFETIME_MS = 30 * 24 * 3600 * 1000;

export interface SkippedKey {
  ratchetKey: Bytes;
  n: number;
  messageKey: Bytes;
  storedAt: number;
}

export interface RatchetState {
  root: Bytes;
  dhs: AgreementKey | null;
  dhr: Bytes | null;
  cks: Bytes | null;
  ckr: Bytes | null;
  ns: number;
  nr: number;
  pn: number;
  skipped: SkippedKey[];
}

export interface RatchetHeader {
  ratchetKey: Bytes;
  pn: number;
  n: number;
}

export type RatchetErrorCode = "replay" | "too_far_ahead" | "no_sending_key";

export class RatchetError extends Error {
  constructor(readonly code: RatchetErrorCode) {
    super(`ratchet: ${code.replace(/_/g, " ")}`);
    this.name = "RatchetError";
  }
}

/** Alice starts as if SPK_B were Bob's ratchet key (§12.2). */
export function initiatorState(rootKey: Bytes, peerSignedPrekey: Bytes): RatchetState {
  return { root: rootKey, dhs: null, dhr: peerSignedPrekey, cks: null, ckr: null, ns: 0, nr: 0, pn: 0, skipped: [] };
}

/** Bob holds SPK_B's secret for one receiving step, then no copy of it. */
export function responderState(rootKey: Bytes, signedPrekey: AgreementKey): RatchetState {
  return { root: rootKey, dhs: signedPrekey, dhr: null, cks: null, ckr: null, ns: 0, nr: 0, pn: 0, skipped: [] };
}

async function kdfRoot(root: Bytes, dh: Bytes): Promise<[Bytes, Bytes]> {
  const out = await hkdf(dh, root, ROOT_INFO, 64);
  return [out.slice(0, 32), out.slice(32)];
}

async function kdfChain(chainKey: Bytes): Promise<[Bytes, Bytes]> {
  return [await hmacSha256(chainKey, Uint8Array.of(2)), await hmacSha256(chainKey, Uint8Array.of(1))];
}

/** AES-256 key ‖ 12-byte nonce from a message key; each message key is used once. */
export async function messageEncryption(messageKey: Bytes): Promise<{ key: Bytes; nonce: Bytes }> {
  const out = await hkdf(messageKey, new Uint8Array(32), MESSAGE_INFO, 44);
  return { key: out.slice(0, 32), nonce: out.slice(32) };
}

/**
 * Advances the sending chain (§12.3) and returns the new state with the header and
 * message key of the next message. The caller saves the state before the message
 * leaves, so a chain key is never used twice.
 */
export async function nextSendingKey(
  state: RatchetState,
  newRatchetKey: () => Promise<AgreementKey> = generateAgreementKey,
): Promise<{ state: RatchetState; header: RatchetHeader; messageKey: Bytes }> {
  const next = { ...state };
  if (!next.cks || !next.dhs) {
    if (!next.dhr) throw new RatchetError("no_sending_key");
    next.dhs = await newRatchetKey();
    [next.root, next.cks] = await kdfRoot(next.root, await ecdh(next.dhs.agree, next.dhr));
  }
  const [chain, messageKey] = await kdfChain(next.cks!);
  const header = { ratchetKey: next.dhs.point, pn: next.pn, n: next.ns };
  next.cks = chain;
  next.ns += 1;
  return { state: next, header, messageKey };
}

const sameKey = (a: Bytes | null, b: Bytes) => a !== null && toHex(a) === toHex(b);

/** Keys of the receiving chain from `nr` up to `until`, kept for messages that come late. */
async function skipUntil(state: RatchetState, until: number, now: number): Promise<void> {
  if (until - state.nr > MAX_SKIP) throw new RatchetError("too_far_ahead");
  while (state.ckr && state.dhr && state.nr < until) {
    const [chain, messageKey] = await kdfChain(state.ckr);
    state.skipped = [...state.skipped, { ratchetKey: state.dhr, n: state.nr, messageKey, storedAt: now }];
    state.ckr = chain;
    state.nr += 1;
  }
}

/**
 * Opens a message (§12.4): `open` decrypts with the message key and throws if it
 * cannot. Resolves with the new state and what `open` returned; on any failure
 * the old state is untouched.
 */
export async function receive<T>(
  state: RatchetState,
  header: RatchetHeader,
  open: (messageKey: Bytes) => Promise<T>,
  now = Date.now(),
): Promise<{ state: RatchetState; value: T }> {
  const live = state.skipped.filter((k) => now - k.storedAt < SKIPPED_KEY_LIFETIME_MS);
  const skippedIndex = live.findIndex((k) => k.n === header.n && sameKey(k.ratchetKey, header.ratchetKey));
  if (skippedIndex >= 0) {
    const value = await open(live[skippedIndex].messageKey);
    return { state: { ...state, skipped: live.filter((_, i) => i !== skippedIndex) }, value };
  }

  const next: RatchetState = { ...state, skipped: live };
  if (!sameKey(next.dhr, header.ratchetKey)) {
    await skipUntil(next, header.pn, now);
    if (!next.dhs) throw new RatchetError("no_sending_key");
    [next.root, next.ckr] = await kdfRoot(next.root, await ecdh(next.dhs.agree, header.ratchetKey));
    Object.assign(next, { dhr: header.ratchetKey, pn: next.ns, ns: 0, nr: 0, cks: null, dhs: null });
  } else if (header.n < next.nr) {
    throw new RatchetError("replay");
  }
  await skipUntil(next, header.n, now);
  const [chain, messageKey] = await kdfChain(next.ckr!);
  next.ckr = chain;
  next.nr += 1;
  const value = await open(messageKey);
  next.skipped = next.skipped.slice(Math.max(0, next.skipped.length - MAX_SKIPPED_KEYS));
  return { state: next, value };
}
