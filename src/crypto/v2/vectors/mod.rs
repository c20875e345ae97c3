//! Test vectors for v2 in `tests/vectors/v2_*.json` (docs/PROTOCOL.md
//! §18). Each test recomputes the file from its inputs and compares every
//! output; intermediate values (ECDH outputs, binding, HKDF inputs, message
//! keys) are computed here straight from the primitive crates and the
//! layouts written out by hand, independently of the code under test.
//!
//! After a deliberate format change:
//! `cargo test --lib crypto::v2::vectors::regenerate -- --ignored`.

mod link;
mod padding;
mod pqxdh;
mod safety;
mod session;
mod statements;

use serde_json::Value;

use super::DeviceId;
use super::ec::{DeviceKey, EcSecret};
use super::kem::KemSecret;
use crate::crypto::Identity;
use crate::domain::PhoneNumber;

fn read(file: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    serde_json::from_str(&std::fs::read_to_string(path).expect("vector file")).expect("JSON")
}

fn write(file: &str, value: &Value) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    std::fs::write(path, serde_json::to_string_pretty(value).unwrap() + "\n").unwrap();
}

fn hexv(v: &Value, key: &str) -> Vec<u8> {
    hex::decode(v[key].as_str().unwrap_or_else(|| panic!("{key}"))).expect("hex")
}

fn arr<const N: usize>(v: &Value, key: &str) -> [u8; N] {
    hexv(v, key)
        .try_into()
        .unwrap_or_else(|_| panic!("{key} has {N} bytes"))
}

fn num(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is a number"))
}

fn phone(v: &Value, key: &str) -> PhoneNumber {
    PhoneNumber::from_canonical(v[key].as_str().unwrap()).unwrap()
}

fn id(v: &Value, key: &str) -> DeviceId {
    DeviceId::new(num(v, key) as u32).unwrap()
}

fn device_key(v: &Value, key: &str) -> DeviceKey {
    DeviceKey::from_bytes(&hexv(v, key)).unwrap()
}

fn ec(v: &Value, key: &str) -> EcSecret {
    EcSecret::from_bytes(&hexv(v, key)).unwrap()
}

fn kem(v: &Value, key: &str) -> KemSecret {
    KemSecret::from_seed(&arr(v, key))
}

fn account(v: &Value, key: &str) -> Identity {
    Identity::from_p256_scalar_for_tests(&arr(v, key)).unwrap()
}

/// Every output in `computed` equals the file's, and the file has no more.
fn assert_same(name: &str, computed: &Value, stored: &Value) {
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

#[test]
#[ignore = "writes tests/vectors; run by hand after a deliberate format change"]
fn regenerate() {
    statements::regenerate();
    pqxdh::regenerate();
    safety::regenerate();
    session::regenerate();
    link::regenerate();
    padding::regenerate();
}
