/**
 * A contact's account as a hostile server could serve it in a `lookup` answer
 * (or a `stale_devices` refusal): a genuine signed device list, and per device
 * a bundle that is genuine, out of date, forged or withheld. Shared by the
 * tests of sending (left_out.test.ts) and of remembered devices.
 */
import { signAsAccount, type AccountSigner } from "../src/crypto/account";
import { toBase64, type Bytes } from "../src/crypto/bytes";
import { kemKeyPair } from "../src/crypto/mlkem";
import { generateAgreementKey, generateDeviceKey, sign, type DeviceKey } from "../src/crypto/p256";
import { sha256 } from "../src/crypto/symmetric";
import { newAccountKey } from "../src/core/v2/enrol";
import { certificateStatement, deviceListStatement, encodeBundle, encodePrekey, PrekeyKind, prekeyStatement, withAccountSignature } from "../src/protocol/statements";
import type { Frame } from "../src/transport/connection";

export const DAY = 24 * 3600 * 1000;

/** One bundle as the server serves it: for device `id`, its prekeys `days` old, optionally forged. */
export interface BundleSpec {
  id: number;
  days?: number;
  /** A prekey signed by a key that is not the device's. */
  forgedPrekey?: boolean;
  /** A certificate signed by a key that is not the account's (its device is not listed either). */
  forgedCertificate?: boolean;
  /** Listed, but the server serves no bundle for it. */
  withheld?: boolean;
}

/**
 * An account with its device keys, answering with the bundles asked for, in
 * that order; a device may have several. Each device's certificate names it
 * `device N`.
 */
export async function account(phone: string) {
  const key = await newAccountKey();
  const devices = new Map<number, DeviceKey>();
  const device = async (id: number) => {
    if (!devices.has(id)) devices.set(id, await generateDeviceKey());
    return devices.get(id)!;
  };
  const answer = async (version: number, specs: BundleSpec[]): Promise<Frame> => {
    const accountFingerprint = await sha256(key.spki);
    const listed = [...new Set(specs.filter((s) => !s.forgedCertificate).map((s) => s.id))].sort((a, b) => a - b);
    const points = await Promise.all(listed.map(async (id) => ({ id, point: (await device(id)).point })));
    const list = deviceListStatement({ phone, accountFingerprint, version, issuedAt: Date.now(), devices: points });
    const bundles = [];
    for (const s of specs.filter((s) => !s.withheld)) {
      const d = await device(s.id);
      const certificate = certificateStatement({ phone, accountFingerprint, deviceId: s.id, devicePoint: d.point, name: `device ${s.id}`, createdAt: Date.now() });
      const certifier: AccountSigner = s.forgedCertificate ? await newAccountKey() : key;
      const createdAt = Date.now() - (s.days ?? 0) * DAY;
      const prekeySigner = s.forgedPrekey ? await generateDeviceKey() : d;
      const spk = await prekey(prekeySigner, PrekeyKind.Signed, 1, (await generateAgreementKey()).point, createdAt);
      const kem = await prekey(d, PrekeyKind.KemLastResort, 2, kemKeyPair().publicKey, createdAt);
      bundles.push(toBase64(encodeBundle(withAccountSignature(certificate, await signAsAccount(certifier, certificate)), spk, kem)));
    }
    return {
      type: "user",
      phone,
      public_key: toBase64(key.spki),
      device_list: toBase64(withAccountSignature(list, await signAsAccount(key, list))),
      bundles,
    };
  };
  return { key, device, answer };
}

async function prekey(device: DeviceKey, kind: PrekeyKind, id: number, key: Bytes, createdAt: number): Promise<Bytes> {
  const body = { kind, id, createdAt, key };
  return encodePrekey({ ...body, signature: await sign(device.sign, prekeyStatement(body)) });
}
