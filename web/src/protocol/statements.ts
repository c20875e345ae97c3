/**
 * The signed statements of protocol v2 (docs/PROTOCOL.md §9.2, §9.6–§9.8, §10), and
 * the v1 statements v2 keeps (PROTOCOL.md §9.1, §9.3): their exact bytes, their
 * parsing, and the chain a client checks before it trusts a contact's device
 * (§10.1): pinned account key → device list → certificate → prekeys.
 */
import { type AccountPublicKey, verifyAccountSignature } from "../crypto/account";
import { equal, fromUtf8, Reader, toHex, utf8, Writer, type Bytes } from "../crypto/bytes";
import { checkPoint, verify } from "../crypto/p256";
import { MLKEM_PUBLIC_KEY_BYTES } from "../crypto/mlkem";
import { sha256 } from "../crypto/symmetric";

/** A statement that does not parse or does not verify; `code` says which check failed. */
export class StatementError extends Error {
  constructor(
    readonly code: "malformed" | "bad_signature" | "wrong_account" | "stale_list" | "unknown_device" | "wrong_kind",
    message: string,
  ) {
    super(message);
    this.name = "StatementError";
  }
}

const CERTIFICATE_LABEL = utf8("carrier-v2 device certificate\0");
const LIST_LABEL = utf8("carrier-v2 device list\0");
const PREKEY_LABEL = utf8("carrier-v2 prekey\0");
const LOGIN_LABEL = utf8("carrier-v2 device login\0");

export const MAX_ACCOUNT_SIGNATURE = 512;

/** Parses with `read`, turning any layout failure into one clear error. */
function parse<T>(what: string, bytes: Bytes, read: (r: Reader) => T): T {
  try {
    const r = new Reader(bytes);
    const value = read(r);
    r.end();
    return value;
  } catch (error) {
    if (error instanceof StatementError) throw error;
    throw new StatementError("malformed", `the ${what} is malformed`);
  }
}

function readPoint(r: Reader): Bytes {
  const point = r.bytes(65);
  checkPoint(point);
  return point;
}

function readPhone(r: Reader): string {
  return fromUtf8(r.prefixed(1));
}

/** A signature by the account key, after its statement: u16 length, then the bytes. */
function readAccountSignature(r: Reader): Bytes {
  const signature = r.prefixed(2);
  if (signature.length === 0 || signature.length > MAX_ACCOUNT_SIGNATURE) throw new StatementError("malformed", "bad signature length");
  return signature;
}

export async function accountFingerprint(account: AccountPublicKey): Promise<Bytes> {
  return sha256(account.spki);
}

// §9.6 Device certificate

export interface CertificateFields {
  phone: string;
  accountFingerprint: Bytes;
  deviceId: number;
  devicePoint: Bytes;
  name: string;
  createdAt: number;
}

export interface Certificate extends CertificateFields {
  statement: Bytes;
  signature: Bytes;
}

export function certificateStatement(c: CertificateFields): Bytes {
  const name = utf8(c.name);
  if (name.length < 1 || name.length > 64 || /\p{Cc}/u.test(c.name)) throw new StatementError("malformed", "a device name is 1–64 bytes without control characters");
  return new Writer()
    .bytes(CERTIFICATE_LABEL)
    .prefixed(utf8(c.phone), 1)
    .bytes(c.accountFingerprint)
    .u32(c.deviceId)
    .bytes(c.devicePoint)
    .prefixed(name, 1)
    .u64(c.createdAt)
    .finish();
}

/** Statement ‖ u16 G ‖ signature: how account-signed statements travel. */
export function withAccountSignature(statement: Bytes, signature: Bytes): Bytes {
  return new Writer().bytes(statement).prefixed(signature, 2).finish();
}

export function parseCertificate(bytes: Bytes): Certificate {
  return parse("device certificate", bytes, (r) => {
    if (!equal(r.bytes(CERTIFICATE_LABEL.length), CERTIFICATE_LABEL)) throw new StatementError("malformed", "not a device certificate");
    const phone = readPhone(r);
    const accountFingerprint = r.bytes(32);
    const deviceId = r.u32();
    const devicePoint = readPoint(r);
    const name = fromUtf8(r.prefixed(1));
    const createdAt = Number(r.u64());
    const statement = bytes.slice(0, r.offset);
    return { phone, accountFingerprint, deviceId, devicePoint, name, createdAt, statement, signature: readAccountSignature(r) };
  });
}

// §9.7 Device list

export interface DeviceListFields {
  phone: string;
  accountFingerprint: Bytes;
  version: number;
  issuedAt: number;
  devices: { id: number; point: Bytes }[];
}

export interface DeviceList extends DeviceListFields {
  statement: Bytes;
  signature: Bytes;
}

export function deviceListStatement(l: DeviceListFields): Bytes {
  const w = new Writer().bytes(LIST_LABEL).prefixed(utf8(l.phone), 1).bytes(l.accountFingerprint).u64(l.version).u64(l.issuedAt).u8(l.devices.length);
  for (const d of l.devices) w.u32(d.id).bytes(d.point);
  return w.finish();
}

export function parseDeviceList(bytes: Bytes): DeviceList {
  return parse("device list", bytes, (r) => {
    if (!equal(r.bytes(LIST_LABEL.length), LIST_LABEL)) throw new StatementError("malformed", "not a device list");
    const phone = readPhone(r);
    const accountFingerprint = r.bytes(32);
    const version = Number(r.u64());
    const issuedAt = Number(r.u64());
    const count = r.u8();
    if (count < 1 || count > 32) throw new StatementError("malformed", "a device list holds 1–32 devices");
    const devices = Array.from({ length: count }, () => ({ id: r.u32(), point: readPoint(r) }));
    const ids = devices.map((d) => d.id);
    if (ids.some((id, i) => id < 1 || (i > 0 && id <= ids[i - 1]))) throw new StatementError("malformed", "device ids must be ≥ 1 and strictly ascending");
    const points = new Set(devices.map((d) => toHex(d.point)));
    if (points.size !== devices.length) throw new StatementError("malformed", "a device key appears twice");
    const statement = bytes.slice(0, r.offset);
    return { phone, accountFingerprint, version, issuedAt, devices, statement, signature: readAccountSignature(r) };
  });
}

// §9.8 Prekeys

export enum PrekeyKind {
  Signed = 1,
  OneTime = 2,
  KemLastResort = 3,
  KemOneTime = 4,
}

export interface Prekey {
  kind: PrekeyKind;
  id: number;
  createdAt: number;
  key: Bytes;
  signature: Bytes;
}

const isKem = (kind: PrekeyKind) => kind === PrekeyKind.KemLastResort || kind === PrekeyKind.KemOneTime;

function prekeyBody(p: Omit<Prekey, "signature">): Bytes {
  return new Writer().u8(p.kind).u32(p.id).u64(p.createdAt).prefixed(p.key, 2).finish();
}

/** The bytes the device key signs: the label, then the wire form without its signature. */
export function prekeyStatement(p: Omit<Prekey, "signature">): Bytes {
  return new Writer().bytes(PREKEY_LABEL).bytes(prekeyBody(p)).finish();
}

export function encodePrekey(p: Prekey): Bytes {
  return new Writer().bytes(prekeyBody(p)).bytes(p.signature).finish();
}

export function parsePrekey(bytes: Bytes): Prekey {
  return parse("prekey", bytes, (r) => {
    const kind = r.u8() as PrekeyKind;
    if (kind < 1 || kind > 4) throw new StatementError("malformed", "unknown prekey kind");
    const id = r.u32();
    const createdAt = Number(r.u64());
    const key = r.prefixed(2);
    if (isKem(kind) ? key.length !== MLKEM_PUBLIC_KEY_BYTES : key.length !== 65) throw new StatementError("malformed", "wrong prekey length");
    if (!isKem(kind)) checkPoint(key);
    if (id < 1) throw new StatementError("malformed", "prekey ids start at 1");
    return { kind, id, createdAt, key, signature: r.bytes(64) };
  });
}

async function verifyPrekey(bytes: Bytes, devicePoint: Bytes, kind: PrekeyKind): Promise<Prekey> {
  const prekey = parsePrekey(bytes);
  if (prekey.kind !== kind) throw new StatementError("wrong_kind", `expected a prekey of kind ${kind}, got ${prekey.kind}`);
  if (!(await verify(devicePoint, prekeyStatement(prekey), prekey.signature))) throw new StatementError("bad_signature", "a prekey's signature does not verify");
  return prekey;
}

// §10.1 The chain of trust

export interface VerifiedDevice {
  id: number;
  point: Bytes;
  name: string;
}

/**
 * Checks a contact's device list against their pinned account key, refusing a
 * version below the highest already accepted (a server replaying an old list).
 */
export async function verifyDeviceList(bytes: Bytes, phone: string, account: AccountPublicKey, highestVersion = 0): Promise<DeviceList> {
  const list = parseDeviceList(bytes);
  if (list.phone !== phone || !equal(list.accountFingerprint, await accountFingerprint(account))) {
    throw new StatementError("wrong_account", "the device list is for another account");
  }
  if (!(await verifyAccountSignature(account, list.statement, list.signature))) throw new StatementError("bad_signature", "the device list's signature does not verify");
  if (list.version < highestVersion) throw new StatementError("stale_list", "the server sent an older device list than one already seen");
  return list;
}

/** A certificate is good when signed by the account key and naming a device of the verified list. */
export async function certify(list: DeviceList, certificateBytes: Bytes, account: AccountPublicKey): Promise<VerifiedDevice> {
  const c = parseCertificate(certificateBytes);
  if (c.phone !== list.phone || !equal(c.accountFingerprint, list.accountFingerprint)) throw new StatementError("wrong_account", "the certificate is for another account");
  if (!(await verifyAccountSignature(account, c.statement, c.signature))) throw new StatementError("bad_signature", "the device certificate's signature does not verify");
  if (!list.devices.some((d) => d.id === c.deviceId && equal(d.point, c.devicePoint))) throw new StatementError("unknown_device", "the certificate names a device not in the list");
  return { id: c.deviceId, point: c.devicePoint, name: c.name };
}

// §10.2 Bundle and §10.3 claim

export interface VerifiedBundle {
  device: VerifiedDevice;
  signedPrekey: Prekey;
  kemLastResort: Prekey;
}

export interface PrekeyChoice extends VerifiedBundle {
  oneTimePrekey: Prekey | null;
  /** The ML-KEM key to encapsulate to: a claimed one-time key, else the last-resort one. */
  kemPrekey: Prekey;
}

export function encodeBundle(certificate: Bytes, signedPrekey: Bytes, kemLastResort: Bytes): Bytes {
  return new Writer().prefixed(certificate, 2).prefixed(signedPrekey, 2).prefixed(kemLastResort, 2).finish();
}

/** A bundle whose certificate checked out and whose prekeys are still to check. */
export interface CertifiedBundle {
  device: VerifiedDevice;
  signedPrekey: Bytes;
  kemLastResort: Bytes;
}

/**
 * The first half of checking a bundle: its certificate. Apart from the prekeys
 * because only a device certified here may be named when its prekeys are
 * refused; a server could write any id into a certificate that does not verify.
 */
export async function certifyBundle(bytes: Bytes, list: DeviceList, account: AccountPublicKey): Promise<CertifiedBundle> {
  const [certificate, signedPrekey, kemLastResort] = parse("bundle", bytes, (r) => [r.prefixed(2), r.prefixed(2), r.prefixed(2)]);
  return { device: await certify(list, certificate, account), signedPrekey, kemLastResort };
}

/** The second half: the prekeys, each signed by the certified device key. */
export async function verifyPrekeys(bundle: CertifiedBundle): Promise<VerifiedBundle> {
  const { device } = bundle;
  return {
    device,
    signedPrekey: await verifyPrekey(bundle.signedPrekey, device.point, PrekeyKind.Signed),
    kemLastResort: await verifyPrekey(bundle.kemLastResort, device.point, PrekeyKind.KemLastResort),
  };
}

/** Both halves at once, for a caller that has no use for which one refused. */
export async function verifyBundle(bytes: Bytes, list: DeviceList, account: AccountPublicKey): Promise<VerifiedBundle> {
  return verifyPrekeys(await certifyBundle(bytes, list, account));
}

export function encodeClaim(deviceId: number, oneTime: Bytes | null, kemOneTime: Bytes | null): Bytes {
  const empty = new Uint8Array(0);
  return new Writer().u32(deviceId).prefixed(oneTime ?? empty, 2).prefixed(kemOneTime ?? empty, 2).finish();
}

/** Adds what `claim` handed out; a missing one-time ML-KEM key falls back to the last-resort one. */
export async function withClaim(bundle: VerifiedBundle, claimBytes: Bytes | null): Promise<PrekeyChoice> {
  if (!claimBytes) return { ...bundle, oneTimePrekey: null, kemPrekey: bundle.kemLastResort };
  const [deviceId, opk, kem] = parse("claim", claimBytes, (r) => [r.u32(), r.prefixed(2), r.prefixed(2)] as const);
  if (deviceId !== bundle.device.id) throw new StatementError("unknown_device", "the claim is for another device");
  const point = bundle.device.point;
  return {
    ...bundle,
    oneTimePrekey: opk.length ? await verifyPrekey(opk, point, PrekeyKind.OneTime) : null,
    kemPrekey: kem.length ? await verifyPrekey(kem, point, PrekeyKind.KemOneTime) : bundle.kemLastResort,
  };
}

// Transcripts: §9.1 (registration, account-key login) and §9.2 (device login).
// `binding` is the 32-byte TLS exporter on the TCP port; over WebSocket, where a
// browser cannot read it, whatever replaces it (issue 13) takes its place.

/** What the account key signs for `verify` (purpose `register`) or an account-key `login`. */
export function authTranscript(purpose: "register" | "login", binding: Bytes, nonce: Bytes, phone: string, spki: Bytes): Bytes {
  return new Writer().bytes(utf8(`carrier-v1 ${purpose}\0`)).bytes(binding).bytes(nonce).prefixed(utf8(phone), 1).prefixed(spki, 2).finish();
}

/** What a device key signs to log in as that device. */
export function deviceLoginTranscript(binding: Bytes, nonce: Bytes, phone: string, deviceId: number, devicePoint: Bytes): Bytes {
  return new Writer().bytes(LOGIN_LABEL).bytes(binding).bytes(nonce).prefixed(utf8(phone), 1).u32(deviceId).bytes(devicePoint).finish();
}

/** The bytes an author signs for a public broadcast (§9.3, kept from v1). */
export function broadcastStatement(id: Bytes, sentAt: number, from: string, text: string): Bytes {
  return new Writer().bytes(utf8("carrier-v1 broadcast\0")).bytes(id).u64(sentAt).prefixed(utf8(from), 1).prefixed(utf8(text), 4).finish();
}
