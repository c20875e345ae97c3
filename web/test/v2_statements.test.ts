/**
 * The v2 statements (PROTOCOL.md §18.2) rebuilt from the vector's inputs, byte for
 * byte, and the vector's signatures checked through the chain of §10.1. WebCrypto's
 * ECDSA uses random nonces, so signatures are verified rather than reproduced.
 */
import { describe, expect, it } from "vitest";
import { importAccountKey } from "../src/crypto/account";
import { fromHex, toHex, utf8, type Bytes } from "../src/crypto/bytes";
import { importScalar, sign, verify } from "../src/crypto/p256";
import { kemKeyPair } from "../src/crypto/mlkem";
import {
  accountFingerprint, authTranscript, broadcastStatement, certificateStatement, certify, deviceListStatement,
  deviceLoginTranscript, encodeBundle, encodeClaim, encodePrekey, parsePrekey, prekeyStatement, PrekeyKind,
  verifyBundle, verifyDeviceList, withAccountSignature, withClaim,
} from "../src/protocol/statements";
import { hasVector, loadVector } from "./vectors";

const FILE = "v2_statements.json";

describe.skipIf(!hasVector(FILE))("v2 statements (PROTOCOL.md §18.2)", () => {
  const { inputs: i, outputs: o } = hasVector(FILE) ? loadVector(FILE) : { inputs: {}, outputs: {} };
  const hex = (s: string): Bytes => fromHex(s);
  const point = async (scalar: string) => (await importScalar(hex(scalar), "ECDH")).point;

  it("derives the account and device keys", async () => {
    const account = await importAccountKey(hex(o.account_spki_der));
    expect(toHex(await accountFingerprint(account))).toBe(o.account_fingerprint);
    expect(toHex(await point(i.account_scalar))).toBe(o.account_spki_der.slice(52));
    expect(toHex(await point(i.device_scalar))).toBe(o.device_point);
    expect(toHex(await point(i.second_device_scalar))).toBe(o.second_device_point);
  });

  it("builds the device certificate and list, and verifies their signatures", async () => {
    const account = await importAccountKey(hex(o.account_spki_der));
    const fp = hex(o.account_fingerprint);
    const statement = certificateStatement({ phone: i.phone, accountFingerprint: fp, deviceId: i.device_id, devicePoint: hex(o.device_point), name: i.device_name, createdAt: i.created_at_ms });
    expect(toHex(statement)).toBe(o.certificate_statement);
    expect(toHex(withAccountSignature(statement, hex(o.certificate_signature)))).toBe(o.certificate);

    const listStatement = deviceListStatement({
      phone: i.phone, accountFingerprint: fp, version: i.list_version, issuedAt: i.list_issued_at_ms,
      devices: [{ id: i.device_id, point: hex(o.device_point) }, { id: i.second_device_id, point: hex(o.second_device_point) }],
    });
    expect(toHex(listStatement)).toBe(o.device_list_statement);
    expect(o.device_list.startsWith(o.device_list_statement)).toBe(true);

    const list = await verifyDeviceList(hex(o.device_list), i.phone, account, 2);
    expect(await certify(list, hex(o.certificate), account)).toMatchObject({ id: 1, name: "laptop" });
    await expect(verifyDeviceList(hex(o.device_list), i.phone, account, 3)).rejects.toMatchObject({ code: "stale_list" });
    await expect(verifyDeviceList(hex(o.device_list), "+12025550102", account)).rejects.toMatchObject({ code: "wrong_account" });
    const forged = hex(o.device_list);
    forged[100] ^= 1; // inside the first device key
    await expect(verifyDeviceList(forged, i.phone, account)).rejects.toMatchObject({ code: "bad_signature" });
  });

  it("builds the prekeys, bundle and claims, and verifies them", async () => {
    const account = await importAccountKey(hex(o.account_spki_der));
    const spk = parsePrekey(hex(o.signed_prekey));
    expect(spk).toMatchObject({ kind: PrekeyKind.Signed, id: i.signed_prekey_id, createdAt: i.prekeys_created_at_ms });
    expect(toHex(spk.key)).toBe(toHex(await point(i.signed_prekey_scalar)));
    expect(toHex(encodePrekey(spk))).toBe(o.signed_prekey);
    expect(await verify(hex(o.device_point), prekeyStatement(spk), spk.signature)).toBe(true);
    expect(toHex(kemKeyPair(hex(i.kem_last_resort_seed)).publicKey)).toBe(o.kem_last_resort_public);

    const list = await verifyDeviceList(hex(o.device_list), i.phone, account);
    const bundle = await verifyBundle(hex(o.bundle), list, account);
    expect(bundle.kemLastResort.id).toBe(i.kem_last_resort_id);
    const claimed = await withClaim(bundle, hex(o.claim));
    expect(claimed.oneTimePrekey!.id).toBe(i.one_time_prekey_id);
    expect(claimed.kemPrekey.id).toBe(i.kem_one_time_id);
    expect(toHex(claimed.kemPrekey.key)).toBe(toHex(kemKeyPair(hex(i.kem_one_time_seed)).publicKey));
    expect(toHex(encodeClaim(1, encodePrekey(claimed.oneTimePrekey!), encodePrekey(claimed.kemPrekey)))).toBe(o.claim);
    const none = await withClaim(bundle, hex(o.claim_none_left));
    expect([none.oneTimePrekey, none.kemPrekey.id]).toEqual([null, i.kem_last_resort_id]);

    // A one-time prekey offered as the signed one is refused: the kind is signed.
    const swapped = encodeBundle(hex(o.certificate), hex(o.one_time_prekey), encodePrekey(bundle.kemLastResort));
    await expect(verifyBundle(swapped, list, account)).rejects.toMatchObject({ code: "wrong_kind" });
  });

  it("builds the login and v1 transcripts and the broadcast statement", async () => {
    const login = deviceLoginTranscript(hex(i.login_exporter), hex(i.login_nonce), i.phone, i.device_id, hex(o.device_point));
    expect(toHex(login)).toBe(o.login_transcript);
    expect(await verify(hex(o.device_point), login, hex(o.login_signature))).toBe(true);
    const device = await importScalar(hex(i.device_scalar), "ECDSA");
    expect(await verify(device.point, login, await sign(device.key, login))).toBe(true);

    const registration = authTranscript("register", hex(i.registration_exporter), hex(i.registration_nonce), i.phone, hex(o.account_spki_der));
    expect(toHex(registration)).toBe(o.v1_registration_transcript);
    const accountPoint = hex(o.account_spki_der).slice(26);
    expect(await verify(accountPoint, registration, hex(o.v1_registration_signature))).toBe(true);

    const broadcast = broadcastStatement(hex(i.broadcast_id), i.broadcast_sent_at_ms, i.phone, i.broadcast_text);
    expect(toHex(broadcast)).toBe(o.v1_broadcast_statement);
    expect(await verify(accountPoint, broadcast, hex(o.v1_broadcast_signature))).toBe(true);
    expect(await verify(accountPoint, utf8("other"), hex(o.v1_broadcast_signature))).toBe(false);
  });
});
