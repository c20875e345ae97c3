//! Test vectors for v2 in `tests/vectors/v2_*.json` (docs/PROTOCOL-v2.md
//! §12). Each test recomputes the file from its inputs and compares every
//! output; intermediate values (ECDH outputs, binding, HKDF inputs, message
//! keys) are computed here straight from the primitive crates and the
//! layouts written out by hand, independently of the code under test.
//!
//! After a deliberate format change:
//! `cargo test --lib crypto::v2::vectors::regenerate -- --ignored`.

use hkdf::Hkdf;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::ec::{DeviceKey, EcSecret, PublicPoint};
use super::fixture::NOW;
use super::kem::KemSecret;
use super::pqxdh::{self, Party, Prekeys, ResponderSecrets};
use super::prekeys::{PrekeyPublic, PublicPrekey};
use super::{
    ClaimedPrekeys, DeviceCertificate, DeviceId, DeviceList, PrekeyBundle, PrekeyKind,
    device_login_transcript, safety_number,
};
use crate::crypto::Identity;
use crate::domain::PhoneNumber;

pub(super) const STATEMENTS_FILE: &str = "tests/vectors/v2_statements.json";
pub(super) const PQXDH_FILE: &str = "tests/vectors/v2_pqxdh.json";
const SAFETY_FILE: &str = "tests/vectors/v2_safety_number.json";

pub(super) fn read(file: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    serde_json::from_str(&std::fs::read_to_string(path).expect("vector file")).expect("JSON")
}

pub(super) fn write(file: &str, value: &Value) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    std::fs::write(path, serde_json::to_string_pretty(value).unwrap() + "\n").unwrap();
}

pub(super) fn hexv(v: &Value, key: &str) -> Vec<u8> {
    hex::decode(v[key].as_str().unwrap_or_else(|| panic!("{key}"))).expect("hex")
}

pub(super) fn arr<const N: usize>(v: &Value, key: &str) -> [u8; N] {
    hexv(v, key)
        .try_into()
        .unwrap_or_else(|_| panic!("{key} has {N} bytes"))
}

pub(super) fn num(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is a number"))
}

pub(super) fn phone(v: &Value, key: &str) -> PhoneNumber {
    PhoneNumber::from_canonical(v[key].as_str().unwrap()).unwrap()
}

pub(super) fn id(v: &Value, key: &str) -> DeviceId {
    DeviceId::new(num(v, key) as u32).unwrap()
}

pub(super) fn device_key(v: &Value, key: &str) -> DeviceKey {
    DeviceKey::from_bytes(&hexv(v, key)).unwrap()
}

pub(super) fn ec(v: &Value, key: &str) -> EcSecret {
    EcSecret::from_bytes(&hexv(v, key)).unwrap()
}

pub(super) fn kem(v: &Value, key: &str) -> KemSecret {
    KemSecret::from_seed(&arr(v, key))
}

pub(super) fn account(v: &Value, key: &str) -> Identity {
    Identity::from_p256_scalar_for_tests(&arr(v, key)).unwrap()
}

/// Every output in `computed` equals the file's, and the file has no more.
pub(super) fn assert_same(name: &str, computed: &Value, stored: &Value) {
    let (c, s) = (computed.as_object().unwrap(), stored.as_object().unwrap());
    for (key, value) in c {
        assert_eq!(
            Some(value),
            s.get(key),
            "{name}.{key} differs from the file"
        );
    }
    assert_eq!(c.len(), s.len(), "{name} has other fields than computed");
}

fn statement_inputs() -> Value {
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

fn statements(v: &Value) -> Value {
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
    json!({
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
    })
}

fn pqxdh_inputs() -> Value {
    let mut v = statement_inputs();
    let extra = json!({
        "initiator_phone": "+12025550102",
        "initiator_device_id": 7,
        "initiator_device_scalar": "51".repeat(32),
        "ephemeral_scalar": "61".repeat(32),
        "kem_randomness": "71".repeat(32),
    });
    v.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    v
}

/// One PQXDH case, from the primitives, then checked against both sides.
fn pqxdh_case(v: &Value, with_one_time: bool) -> Value {
    let (alice, bob) = (
        device_key(v, "initiator_device_scalar"),
        device_key(v, "device_scalar"),
    );
    let (spk, opk, ek) = (
        ec(v, "signed_prekey_scalar"),
        ec(v, "one_time_prekey_scalar"),
        ec(v, "ephemeral_scalar"),
    );
    let (kem_key, kem_id) = if with_one_time {
        (kem(v, "kem_one_time_seed"), num(v, "kem_one_time_id"))
    } else {
        (kem(v, "kem_last_resort_seed"), num(v, "kem_last_resort_id"))
    };
    let raw_dh = |secret: &[u8], public: &PublicPoint| {
        let sk = p256::SecretKey::from_slice(secret).unwrap();
        let pk = p256::PublicKey::from_sec1_bytes(public.as_bytes()).unwrap();
        p256::ecdh::diffie_hellman(sk.to_nonzero_scalar(), pk.as_affine())
            .raw_secret_bytes()
            .to_vec()
    };
    let mut dhs = vec![
        raw_dh(&hexv(v, "initiator_device_scalar"), &spk.public()),
        raw_dh(&hexv(v, "ephemeral_scalar"), &bob.public()),
        raw_dh(&hexv(v, "ephemeral_scalar"), &spk.public()),
    ];
    if with_one_time {
        dhs.push(raw_dh(&hexv(v, "ephemeral_scalar"), &opk.public()));
    }
    let kem_public: [u8; 1184] = kem_key.public().as_bytes().to_owned();
    let ek_pq = ml_kem::EncapsulationKey::<ml_kem::MlKem768>::new(&kem_public.into()).unwrap();
    let (ct, ss) = ek_pq.encapsulate_deterministic(&arr::<32>(v, "kem_randomness").into());
    let (pa, pb) = (phone(v, "initiator_phone"), phone(v, "phone"));
    let (ida, idb) = (id(v, "initiator_device_id"), id(v, "device_id"));
    let mut binding = b"carrier-v2 session\0".to_vec();
    for (p, d, k) in [(&pa, ida, alice.public()), (&pb, idb, bob.public())] {
        binding.extend(
            [
                &[p.as_str().len() as u8][..],
                p.as_str().as_bytes(),
                &d.get().to_be_bytes(),
                k.as_bytes(),
            ]
            .concat(),
        );
    }
    binding.extend(
        [
            &(num(v, "signed_prekey_id") as u32).to_be_bytes()[..],
            spk.public().as_bytes(),
        ]
        .concat(),
    );
    if with_one_time {
        binding.extend(
            [
                &(num(v, "one_time_prekey_id") as u32).to_be_bytes()[..],
                opk.public().as_bytes(),
            ]
            .concat(),
        );
    } else {
        binding.extend(0u32.to_be_bytes());
    }
    binding.extend(
        [
            &(kem_id as u32).to_be_bytes()[..],
            &kem_public,
            ek.public().as_bytes(),
            ct.as_slice(),
        ]
        .concat(),
    );
    let session_hash: [u8; 32] = Sha256::digest(&binding).into();
    let ikm = [vec![0xff; 32], dhs.concat(), ss.to_vec()].concat();
    let info = [&b"carrier-v2 pqxdh\0"[..], &session_hash].concat();
    let mut root_key = [0u8; 32];
    Hkdf::<Sha256>::new(Some(&[0u8; 32]), &ikm)
        .expand(&info, &mut root_key)
        .unwrap();

    let (kem_pub, spk_pub, opk_pub, alice_pub, bob_pub) = (
        kem_key.public(),
        spk.public(),
        opk.public(),
        alice.public(),
        bob.public(),
    );
    let prekeys = Prekeys {
        signed: (num(v, "signed_prekey_id") as u32, &spk_pub),
        one_time: with_one_time.then_some((num(v, "one_time_prekey_id") as u32, &opk_pub)),
        kem: (kem_id as u32, &kem_pub),
    };
    let a = Party {
        phone: &pa,
        device_id: ida,
        key: &alice_pub,
    };
    let b = Party {
        phone: &pb,
        device_id: idb,
        key: &bob_pub,
    };
    let (sent, lib_ct) = pqxdh::initiate(&alice, a, b, &prekeys, &ek, &arr(v, "kem_randomness"));
    assert_eq!(&lib_ct[..], ct.as_slice(), "ciphertext");
    assert_eq!(
        (*sent.root_key, sent.session_hash),
        (root_key, session_hash),
        "initiator"
    );
    let secrets = ResponderSecrets {
        own_key: &bob,
        signed: &spk,
        one_time: with_one_time.then_some(&opk),
        kem_shared: kem_key.decapsulate(&lib_ct),
    };
    let got = pqxdh::respond(&secrets, a, b, &prekeys, &ek.public(), &lib_ct);
    assert_eq!(
        (*got.root_key, got.session_hash),
        (root_key, session_hash),
        "responder"
    );
    let mut out = json!({
        "dh1": hex::encode(&dhs[0]),
        "dh2": hex::encode(&dhs[1]),
        "dh3": hex::encode(&dhs[2]),
        "ephemeral_point": hex::encode(ek.public().as_bytes()),
        "kem_ciphertext": hex::encode(ct.as_slice()),
        "kem_shared_secret": hex::encode(ss.as_slice()),
        "binding": hex::encode(&binding),
        "session_hash": hex::encode(session_hash),
        "session_id": hex::encode(&session_hash[..16]),
        "hkdf_ikm": hex::encode(&ikm),
        "hkdf_info": hex::encode(&info),
        "root_key": hex::encode(root_key),
    });
    if with_one_time {
        out["dh4"] = json!(hex::encode(&dhs[3]));
    }
    out
}

fn safety_inputs() -> Value {
    json!({
        "phone_a": "+12025550101",
        "account_scalar_a": "11".repeat(32),
        "phone_b": "+12025550102",
        "account_scalar_b": "12".repeat(32),
    })
}

fn safety(v: &Value) -> Value {
    let (a, b) = (
        account(v, "account_scalar_a"),
        account(v, "account_scalar_b"),
    );
    let (pa, pb) = (phone(v, "phone_a"), phone(v, "phone_b"));
    let number = safety_number(&pa, &a.public_key(), &pb, &b.public_key());
    assert_eq!(
        number,
        safety_number(&pb, &b.public_key(), &pa, &a.public_key())
    );
    let first_hash = |p: &PhoneNumber, k: &Identity| {
        let spki = k.public_key().to_spki_der();
        let input = [
            &b"carrier-v2 safety number\0"[..],
            &[12],
            p.as_str().as_bytes(),
            &(spki.len() as u16).to_be_bytes(),
            &spki,
        ]
        .concat();
        hex::encode(sha2::Sha512::digest(input))
    };
    json!({
        "spki_a": hex::encode(a.public_key().to_spki_der()),
        "spki_b": hex::encode(b.public_key().to_spki_der()),
        "first_hash_a": first_hash(&pa, &a),
        "first_hash_b": first_hash(&pb, &b),
        "safety_number": number,
    })
}

#[test]
fn statements_vector() {
    let file = read(STATEMENTS_FILE);
    assert_same("statements", &statements(&file["inputs"]), &file["outputs"]);
}

#[test]
fn pqxdh_vector() {
    let file = read(PQXDH_FILE);
    for (case, with) in [("with_one_time_prekeys", true), ("last_resort_only", false)] {
        assert_same(case, &pqxdh_case(&file["inputs"], with), &file[case]);
    }
}

#[test]
fn safety_number_vector() {
    let file = read(SAFETY_FILE);
    assert_same("safety number", &safety(&file["inputs"]), &file["outputs"]);
}

#[test]
#[ignore = "writes tests/vectors; run by hand after a deliberate format change"]
fn regenerate() {
    let s = statement_inputs();
    write(
        STATEMENTS_FILE,
        &json!({
            "description": "Carrier v2 signed statements: device certificate, device list, prekeys, bundle, claims, device login. \
                Byte strings are hex; phone numbers and names are text. ECDSA signatures are RFC 6979 then normalised to low S, \
                so every output is reproducible.",
            "inputs": s,
            "outputs": statements(&s),
        }),
    );
    let p = pqxdh_inputs();
    write(
        PQXDH_FILE,
        &json!({
            "description": "Carrier v2 PQXDH over P-256 and ML-KEM-768: the responder is the statements vector's device 1 and its prekeys. \
                Byte strings are hex; phone numbers are text.",
            "inputs": p,
            "with_one_time_prekeys": pqxdh_case(&p, true),
            "last_resort_only": pqxdh_case(&p, false),
        }),
    );
    let n = safety_inputs();
    write(
        SAFETY_FILE,
        &json!({
            "description": "Carrier v2 safety number. Byte strings are hex; phone numbers and the number are text.",
            "inputs": n,
            "outputs": safety(&n),
        }),
    );
    super::vectors_session::regenerate_session();
}
