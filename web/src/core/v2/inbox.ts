/**
 * Receiving (docs/PROTOCOL.md §14.4, §7.9): de-duplicate by id, parse, find
 * the sender's checked device, check its signature before any session state is
 * read, open (or set up) the session, and commit the new state with the message
 * in one transaction before the message is acknowledged. A message from a
 * contact whose key changed is kept back on the server, neither shown nor
 * acknowledged, until the user trusts the new key.
 */
import { fromBase64, toHex } from "../../crypto/bytes";
import { EnvelopeKind, parseEnvelope, verifyEnvelope, type Envelope } from "../../protocol/envelope";
import type { Payload } from "../../protocol/padding";
import { acceptSession, openMessage, type SessionState } from "../../protocol/session";
import type { VerifiedDevice } from "../../protocol/statements";
import type { MessageRecord, PrekeysUsed, SessionRecord } from "../../storage/store";
import { RequestError, type Frame } from "../../transport/connection";
import { CoreError } from "../errors";
import { isolate } from "../isolate";
import type { Context } from "./context";
import { newerThanListed, peerDevice } from "./peers";
import { isNotice, parseNotice } from "./notice";
import { maintainPrekeys, responderPrekeys } from "./prekeys";

/** `ack` it (stored, a duplicate, or refused for good), or keep it on the server for later. */
export type Verdict = "ack" | "keep";

const MESSAGE_ID = /^[0-9a-fA-F]{32}$/;

/**
 * Whether a delivered message (pushed, or an entry of a `fetch` answer) has the
 * fields the protocol gives it. One that does not is neither opened nor
 * acknowledged: its id cannot be trusted to name it.
 */
export function wellFormedDelivery(m: unknown): m is Frame & { id: string; from: string; envelope: string } {
  if (typeof m !== "object" || m === null || Array.isArray(m)) return false;
  const f = m as Frame;
  return (
    typeof f.id === "string" &&
    MESSAGE_ID.test(f.id) &&
    typeof f.from === "string" &&
    f.from.length <= 32 &&
    typeof f.envelope === "string" &&
    (f.device === undefined || (typeof f.device === "number" && Number.isSafeInteger(f.device)))
  );
}

/** Checks, opens and stores one delivered message. Resolves with whether to acknowledge it. */
export async function receive(ctx: Context, m: Frame): Promise<{ verdict: Verdict; setUp: boolean }> {
  const drop = (reason: string) => {
    console.warn(`Carrier: a message from ${String(m.from)} was refused: ${reason}`);
    // A message that cannot be decrypted is acknowledged, and said so once (§13.10).
    if (reason.startsWith("(a message from")) ctx.emit({ type: "notice", text: reason.replace(/^\((.*)\)$/, "$1") });
    // A forgery is worth an alert: someone on the way, or the server, made it.
    if (reason.startsWith("the signature does not verify") || reason.startsWith("the sender's devices do not check out")) {
      ctx.emit({ type: "warning", text: `A message said to be from ${isolate(String(m.from))} was not signed by any of their devices; it was discarded.` });
    }
    return { verdict: "ack" as const, setUp: false };
  };
  const keep = { verdict: "keep" as const, setUp: false };
  const from = String(m.from);
  const id = String(m.id).toLowerCase();
  let envelope: Envelope;
  try {
    const bytes = fromBase64(String(m.envelope));
    if (isNotice(bytes)) return { verdict: await takeNotice(ctx, m, bytes), setUp: false };
    if (bytes[0] === 1) return drop("a protocol v1 envelope; this client speaks protocol v2 only");
    envelope = parseEnvelope(bytes);
  } catch (error) {
    return drop(`malformed envelope (${(error as Error).message})`);
  }
  const sender = envelope.sender;
  if (sender.phone !== from || toHex(envelope.id) !== id || (typeof m.device === "number" && m.device !== sender.deviceId)) {
    return drop("the envelope does not match its delivery details");
  }
  if (await ctx.store.hasMessage(from, "in", id)) return { verdict: "ack", setUp: false };
  if (from === ctx.me.phone && (await alreadySynced(ctx, id))) return { verdict: "ack", setUp: false };

  let peer: VerifiedDevice | null;
  try {
    peer = await peerDevice(ctx, from, sender.deviceId);
    if (peer && !(await verifyEnvelope(envelope, peer.point))) {
      // A forgery, or a device this browser knew under that id is gone: the current list tells which.
      peer = await peerDevice(ctx, from, sender.deviceId, true);
      if (peer && !(await verifyEnvelope(envelope, peer.point))) return drop("the signature does not verify (forged or tampered)");
    }
  } catch (error) {
    const code = (error as { code?: string }).code;
    if (code === "key_changed" || code === "no_devices") return keep;
    if (error instanceof RequestError && code === "unknown_user") return drop(`${from} is no longer registered`);
    // The connection or the server failed: the message stays queued and is tried again.
    if ((error instanceof CoreError || error instanceof RequestError) && code !== "forged") throw error;
    return drop(`the sender's devices do not check out: ${(error as Error).message}`);
  }
  if (!peer) {
    if (await newerThanListed(ctx, from, sender.deviceId)) return keep;
    return drop(`sent from device ${sender.deviceId}, which ${from} does not list`);
  }
  const unsealed = await unseal(ctx, peer, envelope, from);
  if (typeof unsealed === "string") return drop(unsealed);
  const { session, used, payload } = unsealed;
  const message = record(ctx, from, id, payload, Date.now());
  const stored = await ctx.store.commitReceived(session, used, message);
  if (stored && message) ctx.emit({ type: "conversation", peer: message.peer });
  return { verdict: "ack", setUp: used.remove.length > 0 || envelope.kind === EnvelopeKind.Prekey };
}

/**
 * A notice from this device's own server: a refused copy is shown on its message
 * in the conversation with the recipient; anything else with the notice tag, or
 * not under this account's number with no sending device, is said quietly and
 * dropped. Either way it is acknowledged: a notice is told once.
 */
async function takeNotice(ctx: Context, m: Frame, bytes: Uint8Array): Promise<Verdict> {
  const notice = parseNotice(bytes);
  if (!notice || m.from !== ctx.me.phone || m.device !== undefined) {
    console.warn(`Carrier: a notice from ${String(m.from)} was refused: ${notice ? "not from this device's own server" : "not well formed"}`);
    ctx.emit({ type: "notice", text: "A notice that is not well formed, or not from your server, was ignored." });
    return "ack";
  }
  const refusal = { device: notice.device, code: notice.code, reason: notice.reason };
  // A copy to this account's other devices (`to` is this account) went with a message stored under its recipient.
  const peers = notice.to === ctx.me.phone ? (await ctx.store.conversations()).map((c) => c.peer) : [notice.to];
  for (const peer of peers) {
    if (await ctx.store.markUndelivered(peer, notice.id, refusal)) {
      ctx.emit({ type: "conversation", peer });
      return "ack";
    }
  }
  // The message is not in this browser's history (cleared, say): the refusal is still worth telling.
  ctx.emit({ type: "warning", text: refusalText(notice.to, refusal) });
  return "ack";
}

/** How a refused copy is told. */
export function refusalText(to: string, r: { device: number; code: string; reason: string }): string {
  return `A message to ${isolate(to)} was refused by their server for their device ${r.device} and will not be delivered there: ${isolate(r.reason || r.code)} (${r.code}).`;
}

async function alreadySynced(ctx: Context, id: string): Promise<boolean> {
  for (const c of await ctx.store.conversations()) if (await ctx.store.hasMessage(c.peer, "out", id)) return true;
  return false;
}

/** Opens the envelope in its session, or sets one up; a string is the reason it cannot be opened. */
async function unseal(ctx: Context, peer: VerifiedDevice, envelope: Envelope, from: string): Promise<{ session: SessionRecord; used: PrekeysUsed; payload: Payload } | string> {
  const sessionId = toHex(envelope.sessionId);
  const now = Date.now();
  const existing = (await ctx.store.sessions(from)).find((s) => s.device === peer.id && s.id === sessionId);
  const own = { phone: ctx.me.phone, deviceId: ctx.me.deviceId, identity: ctx.me.point, agree: ctx.me.agree };
  try {
    if (existing) {
      const opened = await openMessage(existing.state as SessionState, envelope, now);
      return { session: { ...existing, state: opened.state, usedAt: now, openedAt: now }, used: { remove: [] }, payload: opened.payload };
    }
    if (envelope.kind !== EnvelopeKind.Prekey || !envelope.setUp) return `(a message from ${isolate(from)} could not be decrypted: its session is unknown here)`;
    const prekeys = await responderPrekeys(ctx, envelope.setUp);
    if (!prekeys) return `(a message from ${isolate(from)} could not be decrypted: the prekeys it used are gone)`;
    const state = await acceptSession(own, { phone: from, deviceId: peer.id, identity: peer.point }, envelope, prekeys.keys, now);
    const opened = await openMessage(state, envelope, now);
    const session = { peer: from, device: peer.id, id: sessionId, usedAt: now, openedAt: now, createdAt: now, state: opened.state };
    return { session, used: prekeys.used, payload: opened.payload };
  } catch (error) {
    return `rejected: ${(error as Error).message}`;
  }
}

/** How far ahead of this clock a sender's clock may be before its time is not believed. */
const CLOCK_SKEW_MS = 24 * 3600 * 1000;

/**
 * The time to show and sort by: the sender's clock (a u64 the peer chooses)
 * when it is a real time not far in the future, else when it arrived. A time no
 * Date can hold would break every view that shows it; a far-future one would
 * pin a message to the bottom of its conversation for good.
 */
export function shownTime(sentAt: number, receivedAt: number): number {
  return Number.isSafeInteger(sentAt) && sentAt >= 0 && sentAt <= receivedAt + CLOCK_SKEW_MS ? sentAt : receivedAt;
}

/** The history row for what opened, or null for content this client does not show. */
function record(ctx: Context, from: string, id: string, payload: Payload, receivedAt: number): MessageRecord | null {
  const base = { id, sentAt: shownTime(payload.sentAt, receivedAt), receivedAt: Math.max(receivedAt, 0) };
  const content = payload.content;
  if (content.type === "text") return { ...base, peer: from, direction: "in", text: content.text, status: "received" };
  if (content.type === "sync" && from === ctx.me.phone && content.id === id) {
    return { ...base, peer: content.to, direction: "out", text: content.text, status: "sent" };
  }
  console.warn(`Carrier: a message from ${from} has content this client does not show.`);
  return null;
}


const FETCH_LIMIT = 100;

/**
 * Fetches the whole queue, opening and acknowledging page by page; kept-back
 * messages stay. Entries without the protocol's fields are left alone, and a
 * cursor that does not move forward ends the drain (a server that kept saying
 * `more` with the same cursor would otherwise keep the client asking for ever);
 * `warn` tells the page of either.
 */
export async function drainQueue(ctx: Context, warn: (text: string) => void): Promise<void> {
  let after: number | undefined;
  let setUp = false;
  for (;;) {
    const answer = await ctx.request("fetch", after === undefined ? { limit: FETCH_LIMIT } : { limit: FETCH_LIMIT, after });
    const listed = Array.isArray(answer.messages) ? (answer.messages as unknown[]) : [];
    const messages = listed.filter(wellFormedDelivery);
    if (messages.length < listed.length) warn("The server sent messages that are not well formed; they were ignored.");
    const ids: string[] = [];
    for (const m of messages) {
      const outcome = await receive(ctx, m);
      if (outcome.verdict === "ack") ids.push(m.id);
      setUp ||= outcome.setUp;
    }
    if (ids.length) await ctx.request("ack", { ids });
    if (!answer.more) break;
    const cursor = answer.cursor;
    if (typeof cursor !== "number" || !Number.isSafeInteger(cursor) || (after !== undefined && cursor <= after)) {
      warn("The server sent a queue cursor that does not move forward; the rest of the queue is fetched at the next connection.");
      break;
    }
    after = cursor;
  }
  if (setUp) await maintainPrekeys(ctx);
}
