//! The withdrawal statement's test vector, and how tombstones rank against
//! entries.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::*;
use crate::crypto::Identity;
use crate::protocol::UserInfo;
use crate::routing::directory::Entry;

const VECTOR_FILE: &str = "tests/vectors/directory_withdrawal.json";

fn vector_inputs() -> Value {
    json!({
        "home_server_scalar": "99".repeat(32),
        "phone": "+12025550101",
        "registered_at_ms": 1_700_000_000_000i64,
        "withdrawn_at_ms": 1_700_000_300_000i64,
    })
}

fn home_server(v: &Value) -> Identity {
    let scalar: [u8; 32] = hex::decode(v["home_server_scalar"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    Identity::from_p256_scalar_for_tests(&scalar).unwrap()
}

/// The vector's withdrawal, signed by its home server.
fn vector_withdrawal(v: &Value) -> Withdrawal {
    let home = home_server(v);
    let home_key = home.public_key().to_spki_der();
    let registered_at = v["registered_at_ms"].as_i64().unwrap();
    let withdrawn_at = v["withdrawn_at_ms"].as_i64().unwrap();
    let phone = v["phone"].as_str().unwrap();
    let statement = signed::withdrawal_bytes(phone, registered_at, withdrawn_at, &home_key);
    Withdrawal {
        phone: phone.into(),
        registered_at,
        withdrawn_at,
        signature: B64(home.sign(&statement)),
        home_key: B64(home_key),
    }
}

fn vector_outputs(v: &Value) -> Value {
    let w = vector_withdrawal(v);
    let statement =
        signed::withdrawal_bytes(&w.phone, w.registered_at, w.withdrawn_at, &w.home_key.0);
    json!({
        "home_spki_der": hex::encode(&w.home_key.0),
        "statement": hex::encode(&statement),
        "statement_len": statement.len(),
        "signature": hex::encode(&w.signature.0),
        "link_frame_body": serde_json::to_value(LinkMessage::Withdrawn { withdrawals: vec![w] }).unwrap(),
    })
}

fn vector_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(VECTOR_FILE)
}

#[test]
fn withdrawal_vector() {
    let text = std::fs::read_to_string(vector_path()).expect("vector file present");
    let file: Value = serde_json::from_str(&text).expect("vector file is JSON");
    assert_eq!(file["inputs"], vector_inputs(), "inputs changed");
    assert_eq!(vector_outputs(&file["inputs"]), file["outputs"]);
    let w: Withdrawal =
        serde_json::from_value(file["outputs"]["link_frame_body"]["withdrawals"][0].clone())
            .unwrap();
    let t = Tombstone::from_wire(&w, 1_800_000_000_000).expect("the vector verifies");
    assert_eq!(
        t.home,
        home_server(&file["inputs"]).public_key().fingerprint()
    );
}

/// Rewrites the vector file after a deliberate format change.
#[test]
#[ignore = "writes tests/vectors; run by hand after a deliberate format change"]
fn regenerate() {
    let v = vector_inputs();
    let description = "Carrier directory withdrawal (docs/PROTOCOL.md §8.4, §11.7): the bytes a \
        home server signs to withdraw a deleted user's entry, its signature (RFC 6979, low S) and \
        the link frame that carries it. Byte strings are hex.";
    let out = json!({"description": description, "inputs": v, "outputs": vector_outputs(&v)});
    let mut text = serde_json::to_string_pretty(&out).unwrap();
    text.push('\n');
    std::fs::write(vector_path(), text).unwrap();
}

#[test]
fn only_the_signature_of_the_key_named_verifies() {
    let v = vector_inputs();
    let w = vector_withdrawal(&v);
    let now = 1_800_000_000_000;
    assert!(Tombstone::from_wire(&w, now).is_ok());
    let mut later = w.clone();
    later.registered_at += 1;
    assert!(matches!(
        Tombstone::from_wire(&later, now),
        Err(WithdrawalError::Signature)
    ));
    let other = Identity::from_p256_scalar_for_tests(&[0x12; 32]).unwrap();
    let mut forged = w.clone();
    forged.home_key = B64(other.public_key().to_spki_der());
    assert!(matches!(
        Tombstone::from_wire(&forged, now),
        Err(WithdrawalError::Signature)
    ));
    let mut high_s = w.clone();
    high_s.signature = B64(high_s_twin(&w.signature.0));
    assert!(matches!(
        Tombstone::from_wire(&high_s, now),
        Err(WithdrawalError::Signature)
    ));
    assert!(matches!(
        Tombstone::from_wire(&w, w.withdrawn_at - FUTURE_LIMIT_MS - 1),
        Err(WithdrawalError::Future)
    ));
}

/// (r, n − s): the same signature with a high S.
fn high_s_twin(sig: &[u8]) -> Vec<u8> {
    let sig = p256::ecdsa::Signature::from_slice(sig).unwrap();
    let (r, s) = sig.split_scalars();
    p256::ecdsa::Signature::from_scalars(r.to_bytes(), (-*s).to_bytes())
        .unwrap()
        .to_vec()
}

fn phone() -> PhoneNumber {
    PhoneNumber::from_canonical("+12025550101").unwrap()
}

fn tombstone(registered_at: i64, home: &[u8]) -> Tombstone {
    Tombstone {
        phone: phone(),
        registered_at,
        withdrawn_at: registered_at + 10,
        home: Fingerprint::of_spki(home),
        home_key: home.to_vec(),
        signature: b"signed".to_vec(),
    }
}

fn entry(registered_at: i64, home: &[u8]) -> Entry {
    Entry {
        phone: phone(),
        info: UserInfo {
            phone: phone().as_str().into(),
            key_type: KeyType::P256,
            fingerprint: Fingerprint::of_spki(b"user").to_hex(),
            public_key: B64(b"user".to_vec()),
            registered_at,
            devices: None,
        },
        home: Fingerprint::of_spki(home),
        home_key: home.to_vec(),
        home_name: "home".into(),
        signature: b"signed".to_vec(),
        via: Some(Fingerprint::of_spki(b"neighbour")),
        hops: 1,
    }
}

fn directory(entries: &[Entry], tombstones: &[Tombstone]) -> Directory {
    Directory::holding(
        entries
            .iter()
            .map(|e| (e.phone.clone(), Arc::new(e.clone())))
            .collect(),
        tombstones
            .iter()
            .map(|t| (t.phone.clone(), Arc::new(t.clone())))
            .collect::<HashMap<_, _>>(),
    )
}

#[test]
fn a_withdrawal_removes_its_registration_and_earlier_ones_only() {
    let held = entry(1_000, b"home");
    let d = directory(std::slice::from_ref(&held), &[]);
    assert!(
        d.judge_withdrawal(&tombstone(1_000, b"home")),
        "same version"
    );
    assert!(d.judge_withdrawal(&tombstone(2_000, b"home")), "later");
    assert!(
        !d.judge_withdrawal(&tombstone(999, b"home")),
        "a replayed withdrawal of an earlier registration"
    );
    assert!(directory(&[], &[]).judge_withdrawal(&tombstone(1_000, b"home")));
}

#[test]
fn a_tombstone_refuses_stale_entries_and_yields_to_later_ones() {
    let d = directory(&[], &[tombstone(1_000, b"home")]);
    assert!(matches!(
        d.judge(&entry(1_000, b"home")),
        crate::routing::directory::Applied::Unchanged
    ));
    assert!(matches!(
        d.judge(&entry(900, b"elsewhere")),
        crate::routing::directory::Applied::Unchanged
    ));
    assert!(matches!(
        d.judge(&entry(1_001, b"home")),
        crate::routing::directory::Applied::Updated
    ));
    assert!(
        !d.judge_withdrawal(&tombstone(1_000, b"home")),
        "not news twice"
    );
    assert!(!d.judge_withdrawal(&tombstone(500, b"home")));
    assert!(d.judge_withdrawal(&tombstone(1_500, b"home")));
}
