/**
 * Contacts' device lists and bundles as a hostile server could serve them
 * (PROTOCOL §10.1): a list not signed by the pinned account key, an older
 * list than one accepted before, and a bundle whose signed prekey was swapped.
 * None is accepted; nothing checked before is overwritten.
 */
import "fake-indexeddb/auto";
import { describe, expect, it } from "vitest";
import { signAsAccount, type AccountSigner } from "../src/crypto/account";
import { toBase64, type Bytes } from "../src/crypto/bytes";
import { kemKeyPair } from "../src/crypto/mlkem";
import { generateAgreementKey, generateDeviceKey, sign, type DeviceKey } from "../src/crypto/p256";
import { sha256 } from "../src/crypto/symmetric";
import type { Context } from "../src/core/v2/context";
import { newAccountKey } from "../src/core/v2/enrol";
import { devicesOf } from "../src/core/v2/peers";
import { certificateStatement, deviceListStatement, encodeBundle, encodePrekey, PrekeyKind, prekeyStatement, withAccountSignature } from "../src/protocol/statements";
import { Store } from "../src/storage/store";
import type { Frame } from "../src/transport/connection";

const ALICE = "+12025550101";

async function signedPrekey(device: DeviceKey, kind: PrekeyKind, id: number, key: Bytes): Promise<Bytes> {
  const body = { kind, id, createdAt: Date.now(), key };
  return encodePrekey({ ...body, signature: await sign(device.sign, prekeyStatement(body)) });
}

/** A `lookup` answer for Alice: her device list at `version`, signed by `signer`, and one bundle. */
async function lookupAnswer(account: AccountSigner, device: DeviceKey, version: number, signer = account, swapPrekey = false): Promise<Frame> {
  const accountFingerprint = await sha256(account.spki);
  const list = deviceListStatement({ phone: ALICE, accountFingerprint, version, issuedAt: Date.now(), devices: [{ id: 1, point: device.point }] });
  const certificate = certificateStatement({ phone: ALICE, accountFingerprint, deviceId: 1, devicePoint: device.point, name: "laptop", createdAt: Date.now() });
  let spk = await signedPrekey(device, PrekeyKind.Signed, 1, (await generateAgreementKey()).point);
  // The server's own prekey under the device's old signature.
  if (swapPrekey) spk = await signedPrekey(await generateDeviceKey(), PrekeyKind.Signed, 1, (await generateAgreementKey()).point);
  const kem = await signedPrekey(device, PrekeyKind.KemLastResort, 2, kemKeyPair().publicKey);
  const bundle = encodeBundle(withAccountSignature(certificate, await signAsAccount(account, certificate)), spk, kem);
  return {
    type: "user",
    phone: ALICE,
    public_key: toBase64(account.spki),
    device_list: toBase64(withAccountSignature(list, await signAsAccount(signer, list))),
    bundles: [toBase64(bundle)],
  };
}

async function bob(name: string) {
  const store = await Store.open(name);
  const me = await generateDeviceKey();
  let answer: Frame = {};
  const warnings: string[] = [];
  const ctx: Context = {
    store,
    request: async (type) => {
      expect(type).toBe("lookup");
      return answer;
    },
    emit: (event) => void (event.type === "warning" && warnings.push(event.text)),
    me: { phone: "+12025550102", deviceId: 1, sign: me.sign, agree: me.agree, point: me.point, accountSpki: new Uint8Array(91), accountType: "p256" },
  };
  return { ctx, store, warnings, serve: (frame: Frame) => (answer = frame) };
}

describe("a contact's devices as the server serves them", () => {
  it("are accepted when the list and bundle verify down from the pinned account key", async () => {
    const { ctx, store, serve } = await bob("peers-1");
    const account = await newAccountKey();
    serve(await lookupAnswer(account, await generateDeviceKey(), 1));
    expect((await devicesOf(ctx, ALICE)).devices).toEqual([1]);
    expect((await store.contact(ALICE))?.listVersion).toBe(1);
    store.close();
  });

  it("refuse a list not signed by the account key, and an older list than one accepted, keeping what was checked", async () => {
    const { ctx, store, serve } = await bob("peers-2");
    const account = await newAccountKey();
    const device = await generateDeviceKey();
    serve(await lookupAnswer(account, device, 2));
    await devicesOf(ctx, ALICE);
    const before = await store.contact(ALICE);

    serve(await lookupAnswer(account, await generateDeviceKey(), 3, await newAccountKey()));
    await expect(devicesOf(ctx, ALICE)).rejects.toMatchObject({ code: "forged" });
    serve(await lookupAnswer(account, await generateDeviceKey(), 1));
    await expect(devicesOf(ctx, ALICE)).rejects.toMatchObject({ code: "forged" });
    expect(await store.contact(ALICE)).toEqual(before);
    store.close();
  });

  it("leave out a device whose bundle does not verify, with why, told by a send and not by a lookup", async () => {
    const { ctx, store, serve, warnings } = await bob("peers-3");
    serve(await lookupAnswer(await newAccountKey(), await generateDeviceKey(), 1, undefined, true));
    const checked = await devicesOf(ctx, ALICE);
    expect(checked.devices).toEqual([]);
    expect(checked.refused).toEqual([{ device: 1, reason: "a prekey's signature does not verify", outOfDate: false }]);
    expect(warnings).toEqual([]);
    store.close();
  });
});
