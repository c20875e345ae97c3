/**
 * Sending (docs/PROTOCOL.md §14.3, §5.3): one envelope per device of the
 * recipient and one sync copy per other device of this account, all under one
 * message id, each sealed in its own session and saved before it leaves. A
 * `stale_devices` refusal carries the current list: it is checked like a
 * `lookup` answer and sending goes on with the devices not yet served.
 * A device whose keys were refused, or that has published none, gets nothing,
 * and the send says so: once per device, a forgery over mere age or absence,
 * none for a device that took the message.
 * Once any device has the message, nothing that stops the send fails it: the
 * message is sent, and what stopped it is told in the same warning, since
 * sending it again would deliver it twice under a new id.
 */
import { fromBase64, fromHex, toBase64, toHex } from "../../crypto/bytes";
import type { Content } from "../../protocol/padding";
import { initiateSession, sealMessage, type SessionState } from "../../protocol/session";
import { StatementError, withClaim } from "../../protocol/statements";
import type { SessionRecord } from "../../storage/store";
import { RequestError, type Frame } from "../../transport/connection";
import { CoreError } from "../errors";
import { isolate } from "../isolate";
import type { Context } from "./context";
import { checkDevices, devicesOf, forged, noteRefusal, type Checked, type RefusedBundle } from "./peers";

/** How many times one message follows a changed device list before giving up. */
const MAX_LIST_CHANGES = 4;

/** The session to send in with each device: the one a message was last opened in, else the newest. */
export function sendingSession(records: SessionRecord[], device: number): SessionRecord | undefined {
  return records
    .filter((r) => r.device === device)
    .sort((a, b) => (b.openedAt ?? 0) - (a.openedAt ?? 0) || (b.createdAt ?? 0) - (a.createdAt ?? 0))[0];
}

/** What a fan-out did: how many devices took the message, and those left out with why. */
export interface Reached {
  served: number;
  leftOut: RefusedBundle[];
  /** Why it stopped before the rest, once the message had reached a device: told, not thrown. */
  stopped?: string;
}

/**
 * Seals `text` for every device of `to` and this account's other devices;
 * resolves once all took it, or once the message reached a device of `to`
 * and the send stopped after. The devices left out, and what stopped the
 * send, are told in one warning, the page showing one at a time, and also
 * when the send then fails.
 */
export async function sendText(ctx: Context, to: string, id: string, text: string, sentAt: number): Promise<void> {
  const told: string[] = [];
  try {
    const peer = await devicesOf(ctx, to);
    const reached = await fanOut(ctx, peer, id, { type: "text", text }, sentAt);
    told.push(...tell(to, reached));
    // Stopped halfway: the sync copies are among "the rest" the warning says were not sent.
    if (to === ctx.me.phone || reached.stopped) return;
    if (reached.served === 0) throw noneReached(to, reached.leftOut);
    told.push(...(await syncCopies(ctx, to, id, text, sentAt)));
  } finally {
    if (told.length > 0) ctx.emit({ type: "warning", text: told.join(" ") });
  }
}

/**
 * The sync copies of a message the recipient has: what goes wrong now is
 * told, never thrown, so the message is not reported as unsent.
 */
async function syncCopies(ctx: Context, to: string, id: string, text: string, sentAt: number): Promise<string[]> {
  let mine: Checked;
  try {
    mine = (await rememberedOwn(ctx)) ?? (await devicesOf(ctx, ctx.me.phone, true));
  } catch (error) {
    return [stoppedText(ctx.me.phone, error)];
  }
  return tell(ctx.me.phone, await fanOut(ctx, mine, id, { type: "sync", to, id, text }, sentAt, true));
}

/** The sentences of one fan-out to `phone`: each device left out, then what stopped it. */
function tell(phone: string, reached: Reached): string[] {
  const told = reached.leftOut.map((r) => leftOutText(phone, r));
  if (reached.stopped) told.push(reached.stopped);
  return told;
}

/** How a device left out is told; its number only when its certificate checked out, or the signed list alone named it. */
export function leftOutText(phone: string, r: RefusedBundle): string {
  const which = r.device === null ? `A device of ${isolate(phone)}` : `Device ${r.device} of ${isolate(phone)}`;
  if (r.noKeys) return `${which} gets nothing from this send: it has published no keys yet.`;
  return `${which} gets nothing from this send: its keys were refused (${r.reason}).`;
}

/** Why a send reached no device of `to`: keys that do not check out, keys out of date, or none published. */
function noneReached(to: string, leftOut: RefusedBundle[]): CoreError {
  if (leftOut.some(forged)) {
    return new CoreError("forged", `The server offered keys for ${to} that do not check out against their account key; nothing was sent.`);
  }
  if (leftOut.some((r) => r.outOfDate)) {
    return new CoreError("no_devices", `${to} has no device that can receive now: their published keys are out of date. Try again once one of their devices has been online.`);
  }
  return new CoreError("no_devices");
}

/**
 * Seals and sends one copy per device of `start`, following changed device
 * lists. A `duplicate_id` answer for a sync copy (to one of this account's own
 * other devices) is skipped: the server keeps one message per id in each
 * device's queue whoever sent it, so a recipient who learnt the id can take
 * the slot first, and failing the whole send for that would report as lost a
 * message the recipient already has. `reachedBefore`: this message already
 * went to other devices (the recipient's, for sync copies). Once the message
 * has reached a device, a failure ends the fan-out as `stopped` instead of
 * being thrown.
 */
export async function fanOut(ctx: Context, start: Checked, id: string, content: Content, sentAt: number, reachedBefore = false): Promise<Reached> {
  let checked = start;
  const own = checked.phone === ctx.me.phone;
  const served = new Set<number>(own ? [ctx.me.deviceId] : []);
  const refused = new Map<number | null, RefusedBundle>();
  const reached = () => ({ served: served.size - (own ? 1 : 0), leftOut: leftOut(refused, served) });
  try {
    for (let round = 0; round < MAX_LIST_CHANGES; round++) {
      for (const r of checked.refused) noteRefusal(refused, r);
      const stale = await sendRound(ctx, checked, id, content, sentAt, served);
      if (!stale) return reached();
      checked = await checkDevices(ctx, checked.phone, checked.spki, stale, reachedBefore || reached().served > 0);
    }
    throw new CoreError("devices_changing", `The devices of ${checked.phone} kept changing while sending; try again.`);
  } catch (error) {
    if (!reachedBefore && reached().served === 0) throw error;
    return { ...reached(), stopped: stoppedText(checked.phone, error) };
  }
}

/**
 * Sends to each device of `checked` not yet `served`, adding those that take
 * it; resolves with a `stale_devices` refusal's frame, the rest not tried, or
 * null once all were tried.
 */
async function sendRound(ctx: Context, checked: Checked, id: string, content: Content, sentAt: number, served: Set<number>): Promise<Frame | null> {
  const own = checked.phone === ctx.me.phone;
  const todo = checked.devices.filter((d) => !served.has(d));
  const sessions = await sessionsFor(ctx, checked, todo);
  for (const device of todo) {
    const record = sessions.get(device);
    if (!record) continue;
    const sealed = await sealMessage(record.state as SessionState, fromHex(id), { content, sentAt }, ctx.me.sign);
    await ctx.store.saveSession({ ...record, state: sealed.state, usedAt: Date.now() });
    try {
      await ctx.request("device_send", { id, to: checked.phone, device, list_version: checked.version, envelope: toBase64(sealed.envelope) });
      served.add(device);
    } catch (error) {
      if (own && error instanceof RequestError && error.code === "duplicate_id") {
        console.warn(`The sync copy of message ${id} to this account's device ${device} was refused as a duplicate id; skipped.`);
        served.add(device);
        continue;
      }
      if (!(error instanceof RequestError) || error.code !== "stale_devices") throw error;
      return error.frame;
    }
  }
  return null;
}

/** What the rest of a send that had reached some devices is told, in the words of a device list refused part-way (peers.ts). */
const REST_NOT_SENT = "the message had reached some devices, and was not sent to the rest.";

/**
 * Why a send to `phone` stopped after the message had reached some device,
 * as a warning: the message counts as sent, so the sentence says what was
 * not done rather than to try again.
 */
export function stoppedText(phone: string, error: unknown): string {
  const who = isolate(phone);
  if (error instanceof StatementError) return `The keys the server gave for ${who} do not check out (${error.message}); ${REST_NOT_SENT}`;
  if (!(error instanceof CoreError || error instanceof RequestError)) {
    console.warn("Carrier: a send stopped after reaching some devices", error);
    return `Sending to ${who} stopped on an unexpected error; ${REST_NOT_SENT}`;
  }
  const dropped = CONNECTION_LOST.get(error.code);
  // The request the connection was lost on may or may not have been delivered.
  if (dropped) return `${dropped} while sending to ${who}; the message had reached some devices, and may not have reached the rest.`;
  // The code is the server's: isolated, like any text from the network.
  if (error instanceof RequestError) return `The server refused sending to ${who} (${isolate(error.code)}); ${REST_NOT_SENT}`;
  // A refused device list says already that the message had reached some devices.
  if (error.code === "forged") return error.message;
  if (error.code === "devices_changing") return `The devices of ${who} kept changing while sending; ${REST_NOT_SENT}`;
  if (error.code === "no_devices") return `The server gave no device list for ${who}; ${REST_NOT_SENT}`;
  return `Sending to ${who} stopped (${error.code}); ${REST_NOT_SENT}`;
}

/** The codes of a connection lost with a request in flight, as the start of a sentence. */
const CONNECTION_LOST = new Map([
  ["disconnected", "The connection to the Carrier server dropped"],
  ["timeout", "The Carrier server stopped answering"],
  ["stopped", "The connection to the Carrier server was closed"],
  ["unreachable", "The Carrier server could not be reached"],
]);

/**
 * The refusals worth telling, kept across rounds one per device (and one for
 * all uncertified bundles) by `noteRefusal`: none for a device that took the
 * message.
 */
function leftOut(refused: Map<number | null, RefusedBundle>, served: Set<number>): RefusedBundle[] {
  return [...refused.values()].filter((r) => r.device === null || !served.has(r.device));
}

/** A session per device in `todo`: the one to send in, else a new one from its bundle and a claim. */
async function sessionsFor(ctx: Context, checked: Checked, todo: number[]): Promise<Map<number, SessionRecord>> {
  const records = await ctx.store.sessions(checked.phone);
  const out = new Map<number, SessionRecord>();
  const fresh: number[] = [];
  for (const device of todo) {
    const existing = sendingSession(records, device);
    if (existing) out.set(device, existing);
    else if (checked.bundles.has(device)) fresh.push(device);
  }
  if (fresh.length === 0) return out;
  const answer = await ctx.request("claim", { phone: checked.phone, devices: fresh });
  const claims = (Array.isArray(answer.claims) ? answer.claims : []).map((c) => fromBase64(String(c)));
  const own = { phone: ctx.me.phone, deviceId: ctx.me.deviceId, identity: ctx.me.point, agree: ctx.me.agree };
  for (const [i, device] of fresh.entries()) {
    const bundle = checked.bundles.get(device)!;
    const choice = await withClaim(bundle, claims[i] ?? null);
    const state = await initiateSession(own, { phone: checked.phone, deviceId: device, identity: bundle.device.point }, choice);
    const now = Date.now();
    out.set(device, { peer: checked.phone, device, id: toHex(state.sessionId), usedAt: now, openedAt: 0, createdAt: now, state });
  }
  return out;
}

/**
 * This account's other devices as remembered, when each has a session: sync
 * copies then go out under the remembered list version, and a list changed since
 * comes back as `stale_devices`. Null otherwise, and the caller looks it up.
 */
async function rememberedOwn(ctx: Context): Promise<Checked | null> {
  const own = await ctx.store.contact(ctx.me.phone);
  if (!own || own.listVersion === 0) return null;
  const devices = own.devices.map((d) => d.id).filter((d) => d !== ctx.me.deviceId);
  if (devices.length === 0) return null;
  const records = await ctx.store.sessions(ctx.me.phone);
  if (devices.some((d) => !sendingSession(records, d))) return null;
  return { phone: ctx.me.phone, spki: ctx.me.accountSpki, version: own.listVersion, devices, bundles: new Map(), refused: [] };
}
