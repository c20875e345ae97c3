/**
 * Making this browser a device of an account (docs/PROTOCOL.md §5.2, §16): by
 * registering the number with a new account key (device 1 of a new list, or
 * the next device under the next version when the same key registers again),
 * or by linking to an existing account with a code from `carrier devices add`.
 * Either way the account, its keys and the own device list are saved before
 * this browser logs in as its device and publishes its prekeys.
 */
import { importAccountKey, importAccountPkcs8, signAsAccount, type AccountSigner } from "../../crypto/account";
import { equal, fromBase64, toBase64, type Bytes } from "../../crypto/bytes";
import { fingerprint, generateDeviceKey, generateSigningKey, sign, spkiFromPoint, type DeviceKey } from "../../crypto/p256";
import { sha256 } from "../../crypto/symmetric";
import { wsBinding, type HelloValues } from "../../protocol/binding";
import { LinkError, linkKeys, openLinkResponse, parseLinkCode, sealLinkRequest } from "../../protocol/link";
import {
  authTranscript,
  certificateStatement,
  certify,
  deviceListStatement,
  deviceLoginTranscript,
  parseDeviceList,
  verifyDeviceList,
  withAccountSignature,
} from "../../protocol/statements";
import type { Store } from "../../storage/store";
import type { Frame } from "../../transport/connection";
import type { Account } from "../api";
import { CoreError } from "../errors";

type Request = (type: string, fields?: Frame) => Promise<Frame>;

/** A new P-256 account key, non-extractable. */
export async function newAccountKey(): Promise<AccountSigner> {
  const key = await generateSigningKey();
  return { type: "p256", sign: key.sign, spki: spkiFromPoint(key.point) };
}

function helloOf(hello: HelloValues | null): HelloValues {
  if (!hello) throw new CoreError("disconnected");
  return hello;
}

/** `challenge`, then `verify` with the registration proof; the session is then logged in as the account. */
export async function verifyRegistration(request: Request, hello: HelloValues | null, phone: string, code: string, account: AccountSigner): Promise<void> {
  const binding = await wsBinding(helloOf(hello));
  const { nonce } = await request("challenge");
  const transcript = authTranscript("register", binding, fromBase64(String(nonce)), phone, account.spki);
  await request("verify", { phone, code: code.trim(), signature: toBase64(await signAsAccount(account, transcript)) });
}

/** Makes device 1 (or the next) of a just-registered account, publishes the list, and saves everything. */
export async function firstDevice(store: Store, request: Request, phone: string, account: AccountSigner): Promise<Account> {
  let version = 0;
  let highest = 0;
  try {
    const current = await request("devices");
    const list = parseDeviceList(fromBase64(String(current.device_list)));
    version = list.version;
    highest = Math.max(0, ...list.devices.map((d) => d.id));
  } catch (error) {
    // No list yet is the usual case: a new account.
    if ((error as { code?: string }).code !== "unknown_device") throw error;
  }
  const device = await generateDeviceKey();
  const deviceId = highest + 1;
  const now = Date.now();
  const accountFingerprint = await sha256(account.spki);
  const certificate = certificateStatement({ phone, accountFingerprint, deviceId, devicePoint: device.point, name: `browser (device ${deviceId})`, createdAt: now });
  const list = deviceListStatement({ phone, accountFingerprint, version: version + 1, issuedAt: now, devices: [{ id: deviceId, point: device.point }] });
  await request("publish_devices", {
    list: toBase64(withAccountSignature(list, await signAsAccount(account, list))),
    certificates: [toBase64(withAccountSignature(certificate, await signAsAccount(account, certificate)))],
  });
  return save(store, phone, deviceId, account, device, version + 1);
}

/** Links this browser as a new device of `phone`'s account through a code from `carrier devices add`. */
export async function linkDevice(store: Store, request: Request, phone: string, typedCode: string, name: string): Promise<Account> {
  let code: Bytes;
  try {
    code = parseLinkCode(typedCode);
  } catch {
    throw new CoreError("not_link_code");
  }
  const keys = await linkKeys(code);
  code.fill(0);
  const device = await generateDeviceKey();
  const sealed = await sealLinkRequest(keys, phone, name, device);
  const answer = await request("link_request", { phone, rendezvous: toBase64(keys.rendezvous), request: toBase64(sealed) });
  let response;
  try {
    response = await openLinkResponse(keys, phone, fromBase64(String(answer.response)));
  } catch (error) {
    throw new CoreError("forged", `The answer to the link request does not open (${(error as LinkError).message}); nothing was linked.`);
  }
  if (!response.accountPkcs8) throw new CoreError("no_account_key");
  const account = await importAccountPkcs8(response.accountPkcs8);
  response.accountPkcs8.fill(0);
  const publicKey = await importAccountKey(account.spki);
  try {
    const list = await verifyDeviceList(response.list, phone, publicKey);
    const certified = await certify(list, response.certificate, publicKey);
    if (!equal(certified.point, device.point)) throw new Error("the certificate is for another device key");
    return await save(store, phone, certified.id, account, device, list.version);
  } catch (error) {
    if (error instanceof CoreError) throw error;
    throw new CoreError("forged", `The new device list does not check out (${(error as Error).message}); nothing was linked.`);
  }
}

async function save(store: Store, phone: string, deviceId: number, account: AccountSigner, device: DeviceKey, listVersion: number): Promise<Account> {
  const now = Date.now();
  const record = { id: "me" as const, phone, deviceId, keyType: account.type, fingerprint: await fingerprint(account.spki), createdAt: now };
  await store.saveAccount(record, [
    { name: "account", sign: account.sign, spki: account.spki, createdAt: now },
    { name: "device", sign: device.sign, agree: device.agree, point: device.point, createdAt: now },
  ]);
  await store.saveContact({ phone, spki: account.spki, fingerprint: record.fingerprint, listVersion, devices: [] });
  return { phone, deviceId, fingerprint: record.fingerprint };
}

/** `challenge`, then `device_login` with the proof bound to this connection (PROTOCOL.md §12.3). */
export async function deviceLogin(request: Request, hello: HelloValues | null, me: { phone: string; deviceId: number; sign: CryptoKey; point: Bytes }): Promise<void> {
  const binding = await wsBinding(helloOf(hello));
  const { nonce } = await request("challenge");
  const transcript = deviceLoginTranscript(binding, fromBase64(String(nonce)), me.phone, me.deviceId, me.point);
  await request("device_login", { phone: me.phone, device: me.deviceId, signature: toBase64(await sign(me.sign, transcript)) });
}
