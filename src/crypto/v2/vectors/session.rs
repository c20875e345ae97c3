//! The conversation vector (`tests/vectors/v2_session.json`): the first
//! messages in both directions with exact envelope bytes, two DH ratchet
//! steps and two messages opened out of order. Every message key is derived
//! here again from the PQXDH root key with HKDF and HMAC directly, and each
//! envelope is decrypted with it, independently of `ratchet.rs`.

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use super::statements::vector_prekeys;
use super::{account, arr, assert_same, device_key, ec, hexv, id, num, phone, read, write};
use crate::crypto::Identity;
use crate::crypto::v2::ec::{EcSecret, PublicPoint};
use crate::crypto::v2::fixture::NOW;
use crate::crypto::v2::{
    ClaimedPrekeys, Content, DeviceCertificate, DeviceList, Envelope, LocalDevice, PrekeyBundle,
    PrekeyStore, Session, VerifiedDevice,
};
use crate::domain::MessageId;

const FILE: &str = "tests/vectors/v2_session.json";

fn inputs() -> Value {
    json!({
        "initiator_account_scalar": "12".repeat(32),
        "ratchet_scalars": {"m1": "81".repeat(32), "r1": "82".repeat(32), "m4": "83".repeat(32)},
        "messages": [
            {"name": "m1", "from": "initiator", "id": "01".repeat(16), "sent_at_ms": NOW + 1, "text": "Hello, Bob! \u{2709} caf\u{e9}"},
            {"name": "m2", "from": "initiator", "id": "02".repeat(16), "sent_at_ms": NOW + 2, "text": "lost for a while"},
            {"name": "m3", "from": "initiator", "id": "03".repeat(16), "sent_at_ms": NOW + 3, "text": "third"},
            {"name": "r1", "from": "responder", "id": "04".repeat(16), "sent_at_ms": NOW + 4, "text": "Hi Alice"},
            {"name": "m4", "from": "initiator", "id": "05".repeat(16), "sent_at_ms": NOW + 5, "text": "after two steps"},
        ],
        "receive_order": ["m1", "m3", "r1", "m4", "m2"],
    })
}

fn verified(
    account: &Identity,
    device: &LocalDevice,
) -> (VerifiedDevice, DeviceCertificate, DeviceList) {
    let key = device.key().public();
    let cert = DeviceCertificate::issue(
        account,
        &device.phone,
        device.device_id,
        &key,
        "device",
        NOW,
    )
    .unwrap();
    let list = DeviceList::issue(
        account,
        &device.phone,
        1,
        NOW,
        vec![(device.device_id, key)],
    )
    .unwrap();
    let seen = list
        .clone()
        .verify(&account.public_key(), &device.phone)
        .unwrap()
        .certify(&cert)
        .unwrap();
    (seen, cert, list)
}

/// The responder's prekey store, written in its documented encoding.
fn responder_store(v: &Value) -> PrekeyStore {
    let mut bytes = vec![1u8, 0, 0, 0, 4];
    let at = num(v, "prekeys_created_at_ms").to_be_bytes();
    let head = |id_key: &str| [&(num(v, id_key) as u32).to_be_bytes()[..], &at].concat();
    bytes.extend(
        [
            &[0, 1][..],
            &head("signed_prekey_id"),
            &hexv(v, "signed_prekey_scalar"),
            &[0, 0],
        ]
        .concat(),
    );
    bytes.extend(
        [
            &[0, 1][..],
            &head("one_time_prekey_id"),
            &hexv(v, "one_time_prekey_scalar"),
        ]
        .concat(),
    );
    bytes.extend(
        [
            &[0, 1][..],
            &head("kem_last_resort_id"),
            &hexv(v, "kem_last_resort_seed"),
        ]
        .concat(),
    );
    bytes.extend(
        [
            &[0, 1][..],
            &head("kem_one_time_id"),
            &hexv(v, "kem_one_time_seed"),
        ]
        .concat(),
    );
    PrekeyStore::from_bytes(&bytes).unwrap()
}

fn kdf_root(root: &[u8], dh: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut okm = [0u8; 64];
    Hkdf::<Sha256>::new(Some(root), dh)
        .expand(b"carrier-v2 ratchet", &mut okm)
        .unwrap();
    (okm[..32].to_vec(), okm[32..].to_vec())
}

/// (next chain key, message key)
fn kdf_chain(ck: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mac = |b: u8| {
        let mut m = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(ck).unwrap();
        m.update(&[b]);
        m.finalize().into_bytes().to_vec()
    };
    (mac(2), mac(1))
}

fn dh(secret: &EcSecret, public: &PublicPoint) -> Vec<u8> {
    let sk = p256::SecretKey::from_slice(&secret.to_bytes()[..]).unwrap();
    let pk = p256::PublicKey::from_sec1_bytes(public.as_bytes()).unwrap();
    p256::ecdh::diffie_hellman(sk.to_nonzero_scalar(), pk.as_affine())
        .raw_secret_bytes()
        .to_vec()
}

/// Opens an envelope with a message key derived by hand; returns its
/// intermediate values for the file.
fn check_by_hand(envelope: &[u8], mk: &[u8], session_hash: &[u8], msg: &Value) -> Value {
    let mut okm = [0u8; 44];
    Hkdf::<Sha256>::new(Some(&[0u8; 32]), mk)
        .expand(b"carrier-v2 message key", &mut okm)
        .unwrap();
    let text = msg["text"].as_str().unwrap().as_bytes();
    let mut padded = [
        &[1u8][..],
        &num(msg, "sent_at_ms").to_be_bytes(),
        &(text.len() as u32).to_be_bytes(),
        text,
    ]
    .concat();
    padded.resize(256, 0);
    let ct_start = envelope.len() - 64 - (256 + 16);
    assert_eq!(envelope[ct_start - 4..ct_start], 272u32.to_be_bytes(), "C");
    let aad = [session_hash, &envelope[..ct_start]].concat();
    let nonce: [u8; 12] = okm[32..].try_into().unwrap();
    let plain = Aes256Gcm::new_from_slice(&okm[..32])
        .unwrap()
        .decrypt(
            (&nonce).into(),
            Payload {
                msg: &envelope[ct_start..envelope.len() - 64],
                aad: &aad,
            },
        )
        .expect("the hand-derived key opens the envelope");
    assert_eq!(plain, padded);
    json!({
        "message_key": hex::encode(mk),
        "aes_key": hex::encode(&okm[..32]),
        "nonce": hex::encode(&okm[32..]),
        "padded_plaintext": hex::encode(&padded),
        "envelope": hex::encode(envelope),
    })
}

fn conversation(v: &Value) -> Value {
    let alice = LocalDevice::new(
        phone(v, "initiator_phone"),
        id(v, "initiator_device_id"),
        device_key(v, "initiator_device_scalar"),
    );
    let bob = LocalDevice::new(
        phone(v, "phone"),
        id(v, "device_id"),
        device_key(v, "device_scalar"),
    );
    let (alice_seen, ..) = verified(&account(v, "initiator_account_scalar"), &alice);
    let (bob_seen, bob_cert, bob_list) = verified(&account(v, "account_scalar"), &bob);
    let mut store = responder_store(v);
    let [spk, kem_lr, opk, kem_ot] = vector_prekeys(v);
    let list = bob_list
        .verify(&account(v, "account_scalar").public_key(), &bob.phone)
        .unwrap();
    let bundle = PrekeyBundle {
        certificate: bob_cert,
        signed_prekey: spk,
        kem_prekey: kem_lr,
    };
    let claim = ClaimedPrekeys {
        device_id: bob.device_id,
        one_time: Some(opk),
        kem_one_time: Some(kem_ot),
    };
    let bundle = bundle
        .verify(&list, NOW)
        .unwrap()
        .with_claim(&claim)
        .unwrap();
    let mut a = Session::initiate_with(
        &alice,
        &bundle,
        &ec(v, "ephemeral_scalar"),
        &arr(v, "kem_randomness"),
        NOW,
    );

    let msgs: Vec<&Value> = v["messages"].as_array().unwrap().iter().collect();
    let fresh = |name: &str| {
        let scalar = v["ratchet_scalars"][name].as_str().map(str::to_owned);
        move || {
            EcSecret::from_bytes(&hex::decode(scalar.expect("a ratchet step here")).unwrap())
                .unwrap()
        }
    };
    let seal = |s: &mut Session, from: &LocalDevice, m: &Value| {
        let content = Content::Text(m["text"].as_str().unwrap().into());
        let name = m["name"].as_str().unwrap();
        s.seal_with(
            from,
            MessageId::from_bytes(arr(m, "id")),
            &content,
            num(m, "sent_at_ms"),
            fresh(name),
        )
        .unwrap()
    };
    let [m1, m2, m3] = [0, 1, 2].map(|i| seal(&mut a, &alice, msgs[i]));
    let env = |b: &[u8]| Envelope::parse(b).unwrap();
    let (mut b, opened) = Session::accept(&bob, &mut store, &alice_seen, &env(&m1), NOW).unwrap();
    assert_eq!(
        opened.content,
        Content::Text(msgs[0]["text"].as_str().unwrap().into())
    );
    b.open(&bob, &alice_seen, &env(&m3), NOW).unwrap();
    assert_eq!(b.skipped_count(), 1);
    let r1 = seal(&mut b, &bob, msgs[3]);
    a.open(&alice, &bob_seen, &env(&r1), NOW).unwrap();
    assert!(!a.is_pending());
    let m4 = seal(&mut a, &alice, msgs[4]);
    b.open(&bob, &alice_seen, &env(&m4), NOW).unwrap();
    let late = b.open(&bob, &alice_seen, &env(&m2), NOW).unwrap();
    assert_eq!(
        late.content,
        Content::Text(msgs[1]["text"].as_str().unwrap().into())
    );
    assert_eq!((b.skipped_count(), store.one_time_counts()), (0, (0, 0)));

    let pq = &read(super::pqxdh::FILE)["with_one_time_prekeys"];
    let (root0, hash) = (hexv(pq, "root_key"), hexv(pq, "session_hash"));
    let spk_pub = ec(v, "signed_prekey_scalar").public();
    let (r_a1, r_b1, r_a2) = (fresh("m1")(), fresh("r1")(), fresh("m4")());
    let (root1, mut ck_a) = kdf_root(&root0, &dh(&r_a1, &spk_pub));
    let mut keys_a1 = Vec::new();
    for _ in 0..3 {
        let (next, mk) = kdf_chain(&ck_a);
        keys_a1.push(mk);
        ck_a = next;
    }
    let (root2, ck_b) = kdf_root(&root1, &dh(&r_b1, &r_a1.public()));
    let (root3, ck_a2) = kdf_root(&root2, &dh(&r_a2, &r_b1.public()));
    let messages = [
        (&m1, &keys_a1[0], 0),
        (&m2, &keys_a1[1], 1),
        (&m3, &keys_a1[2], 2),
        (&r1, &kdf_chain(&ck_b).1, 3),
        (&m4, &kdf_chain(&ck_a2).1, 4),
    ];
    let mut out = serde_json::Map::new();
    for (bytes, mk, i) in messages {
        let name = msgs[i]["name"].as_str().unwrap().to_owned();
        out.insert(name, check_by_hand(bytes, mk, &hash, msgs[i]));
    }
    out.insert(
        "root_keys".into(),
        json!([hex::encode(root1), hex::encode(root2), hex::encode(root3)]),
    );
    out.insert(
        "ratchet_points".into(),
        json!({
            "m1": hex::encode(r_a1.public().as_bytes()),
            "r1": hex::encode(r_b1.public().as_bytes()),
            "m4": hex::encode(r_a2.public().as_bytes()),
        }),
    );
    Value::Object(out)
}

fn file_inputs() -> Value {
    let mut v = read(super::pqxdh::FILE)["inputs"].clone();
    v.as_object_mut()
        .unwrap()
        .extend(inputs().as_object().unwrap().clone());
    v
}

#[test]
fn session_vector() {
    let file = read(FILE);
    assert_eq!(
        file["inputs"],
        file_inputs(),
        "inputs follow the PQXDH vector's"
    );
    assert_same("session", &conversation(&file["inputs"]), &file["outputs"]);
}

pub(super) fn regenerate() {
    let v = file_inputs();
    write(
        FILE,
        &json!({
            "description": "Carrier v2 session between the PQXDH vector's initiator and responder (with one-time prekeys): \
                messages m1-m3 (kind 1) from the initiator, the responder opens m1 and m3, answers r1 (a DH step), the initiator \
                sends m4 (a second DH step), the responder opens m4 and then m2 from its skipped keys. Byte strings are hex; \
                phone numbers and texts are text.",
            "inputs": v,
            "outputs": conversation(&v),
        }),
    );
}
