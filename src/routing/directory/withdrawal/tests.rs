//! Checking a withdrawal's signature (on the statement test vector), and
//! how tombstones rank against entries.

use std::collections::HashMap;

use serde_json::Value;

use super::*;
use crate::protocol::UserInfo;
use crate::routing::directory::Entry;

/// The withdrawal of the statement test vector (checked byte for byte by
/// `crypto::withdrawal_vector`), as it travels on a link.
fn vector_withdrawal() -> Withdrawal {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors/directory_withdrawal.json");
    let text = std::fs::read_to_string(path).expect("vector file present");
    let file: Value = serde_json::from_str(&text).expect("vector file is JSON");
    serde_json::from_value(file["outputs"]["link_frame_body"]["withdrawals"][0].clone())
        .expect("a withdrawal")
}

/// The SPKI of another P-256 key: the envelope vector's sender.
const OTHER_SPKI: &str = "3059301306072a8648ce3d020106082a8648ce3d030107034200040217e617f0b6443928278f96999e69a23a4f2c152bdf6d6cdf66e5b80282d4ed194a7debcb97712d2dda3ca85aa8765a56f45fc758599652f2897c65306e5794";

#[test]
fn only_the_signature_of_the_key_named_verifies() {
    let w = vector_withdrawal();
    let now = 1_800_000_000_000;
    let t = Tombstone::from_wire(&w, now).expect("the vector verifies");
    assert_eq!(t.home, Fingerprint::of_spki(&w.home_key.0));
    assert_eq!(t.version(), Version::new(w.registered_at, t.home));
    let mut later = w.clone();
    later.registered_at += 1;
    assert!(matches!(
        Tombstone::from_wire(&later, now),
        Err(WithdrawalError::Signature)
    ));
    let mut forged = w.clone();
    forged.home_key = B64(hex::decode(OTHER_SPKI).unwrap());
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
}

fn tombstone_of(phone: &str, withdrawn_at: i64, home: &[u8]) -> Tombstone {
    Tombstone {
        phone: PhoneNumber::from_canonical(phone).unwrap(),
        withdrawn_at,
        ..tombstone(1, home)
    }
}

#[test]
fn a_withdrawal_for_a_phone_not_held_needs_a_home_already_known() {
    let stranger = tombstone(1_000, b"stranger");
    assert!(
        !directory(&[], &[]).judge_withdrawal(&stranger),
        "a key nobody knows"
    );
    let mut other_user = entry(1_000, b"stranger");
    other_user.phone = PhoneNumber::from_canonical("+12025550199").unwrap();
    assert!(
        directory(&[other_user], &[]).judge_withdrawal(&stranger),
        "a home that signs an entry held"
    );
    let earlier = tombstone_of("+12025550199", 5, b"stranger");
    assert!(
        directory(&[], &[earlier]).judge_withdrawal(&stranger),
        "a home that signs a tombstone held"
    );
}

#[test]
fn a_home_over_its_share_evicts_only_its_own_oldest() {
    let mut held = HashMap::new();
    for (i, home) in [(0, b"flooder" as &[u8]), (1, b"honest")]
        .into_iter()
        .flat_map(|(h, home)| (0..10).map(move |i| (h * 100 + i, home)))
    {
        let t = tombstone_of(&format!("+1202555{i:04}"), i64::from(i), home);
        held.insert(t.phone.clone(), Arc::new(t));
    }
    let flooder = Fingerprint::of_spki(b"flooder");
    let t = tombstone_of("+12025559999", 1_000, b"flooder");
    held.insert(t.phone.clone(), Arc::new(t));
    // The flooder holds 11, over its share of 10: its oldest go, down to 9.
    let evicted = evictions(&held, Some(flooder), 10, 100);
    assert_eq!(evicted.len(), 2);
    for phone in &evicted {
        assert_eq!(held[phone].home, flooder, "only the flooder's go");
        assert!(held[phone].withdrawn_at < 2, "the oldest go");
    }
    assert!(evictions(&held, Some(Fingerprint::of_spki(b"honest")), 10, 100).is_empty());
    // Over the total, the home holding most gives way.
    let evicted = evictions(&held, None, 100, 20);
    assert!(!evicted.is_empty());
    assert!(evicted.iter().all(|p| held[p].home == flooder));
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
