//! The safety number.

use serde_json::{Value, json};

use sha2::Digest;

use super::{account, assert_same, phone, read, write};
use crate::crypto::Identity;
use crate::crypto::v2::safety_number;
use crate::domain::PhoneNumber;

const FILE: &str = "tests/vectors/v2_safety_number.json";

fn inputs() -> Value {
    json!({
        "phone_a": "+12025550101",
        "account_scalar_a": "11".repeat(32),
        "phone_b": "+12025550102",
        "account_scalar_b": "12".repeat(32),
    })
}

fn outputs(v: &Value) -> Value {
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
fn safety_number_vector() {
    let file = read(FILE);
    assert_same("safety number", &outputs(&file["inputs"]), &file["outputs"]);
}

pub(super) fn regenerate() {
    let v = inputs();
    let description =
        "Carrier v2 safety number. Byte strings are hex; phone numbers and the number are text.";
    write(
        FILE,
        &json!({"description": description, "inputs": v, "outputs": outputs(&v)}),
    );
}
