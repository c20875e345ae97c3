//! The directory withdrawal's test vector (`tests/vectors/
//! directory_withdrawal.json`, docs/PROTOCOL.md §9.5): the statement a home
//! server signs, its RFC 6979 low-S signature, and the link frame carrying
//! it, recomputed from the inputs and compared byte for byte. Regenerate
//! after a deliberate format change with
//! `cargo test --lib crypto::withdrawal_vector::regenerate -- --ignored`.

use serde_json::{Value, json};

use super::Identity;
use crate::protocol::B64;
use crate::protocol::link::{LinkMessage, Withdrawal};
use crate::protocol::signed::withdrawal_bytes;

const FILE: &str = "tests/vectors/directory_withdrawal.json";

fn inputs() -> Value {
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

fn outputs(v: &Value) -> Value {
    let home = home_server(v);
    let home_key = home.public_key().to_spki_der();
    let registered_at = v["registered_at_ms"].as_i64().unwrap();
    let withdrawn_at = v["withdrawn_at_ms"].as_i64().unwrap();
    let phone = v["phone"].as_str().unwrap();
    let statement = withdrawal_bytes(phone, registered_at, withdrawn_at, &home_key);
    let signature = home.sign(&statement);
    let frame = LinkMessage::Withdrawn {
        withdrawals: vec![Withdrawal {
            phone: phone.into(),
            registered_at,
            withdrawn_at,
            home_key: B64(home_key.clone()),
            signature: B64(signature.clone()),
        }],
    };
    json!({
        "home_spki_der": hex::encode(&home_key),
        "statement": hex::encode(&statement),
        "statement_len": statement.len(),
        "signature": hex::encode(&signature),
        "link_frame_body": serde_json::to_value(frame).unwrap(),
    })
}

fn path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(FILE)
}

#[test]
fn withdrawal_vector() {
    let text = std::fs::read_to_string(path()).expect("vector file present");
    let file: Value = serde_json::from_str(&text).expect("vector file is JSON");
    assert_eq!(file["inputs"], inputs(), "the inputs changed");
    assert_eq!(outputs(&file["inputs"]), file["outputs"]);
    let statement = hex::decode(file["outputs"]["statement"].as_str().unwrap()).unwrap();
    assert!(statement.starts_with(b"carrier-v1 withdrawal\0"));
    let signature = hex::decode(file["outputs"]["signature"].as_str().unwrap()).unwrap();
    home_server(&file["inputs"])
        .public_key()
        .verify(&statement, &signature)
        .expect("the signature verifies under the home server's key");
}

/// Rewrites the vector file from the inputs.
#[test]
#[ignore = "writes tests/vectors; run by hand after a deliberate format change"]
fn regenerate() {
    let v = inputs();
    let description = "Carrier directory withdrawal (docs/PROTOCOL.md §9.5, §19.7): the bytes a \
        home server signs to withdraw a deleted user's entry, its signature (RFC 6979, low S) and \
        the link frame that carries it. Byte strings are hex.";
    let out = json!({"description": description, "inputs": v, "outputs": outputs(&v)});
    let mut text = serde_json::to_string_pretty(&out).unwrap();
    text.push('\n');
    std::fs::write(path(), text).unwrap();
}
