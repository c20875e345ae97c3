//! Signed statements: certificate, list, prekeys, bundle, claims, device
//! login, and the statements v2 keeps from v1.

use serde_json::{Value, json};

use super::{account, arr, assert_same, device_key, ec, id, kem, num, phone, read, write};
use crate::crypto::v2::ec::DeviceKey;
use crate::crypto::v2::fixture::NOW;
use crate::crypto::v2::prekeys::{PrekeyPublic, PublicPrekey};
use crate::crypto::v2::{
    ClaimedPrekeys, DeviceCertificate, DeviceList, PrekeyBundle, PrekeyKind,
    device_login_transcript,
};
use crate::crypto::{Purpose, auth_transcript};
use crate::domain::MessageId;
use crate::protocol::signed::{broadcast_bytes, directory_entry_bytes};

pub(super) const FILE: &str = "tests/vectors/v2_statements.json";

pub(super) fn inputs() -> Value {
    json!({
        "account_scalar": "11".repeat(32),
        "phone": "+12025550101",
        "device_scalar": "21".repeat(32),
        "device_id": 1,
        "device_name": "laptop",
        "created_at_ms": 1_700_000_000_000u64,
        "second_device_scalar": "22".repeat(32),
        "second_device_id": 2,
        "list_version": 2,
        "list_issued_at_ms": 1_700_000_100_000u64,
        "signed_prekey_scalar": "31".repeat(32),
        "signed_prekey_id": 1,
        "kem_last_resort_seed": "41".repeat(64),
        "kem_last_resort_id": 2,
        "one_time_prekey_scalar": "32".repeat(32),
        "one_time_prekey_id": 3,
        "kem_one_time_seed": "42".repeat(64),
        "kem_one_time_id": 4,
        "prekeys_created_at_ms": 1_700_000_000_000u64,
        "login_exporter": "44".repeat(32),
        "login_nonce": "55".repeat(32),
        "registration_exporter": "66".repeat(32),
        "registration_nonce": "77".repeat(32),
        "broadcast_id": "88".repeat(16),
        "broadcast_sent_at_ms": 1_700_000_200_000u64,
        "broadcast_text": "Hello, neighbourhood",
        "home_server_scalar": "99".repeat(32),
        "home_name": "localhost:8088",
        "registered_at_ms": 1_700_000_000_000u64,
    })
}

/// The prekeys of the statements vector, signed by its first device.
pub(super) fn vector_prekeys(v: &Value) -> [PublicPrekey; 4] {
    let device = device_key(v, "device_scalar");
    let at = num(v, "prekeys_created_at_ms");
    let sign =
        |kind, id_key, key| PublicPrekey::sign(&device, kind, num(v, id_key) as u32, at, key);
    [
        sign(
            PrekeyKind::Signed,
            "signed_prekey_id",
            PrekeyPublic::Ec(ec(v, "signed_prekey_scalar").public()),
        ),
        sign(
            PrekeyKind::KemLastResort,
            "kem_last_resort_id",
            PrekeyPublic::Kem(kem(v, "kem_last_resort_seed").public()),
        ),
        sign(
            PrekeyKind::OneTime,
            "one_time_prekey_id",
            PrekeyPublic::Ec(ec(v, "one_time_prekey_scalar").public()),
        ),
        sign(
            PrekeyKind::KemOneTime,
            "kem_one_time_id",
            PrekeyPublic::Kem(kem(v, "kem_one_time_seed").public()),
        ),
    ]
}

fn outputs(v: &Value) -> Value {
    let account = account(v, "account_scalar");
    let phone = phone(v, "phone");
    let (d1, d2) = (
        device_key(v, "device_scalar"),
        device_key(v, "second_device_scalar"),
    );
    let (id1, id2) = (id(v, "device_id"), id(v, "second_device_id"));
    let name = v["device_name"].as_str().unwrap();
    let created = num(v, "created_at_ms");
    let cert =
        DeviceCertificate::issue(&account, &phone, id1, &d1.public(), name, created).unwrap();
    let devices = vec![(id2, d2.public()), (id1, d1.public())];
    let (version, issued) = (num(v, "list_version"), num(v, "list_issued_at_ms"));
    let list = DeviceList::issue(&account, &phone, version, issued, devices).unwrap();
    let [spk, kem_lr, opk, kem_ot] = vector_prekeys(v);
    let bundle = PrekeyBundle {
        certificate: cert.clone(),
        signed_prekey: spk.clone(),
        kem_prekey: kem_lr,
    };
    let claim = ClaimedPrekeys {
        device_id: id1,
        one_time: Some(opk.clone()),
        kem_one_time: Some(kem_ot),
    };
    let empty_claim = ClaimedPrekeys {
        device_id: id1,
        one_time: None,
        kem_one_time: None,
    };
    let (exporter, nonce) = (arr(v, "login_exporter"), arr(v, "login_nonce"));
    let login = device_login_transcript(&exporter, &nonce, &phone, id1, &d1.public());

    let fp = account.fingerprint();
    let point = |k: &DeviceKey| hex::encode(k.public().as_bytes());
    let mut by_hand = b"carrier-v2 device certificate\0".to_vec();
    by_hand.extend(
        [
            &[12][..],
            phone.as_str().as_bytes(),
            fp.as_bytes(),
            &1u32.to_be_bytes(),
        ]
        .concat(),
    );
    by_hand.extend(
        [
            &d1.public().as_bytes()[..],
            &[6],
            b"laptop",
            &created.to_be_bytes(),
        ]
        .concat(),
    );
    assert_eq!(cert.statement(), by_hand, "certificate layout");
    let mut by_hand = b"carrier-v2 prekey\0".to_vec();
    by_hand.extend(
        [
            &[1][..],
            &1u32.to_be_bytes(),
            &created.to_be_bytes(),
            &[0, 65],
        ]
        .concat(),
    );
    by_hand.extend(ec(v, "signed_prekey_scalar").public().as_bytes());
    assert_eq!(spk.statement(), by_hand, "prekey layout");

    let verified = list.clone().verify(&account.public_key(), &phone).unwrap();
    let parsed = PrekeyBundle::parse(&bundle.to_bytes()).unwrap();
    let checked = parsed.verify(&verified, NOW).unwrap();
    let checked = checked
        .with_claim(&ClaimedPrekeys::parse(&claim.to_bytes()).unwrap())
        .unwrap();
    assert!(checked.has_one_time_prekey() && checked.has_one_time_kem_prekey());
    let login_signature = d1.sign(&login);
    d1.public().verify(&login, &login_signature).unwrap();
    let mut out = json!({
        "account_spki_der": hex::encode(account.public_key().to_spki_der()),
        "account_fingerprint": fp.to_hex(),
        "device_point": point(&d1),
        "device_fingerprint": d1.public().fingerprint().to_hex(),
        "second_device_point": point(&d2),
        "certificate_statement": hex::encode(cert.statement()),
        "certificate_signature": hex::encode(cert.signature()),
        "certificate": hex::encode(cert.to_bytes()),
        "device_list_statement": hex::encode(list.statement()),
        "device_list": hex::encode(list.to_bytes()),
        "signed_prekey": hex::encode(spk.to_bytes()),
        "kem_last_resort_public": hex::encode(kem(v, "kem_last_resort_seed").public().as_bytes()),
        "bundle": hex::encode(bundle.to_bytes()),
        "one_time_prekey": hex::encode(opk.to_bytes()),
        "claim": hex::encode(claim.to_bytes()),
        "claim_none_left": hex::encode(empty_claim.to_bytes()),
        "login_transcript": hex::encode(&login),
        "login_signature": hex::encode(login_signature),
    });
    out.as_object_mut()
        .unwrap()
        .extend(kept_from_v1(v, &account).as_object().unwrap().clone());
    out
}

/// The statements v1 defined and v2 keeps, signed low-S by v2's signer.
fn kept_from_v1(v: &Value, account: &crate::crypto::Identity) -> Value {
    use crate::crypto::v2::ec::account_sign;
    let phone = phone(v, "phone");
    let spki = account.public_key().to_spki_der();
    let registration = auth_transcript(
        Purpose::Register,
        &arr(v, "registration_exporter"),
        &arr(v, "registration_nonce"),
        &phone,
        &spki,
    );
    let text = v["broadcast_text"].as_str().unwrap();
    let id = MessageId::from_bytes(arr(v, "broadcast_id"));
    let broadcast = broadcast_bytes(&id, num(v, "broadcast_sent_at_ms"), phone.as_str(), text);
    let home = super::account(v, "home_server_scalar");
    let home_spki = home.public_key().to_spki_der();
    let name = v["home_name"].as_str().unwrap();
    let at = num(v, "registered_at_ms") as i64;
    let entry = directory_entry_bytes(phone.as_str(), "p256", &spki, at, &home_spki, name);
    let signed = |key, bytes: &[u8]| hex::encode(account_sign(key, bytes));
    json!({
        "v1_registration_transcript": hex::encode(&registration),
        "v1_registration_signature": signed(account, &registration),
        "v1_broadcast_statement": hex::encode(&broadcast),
        "v1_broadcast_signature": signed(account, &broadcast),
        "home_spki_der": hex::encode(&home_spki),
        "v1_directory_entry": hex::encode(&entry),
        "v1_directory_signature": signed(&home, &entry),
    })
}

#[test]
fn statements_vector() {
    let file = read(FILE);
    assert_same("statements", &outputs(&file["inputs"]), &file["outputs"]);
}

pub(super) fn regenerate() {
    let v = inputs();
    let description = "Carrier v2 signed statements: device certificate, device list, prekeys, bundle, \
        claims, device login, and the v1 statements v2 keeps (registration transcript, broadcast, \
        directory entry). Byte strings are hex; phone numbers, names and texts are text. ECDSA \
        signatures are RFC 6979 then normalised to low S, so every output is reproducible.";
    let outputs = outputs(&v);
    write(
        FILE,
        &json!({"description": description, "inputs": v, "outputs": outputs}),
    );
}
