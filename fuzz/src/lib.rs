//! Fixtures shared by the fuzz targets: fixed keys, the test-vector
//! envelopes, and the oracle that a JSON value re-encodes to itself.

use carrier::crypto::Identity;
use carrier::domain::PhoneNumber;
use p256::ecdsa::SigningKey;
use serde::{Serialize, de::DeserializeOwned};

pub use serde;

/// A P-256 identity from a repeated byte, as the test vectors make theirs.
pub fn p256_identity(byte: u8) -> Identity {
    Identity::P256(SigningKey::from_slice(&[byte; 32]).expect("a valid scalar"))
}

pub fn phone(e164: &str) -> PhoneNumber {
    PhoneNumber::from_canonical(e164).expect("a valid phone")
}

/// The envelope of `tests/vectors/envelope_p256.json`: from the key of
/// scalar 0x11… (`+12025550101`) to the key of scalar 0x22… (`+12025550102`).
pub fn p256_vector_envelope() -> Vec<u8> {
    let file: serde_json::Value =
        serde_json::from_str(include_str!("../../tests/vectors/envelope_p256.json"))
            .expect("vector file is JSON");
    hex::decode(file["outputs"]["envelope"].as_str().expect("envelope hex")).expect("hex")
}

/// The RSA vector of `tests/vectors/envelope_rsa.json`: its key, its phone
/// and its envelope (the key sends to itself).
pub fn rsa_vector() -> (Identity, PhoneNumber, Vec<u8>) {
    let file: serde_json::Value =
        serde_json::from_str(include_str!("../../tests/vectors/envelope_rsa.json"))
            .expect("vector file is JSON");
    let key = Identity::from_pkcs8_pem(file["rsa_private_key_pem"].as_str().unwrap(), None)
        .expect("vector key");
    let me = phone(file["recipient_phone"].as_str().unwrap());
    let envelope = hex::decode(file["envelope"].as_str().unwrap()).expect("hex");
    (key, me, envelope)
}

/// What Carrier parsed from JSON must encode to JSON that parses back to
/// the same encoding: nothing is lost or invented between the two.
pub fn assert_json_round_trip<T: Serialize + DeserializeOwned>(value: &T) {
    let once = serde_json::to_vec(value).expect("a parsed value encodes");
    let back: T = serde_json::from_slice(&once).expect("what Carrier encodes parses");
    let twice = serde_json::to_vec(&back).expect("encodes again");
    assert_eq!(once, twice, "JSON round trip changed the value");
}
