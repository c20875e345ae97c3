//! Test vectors in `tests/vectors/`, so the envelope and transcript formats
//! cannot drift unnoticed and other implementations have something to check
//! against. Intermediate values are recomputed here straight from the
//! primitive crates, independently of `envelope.rs`, and compared with the
//! files; then the sealed envelope itself is compared byte for byte.
//!
//! To regenerate after a deliberate format change:
//! `cargo test --lib crypto::vectors::regenerate -- --ignored`.

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use hkdf::Hkdf;
use p256::elliptic_curve::sec1::ToSec1Point;
use rsa::Oaep;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::envelope::{SealRandomness, seal_with};
use super::{Identity, Outgoing, Purpose, auth_transcript, open};
use crate::domain::{MessageId, PhoneNumber};
use crate::protocol::KeyType;
use crate::protocol::envelope::parse;

const P256_FILE: &str = "tests/vectors/envelope_p256.json";
const RSA_FILE: &str = "tests/vectors/envelope_rsa.json";

fn path(file: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file)
}

fn read(file: &str) -> Value {
    let text = std::fs::read_to_string(path(file)).expect("vector file present");
    serde_json::from_str(&text).expect("vector file is JSON")
}

fn write(file: &str, value: &Value) {
    let text = serde_json::to_string_pretty(value).unwrap() + "\n";
    std::fs::create_dir_all(path(file).parent().unwrap()).unwrap();
    std::fs::write(path(file), text).unwrap();
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is a string"))
}

fn bytes(v: &Value, key: &str) -> Vec<u8> {
    hex::decode(s(v, key)).unwrap_or_else(|_| panic!("{key} is hex"))
}

fn array<const N: usize>(v: &Value, key: &str) -> [u8; N] {
    bytes(v, key)
        .try_into()
        .unwrap_or_else(|_| panic!("{key} has {N} bytes"))
}

fn phone(v: &Value, key: &str) -> PhoneNumber {
    PhoneNumber::from_canonical(s(v, key)).unwrap()
}

fn identity(v: &Value, key: &str) -> Identity {
    Identity::from_p256_scalar_for_tests(&array(v, key)).unwrap()
}

fn default_p256_inputs() -> Value {
    json!({
        "sender_scalar": "11".repeat(32),
        "recipient_scalar": "22".repeat(32),
        "ephemeral_scalar": "33".repeat(32),
        "nonce": "000102030405060708090a0b",
        "id": "00112233445566778899aabbccddeeff",
        "counter": 42,
        "sent_at_ms": 1_700_000_000_000u64,
        "sender_phone": "+12025550101",
        "recipient_phone": "+12025550102",
        "text": "Hello, Bob! \u{2709} caf\u{e9}",
    })
}

fn default_transcript_inputs() -> Value {
    json!({
        "purpose": "login",
        "signer_scalar": "11".repeat(32),
        "exporter": "44".repeat(32),
        "nonce": "55".repeat(32),
        "phone": "+12025550101",
    })
}

fn outgoing<'a>(
    inputs: &'a Value,
    sender: &'a PhoneNumber,
    recipient: &'a PhoneNumber,
) -> Outgoing<'a> {
    Outgoing {
        id: MessageId::from_bytes(array(inputs, "id")),
        counter: inputs["counter"].as_u64().unwrap(),
        sent_at_ms: inputs["sent_at_ms"].as_u64().unwrap(),
        sender_phone: sender,
        recipient_phone: recipient,
        text: s(inputs, "text"),
    }
}

fn point_hex(id: &Identity) -> String {
    match id.public_key() {
        super::PublicKey::P256(pk) => hex::encode(pk.to_sec1_point(false).as_bytes()),
        super::PublicKey::Rsa(_) => unreachable!("P-256 vectors"),
    }
}

/// Every output of the P-256 vector, recomputed from its inputs.
fn p256_outputs(inputs: &Value) -> Value {
    let sender = identity(inputs, "sender_scalar");
    let recipient = identity(inputs, "recipient_scalar");
    let ephemeral = p256::SecretKey::from_slice(&bytes(inputs, "ephemeral_scalar")).unwrap();
    let eph_point = ephemeral
        .public_key()
        .to_sec1_point(false)
        .as_bytes()
        .to_vec();
    let rcpt_point = hex::decode(point_hex(&recipient)).unwrap();

    let shared = match recipient.public_key() {
        super::PublicKey::P256(pk) => ephemeral.diffie_hellman(&pk),
        super::PublicKey::Rsa(_) => unreachable!(),
    };
    let salt = [&b"carrier-v1"[..], &eph_point, &rcpt_point].concat();
    let mut aes_key = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(Some(&salt), shared.raw_secret_bytes())
        .expand(b"carrier-v1 message key", aes_key.as_mut())
        .unwrap();

    let (alice, bob) = (
        phone(inputs, "sender_phone"),
        phone(inputs, "recipient_phone"),
    );
    let msg = outgoing(inputs, &alice, &bob);
    let rnd = SealRandomness {
        ephemeral,
        aes_key: Zeroizing::new([0; 32]),
        nonce: array(inputs, "nonce"),
    };
    let envelope = seal_with(&sender, &recipient.public_key(), &msg, &rnd).unwrap();
    let view = parse(&envelope).unwrap();
    let ct = Aes256Gcm::new((&*aes_key).into())
        .encrypt(
            (&rnd.nonce).into(),
            Payload {
                msg: msg.text.as_bytes(),
                aad: view.aad,
            },
        )
        .unwrap();
    assert_eq!(
        view.ciphertext, ct,
        "envelope ciphertext = AES-256-GCM(HKDF key)"
    );
    assert_eq!(view.key_block, eph_point, "key block = ephemeral point");
    let signed_sha256 = Sha256::digest(view.signed);
    let sender_spki = sender.public_key().to_spki_der();

    json!({
        "sender_spki_der": hex::encode(&sender_spki),
        "sender_fingerprint": sender.fingerprint().to_hex(),
        "sender_point": point_hex(&sender),
        "recipient_point": hex::encode(&rcpt_point),
        "ephemeral_point": hex::encode(&eph_point),
        "ecdh_shared_x": hex::encode(shared.raw_secret_bytes()),
        "hkdf_salt": hex::encode(&salt),
        "hkdf_info": hex::encode(b"carrier-v1 message key"),
        "aes_key": hex::encode(aes_key.as_ref()),
        "aad": hex::encode(view.aad),
        "ciphertext_and_tag": hex::encode(&ct),
        "signed_sha256": hex::encode(signed_sha256),
        "signature": hex::encode(view.signature),
        "envelope": hex::encode(&envelope),
    })
}

fn transcript_outputs(inputs: &Value) -> Value {
    assert_eq!(s(inputs, "purpose"), "login");
    let signer = identity(inputs, "signer_scalar");
    let spki = signer.public_key().to_spki_der();
    let transcript = auth_transcript(
        Purpose::Login,
        &array(inputs, "exporter"),
        &array(inputs, "nonce"),
        &phone(inputs, "phone"),
        &spki,
    );
    let signature = signer.sign(&transcript);
    signer.public_key().verify(&transcript, &signature).unwrap();
    json!({
        "spki_der": hex::encode(&spki),
        "transcript": hex::encode(&transcript),
        "signature": hex::encode(&signature),
    })
}

fn assert_same(name: &str, computed: &Value, stored: &Value) {
    let (computed, stored) = (computed.as_object().unwrap(), stored.as_object().unwrap());
    for (key, value) in computed {
        assert_eq!(
            Some(value),
            stored.get(key),
            "{name}.{key} differs from the vector file"
        );
    }
    assert_eq!(computed.len(), stored.len(), "{name} has unexpected fields");
}

#[test]
fn p256_envelope_vector() {
    let file = read(P256_FILE);
    let inputs = &file["inputs"];
    assert_same("outputs", &p256_outputs(inputs), &file["outputs"]);

    let recipient = identity(inputs, "recipient_scalar");
    let sender = identity(inputs, "sender_scalar");
    let opened = open(
        &recipient,
        &phone(inputs, "recipient_phone"),
        &sender.public_key(),
        &bytes(&file["outputs"], "envelope"),
    )
    .unwrap();
    assert_eq!(opened.text, s(inputs, "text"));
    assert_eq!(opened.header.counter, inputs["counter"].as_u64().unwrap());
}

#[test]
fn auth_transcript_vector() {
    let file = read(P256_FILE);
    let t = &file["auth_transcript"];
    assert_same(
        "auth_transcript.outputs",
        &transcript_outputs(&t["inputs"]),
        &t["outputs"],
    );
}

#[test]
fn rsa_envelope_vector() {
    let file = read(RSA_FILE);
    let key = Identity::from_pkcs8_pem(s(&file, "rsa_private_key_pem"), None).unwrap();
    assert_eq!(key.key_type(), KeyType::Rsa);
    assert_eq!(key.public_key().to_spki_der(), bytes(&file, "rsa_spki_der"));
    let envelope = bytes(&file, "envelope");
    let recipient = phone(&file, "recipient_phone");
    let opened = open(&key, &recipient, &key.public_key(), &envelope).unwrap();
    assert_eq!(opened.text, s(&file, "text"));

    let view = parse(&envelope).unwrap();
    let Identity::Rsa(sk) = &key else {
        unreachable!()
    };
    let aes_key = Zeroizing::new(sk.decrypt(Oaep::<Sha256>::new(), view.key_block).unwrap());
    assert_eq!(hex::encode(&*aes_key), s(&file, "aes_key"));
}

/// Rewrites the vector files from the default inputs.
#[test]
#[ignore = "writes tests/vectors; run by hand after a deliberate format change"]
fn regenerate() {
    let inputs = default_p256_inputs();
    let t_inputs = default_transcript_inputs();
    write(
        P256_FILE,
        &json!({
            "description": "Carrier v1 envelope, P-256 sender and recipient. All byte strings are hex. \
                The ECDSA signatures are deterministic (RFC 6979), so the whole envelope is reproducible.",
            "inputs": inputs,
            "outputs": p256_outputs(&inputs),
            "auth_transcript": {"inputs": t_inputs, "outputs": transcript_outputs(&t_inputs)},
        }),
    );
    write(RSA_FILE, &rsa_vector());
}

fn rsa_vector() -> Value {
    use crate::crypto::test_keys::rsa_2048;
    let key = rsa_2048();
    let (me, aes_key) = (
        PhoneNumber::from_canonical("+12025550103").unwrap(),
        [0x66u8; 32],
    );
    let text = "RSA-OAEP wrapped, RSA-PSS signed";
    let msg = Outgoing {
        id: MessageId::from_bytes([0xab; 16]),
        counter: 1,
        sent_at_ms: 1_700_000_000_000,
        sender_phone: &me,
        recipient_phone: &me,
        text,
    };
    let rnd = SealRandomness {
        ephemeral: p256::SecretKey::from_slice(&[0x33; 32]).unwrap(),
        aes_key: Zeroizing::new(aes_key),
        nonce: [0x77; 12],
    };
    let envelope = seal_with(key, &key.public_key(), &msg, &rnd).unwrap();
    json!({
        "description": "Carrier v1 envelope from an RSA-2048 key to itself (RSA-OAEP-SHA256 key block, \
            RSA-PSS-SHA256 signature with 32-byte salt). Both are randomized, so only opening is checked.",
        "rsa_private_key_pem": key.to_pkcs8_pem(None).as_str(),
        "rsa_spki_der": hex::encode(key.public_key().to_spki_der()),
        "recipient_phone": me.as_str(),
        "text": text,
        "aes_key": hex::encode(aes_key),
        "envelope": hex::encode(envelope),
    })
}
