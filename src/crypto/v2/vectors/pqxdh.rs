//! PQXDH with and without one-time prekeys, from the primitives.

use serde_json::{Value, json};

use hkdf::Hkdf;
use sha2::{Digest, Sha256};

use super::{arr, assert_same, device_key, ec, hexv, id, kem, num, phone, read, write};
use crate::crypto::v2::ec::PublicPoint;
use crate::crypto::v2::pqxdh::{self, Party, Prekeys, ResponderSecrets};

pub(super) const FILE: &str = "tests/vectors/v2_pqxdh.json";

/// The responder's keys come from the statements vector.
const FROM_STATEMENTS: [&str; 12] = [
    "account_scalar",
    "phone",
    "device_id",
    "device_scalar",
    "signed_prekey_scalar",
    "signed_prekey_id",
    "one_time_prekey_scalar",
    "one_time_prekey_id",
    "kem_last_resort_seed",
    "kem_last_resort_id",
    "kem_one_time_seed",
    "kem_one_time_id",
];

pub(super) fn inputs() -> Value {
    let statements = super::statements::inputs();
    let mut v = json!({
        "initiator_phone": "+12025550102",
        "initiator_device_id": 7,
        "initiator_device_scalar": "51".repeat(32),
        "ephemeral_scalar": "61".repeat(32),
        "kem_randomness": "71".repeat(32),
        "prekeys_created_at_ms": statements["prekeys_created_at_ms"],
    });
    for key in FROM_STATEMENTS {
        v[key] = statements[key].clone();
    }
    v
}

/// One PQXDH case, from the primitives, then checked against both sides.
fn case(v: &Value, with_one_time: bool) -> Value {
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

#[test]
fn pqxdh_vector() {
    let file = read(FILE);
    for (name, with) in [("with_one_time_prekeys", true), ("last_resort_only", false)] {
        assert_same(name, &case(&file["inputs"], with), &file[name]);
    }
}

pub(super) fn regenerate() {
    let v = inputs();
    let description = "Carrier v2 PQXDH over P-256 and ML-KEM-768. The responder is device 1 of the \
        statements vector with its prekeys. Byte strings are hex; phone numbers are text.";
    let (with, without) = (case(&v, true), case(&v, false));
    write(
        FILE,
        &json!({
            "description": description,
            "inputs": v,
            "with_one_time_prekeys": with,
            "last_resort_only": without,
        }),
    );
}
