/**
 * Contacts' accounts and devices, checked the only way docs/PROTOCOL.md §10.1
 * allows: the account key pinned on first contact, the device list signed by it
 * and never older than one accepted before, each certificate and bundle signed
 * down that chain. A different account key is a key change: it is kept aside
 * as pending, and nothing is sent to or opened from that contact until the
 * user trusts it.
 */
import { importAccountKey, type AccountPublicKey } from "../../crypto/account";
import { equal, fromBase64, type Bytes } from "../../crypto/bytes";
import { fingerprint } from "../../crypto/p256";
import { certifyBundle, StatementError, verifyDeviceList, verifyPrekeys, type DeviceList, type VerifiedBundle, type VerifiedDevice } from "../../protocol/statements";
import type { ContactRecord } from "../../storage/store";
import type { Frame } from "../../transport/connection";
import { CoreError } from "../errors";
import { isolate } from "../isolate";
import type { Context } from "./context";

/** A bundle older than this is refused: its device has deleted the keys (§4.2). */
const STALE_PREKEY_MS = 37 * 24 * 3600 * 1000;

export interface Checked {
  phone: string;
  spki: Bytes;
  version: number;
  /** The devices to write to: listed, with a bundle. */
  devices: number[];
  bundles: Map<number, VerifiedBundle>;
  /**
   * The bundles that did not check out, at most one per device and one for all
   * uncertified ones, then the listed devices with no bundle whose certificate
   * checked out: those devices get nothing. A send tells them (outbox.ts); a
   * lookup alone does not.
   */
  refused: RefusedBundle[];
}

/** A bundle that did not check out, or none offered, and why: what the user is told of a device a send leaves out. */
export interface RefusedBundle {
  /** Its device, once the certificate checked out: a server could write any id into one that does not. */
  device: number | null;
  /** Why, for people: the check that failed, "out of date", or "no keys published". */
  reason: string;
  /** Refused for its age alone, its signatures good: a later try may pass once the device has been online. */
  outOfDate: boolean;
  /**
   * Listed, but the answer had no bundle for it: a server leaves a device out of
   * `lookup` until it has published its signed and last-resort prekeys (§5.2).
   */
  noKeys?: true;
}

/** Whether a device was left out for keys that do not check out, rather than keys out of date or none. */
export function forged(r: RefusedBundle): boolean {
  return !r.outOfDate && !r.noKeys;
}

/**
 * `lookup`, and the account key it gives checked against the pinned one (pinned
 * now on first contact). Resolves with the answer; a changed key is recorded as
 * pending and ends in `key_changed`.
 */
export async function lookUp(ctx: Context, phone: string): Promise<{ user: Frame; spki: Bytes }> {
  const user = await ctx.request("lookup", { phone });
  const spki = fromBase64(String(user.public_key));
  if (phone === ctx.me.phone) {
    if (!equal(spki, ctx.me.accountSpki)) throw new CoreError("account_replaced");
    return { user, spki };
  }
  const contact = await ctx.store.contact(phone);
  if (!contact) {
    await ctx.store.saveContact({ phone, spki, fingerprint: await fingerprint(spki), listVersion: 0, devices: [] });
  } else if (!equal(contact.spki, spki)) {
    if (!contact.pendingSpki || !equal(contact.pendingSpki, spki)) {
      await ctx.store.saveContact({ ...contact, pendingSpki: spki, pendingFingerprint: await fingerprint(spki) });
      ctx.emit({ type: "contact", phone });
    }
    throw new CoreError("key_changed");
  } else if (contact.pendingSpki) {
    throw new CoreError("key_changed");
  }
  return { user, spki };
}

/**
 * Looks `phone` up and checks its devices. `reachedSome`: this message already
 * went to some devices, so a list refused now must not say nothing was sent.
 */
export async function devicesOf(ctx: Context, phone: string, reachedSome = false): Promise<Checked> {
  const { user, spki } = await lookUp(ctx, phone);
  if (typeof user.device_list !== "string") throw new CoreError("no_devices");
  return checkDevices(ctx, phone, spki, user, reachedSome);
}

/**
 * Checks a device list and bundles (a `lookup` answer or a `stale_devices`
 * refusal). Every device the signed list names is remembered, whatever its
 * bundle: who a device is (its key) is the list's word, and a message from it
 * opens even while the server withholds or spoils its prekeys. Only the
 * bundles that passed are written to.
 */
export async function checkDevices(ctx: Context, phone: string, spki: Bytes, current: Frame, reachedSome = false): Promise<Checked> {
  const account = await importAccountKey(spki);
  const contact = await ownOrContact(ctx, phone, spki);
  const highest = equal(contact.spki, spki) ? contact.listVersion : 0;
  let list;
  try {
    list = await verifyDeviceList(fromBase64(String(current.device_list)), phone, account, highest);
  } catch (error) {
    const sent = reachedSome ? "the message had reached some devices, and was not sent to the rest" : "nothing was sent";
    throw new CoreError("forged", `The device list of ${phone} does not check out (${(error as Error).message}); ${sent}.`);
  }
  const bundles = new Map<number, VerifiedBundle>();
  const refused = new Map<number | null, RefusedBundle>();
  const names = new Map<number, string>();
  const now = Date.now();
  for (const encoded of Array.isArray(current.bundles) ? current.bundles : []) {
    const checked = await checkBundle(String(encoded), list, account, now);
    if (checked.certified) names.set(checked.certified.id, checked.certified.name);
    if ("refused" in checked) noteRefusal(refused, checked.refused);
    else bundles.set(checked.bundle.device.id, checked.bundle);
  }
  for (const d of list.devices) {
    if (!names.has(d.id)) noteRefusal(refused, { device: d.id, reason: "no keys published", outOfDate: false, noKeys: true });
  }
  const devices = list.devices.map((d) => ({ id: d.id, point: d.point, name: names.get(d.id) ?? knownName(contact, d) }));
  await ctx.store.saveContact({ ...contact, spki, listVersion: list.version, devices });
  // A device added under the pinned key is no key change: it is accepted, and told once (§13.9).
  if (phone !== ctx.me.phone && highest > 0) {
    for (const d of devices) {
      if (!contact.devices.some((known) => known.id === d.id)) ctx.emit({ type: "notice", text: addedText(phone, d) });
    }
  }
  return { phone, spki, version: list.version, devices: [...bundles.keys()].sort((a, b) => a - b), bundles, refused: [...refused.values()] };
}

/**
 * Keeps `r` among the refusals `kept`: one per device, and one for all whose
 * certificate did not check out, so a server offering any number of bad
 * bundles costs a bounded list. A forgery wins over an out-of-date bundle of
 * the same device, or none: a server replaying a genuine old bundle beside a
 * forged one must not have the forgery told as mere age.
 */
export function noteRefusal(kept: Map<number | null, RefusedBundle>, r: RefusedBundle): void {
  const known = kept.get(r.device);
  if (!known || (!forged(known) && forged(r))) kept.set(r.device, r);
}

/** The name remembered for listed device `d`: the one a certificate of the same key gave before, else none yet. */
function knownName(contact: ContactRecord, d: { id: number; point: Bytes }): string {
  return contact.devices.find((known) => known.id === d.id && equal(known.point, d.point))?.name ?? "";
}

/** How a contact's new device is told: by its certified name, else by its number until a certificate names it. */
function addedText(phone: string, d: { id: number; name: string }): string {
  if (d.name === "") return `${isolate(phone)} added device ${d.id}; its name is not known yet.`;
  return `${isolate(phone)} added a device: ${isolate(d.name)}`;
}

/** What one bundle came to: its device once the certificate checked out, and the bundle or why it was refused. */
type BundleCheck = { certified: VerifiedDevice | null } & ({ bundle: VerifiedBundle } | { refused: RefusedBundle });

/**
 * One bundle of a verified list: its certificate, then its prekeys' signatures,
 * then their age, so a forged prekey is never told as merely out of date.
 */
async function checkBundle(encoded: string, list: DeviceList, account: AccountPublicKey, now: number): Promise<BundleCheck> {
  const why = (error: unknown) => (error instanceof StatementError ? error.message : "the bundle is malformed");
  let certified;
  try {
    certified = await certifyBundle(fromBase64(encoded), list, account);
  } catch (error) {
    return { certified: null, refused: { device: null, reason: why(error), outOfDate: false } };
  }
  const device = certified.device;
  let bundle;
  try {
    bundle = await verifyPrekeys(certified);
  } catch (error) {
    return { certified: device, refused: { device: device.id, reason: why(error), outOfDate: false } };
  }
  if (now - bundle.signedPrekey.createdAt > STALE_PREKEY_MS || now - bundle.kemLastResort.createdAt > STALE_PREKEY_MS) {
    return { certified: device, refused: { device: device.id, reason: "out of date", outOfDate: true } };
  }
  return { certified: device, bundle };
}

/** The record devices are remembered in: the contact's, or this account's own. */
async function ownOrContact(ctx: Context, phone: string, spki: Bytes): Promise<ContactRecord> {
  const existing = await ctx.store.contact(phone);
  return existing ?? { phone, spki, fingerprint: await fingerprint(spki), listVersion: 0, devices: [] };
}

/**
 * Device `id` of `phone`, checked: as remembered under the pinned key, else from
 * a fresh `lookup`. Null when the account does not list it.
 */
export async function peerDevice(ctx: Context, phone: string, id: number, fresh = false): Promise<VerifiedDevice | null> {
  const contact = await ctx.store.contact(phone);
  if (contact?.pendingSpki) throw new CoreError("key_changed");
  const remembered = contact?.devices.find((d) => d.id === id);
  if (remembered && !fresh) return remembered;
  await devicesOf(ctx, phone);
  return (await ctx.store.contact(phone))?.devices.find((d) => d.id === id) ?? null;
}

/** Whether `id` is above every device of `phone` this browser has checked: one added after the list the server holds. */
export async function newerThanListed(ctx: Context, phone: string, id: number): Promise<boolean> {
  const contact = await ctx.store.contact(phone);
  return (contact?.devices ?? []).every((d) => d.id < id);
}
