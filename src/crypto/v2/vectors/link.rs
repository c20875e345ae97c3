//! Link codes (docs/PROTOCOL.md §16): the code's text form, the rendezvous
//! id and link key derived from it, and a sealed request and response with
//! fixed nonces. The sealing is done here from the primitive crates; the
//! code under test must read the text, derive the same rendezvous and open
//! both messages.

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use hkdf::Hkdf;
use serde_json::{Value, json};
use sha2::Sha256;

use super::{account, arr, assert_same, device_key, hexv, id, num, phone, read, write};
use crate::crypto::v2::{DeviceCertificate, DeviceList, LinkCode};

const FILE: &str = "tests/vectors/v2_link.json";
const REQUEST_LABEL: &[u8] = b"carrier-v2 link request\0";
const RESPONSE_LABEL: &[u8] = b"carrier-v2 link response\0";

fn inputs() -> Value {
    json!({
        "code": "00112233445566778899aabbccddeeff",
        "account_scalar": "11".repeat(32),
        "phone": "+12025550101",
        "first_device_scalar": "21".repeat(32),
        "first_device_id": 1,
        "new_device_scalar": "22".repeat(32),
        "new_device_id": 2,
        "new_device_name": "phone",
        "created_at_ms": 1_700_000_100_000u64,
        "list_version": 2,
        "request_nonce": "a1".repeat(12),
        "response_nonce": "a2".repeat(12),
    })
}

/// RFC 4648 base32, lower case, no padding, in groups of five (the last
/// of six).
fn code_text(code: &[u8; 16]) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let bits = u128::from_be_bytes(*code);
    let mut out = String::new();
    for i in 0..26 {
        let v = if i == 25 {
            (bits & 0b111) << 2
        } else {
            (bits >> (123 - 5 * i)) & 0b11111
        };
        if i > 0 && i % 5 == 0 && i < 25 {
            out.push('-');
        }
        out.push(ALPHABET[v as usize] as char);
    }
    out
}

fn hkdf(code: &[u8], info: &[u8], out: &mut [u8]) {
    Hkdf::<Sha256>::new(Some(&[0u8; 32]), code)
        .expand(info, out)
        .unwrap();
}

fn seal(key: &[u8; 32], nonce: &[u8; 12], body: &[u8], aad: &[u8]) -> Vec<u8> {
    let sealed = Aes256Gcm::new(key.into())
        .encrypt(nonce.into(), Payload { msg: body, aad })
        .unwrap();
    [&nonce[..], &sealed].concat()
}

fn with_u16(bytes: &[u8]) -> Vec<u8> {
    [&(bytes.len() as u16).to_be_bytes()[..], bytes].concat()
}

fn outputs(v: &Value) -> Value {
    let code: [u8; 16] = arr(v, "code");
    let phone = phone(v, "phone");
    let account = account(v, "account_scalar");
    let new_device = device_key(v, "new_device_scalar");
    let first = device_key(v, "first_device_scalar");
    let name = v["new_device_name"].as_str().unwrap();
    let created = num(v, "created_at_ms");

    let mut rendezvous = [0u8; 16];
    hkdf(&code, b"carrier-v2 link rendezvous", &mut rendezvous);
    let mut key = [0u8; 32];
    hkdf(&code, b"carrier-v2 link key", &mut key);
    let aad = |label: &[u8]| {
        [
            label,
            &rendezvous,
            &[phone.as_str().len() as u8],
            phone.as_str().as_bytes(),
        ]
        .concat()
    };

    let request_fields = [
        &[name.len() as u8][..],
        name.as_bytes(),
        new_device.public().as_bytes(),
    ]
    .concat();
    let request_signed = [REQUEST_LABEL, &rendezvous, &request_fields].concat();
    let request_signature = new_device.sign(&request_signed);
    let request_body = [&request_fields[..], &request_signature].concat();
    let request_aad = aad(REQUEST_LABEL);
    let request = seal(&key, &arr(v, "request_nonce"), &request_body, &request_aad);

    let (new_id, first_id) = (id(v, "new_device_id"), id(v, "first_device_id"));
    let certificate = DeviceCertificate::issue(
        &account,
        &phone,
        new_id,
        &new_device.public(),
        name,
        created,
    )
    .unwrap();
    let devices = vec![(first_id, first.public()), (new_id, new_device.public())];
    let list = DeviceList::issue(&account, &phone, num(v, "list_version"), created, devices)
        .unwrap()
        .to_bytes();
    let response_body = [
        with_u16(&certificate.to_bytes()),
        with_u16(&list),
        with_u16(&[]),
    ]
    .concat();
    let response_aad = aad(RESPONSE_LABEL);
    let response = seal(
        &key,
        &arr(v, "response_nonce"),
        &response_body,
        &response_aad,
    );

    json!({
        "code_text": code_text(&code),
        "rendezvous": hex::encode(rendezvous),
        "link_key": hex::encode(key),
        "new_device_point": hex::encode(new_device.public().as_bytes()),
        "request_signed": hex::encode(&request_signed),
        "request_signature": hex::encode(request_signature),
        "request_body": hex::encode(&request_body),
        "request_aad": hex::encode(&request_aad),
        "request": hex::encode(&request),
        "certificate": hex::encode(certificate.to_bytes()),
        "device_list": hex::encode(&list),
        "response_body": hex::encode(&response_body),
        "response_aad": hex::encode(&response_aad),
        "response": hex::encode(&response),
    })
}

#[test]
fn link_vector() {
    let file = read(FILE);
    let (inputs, stored) = (&file["inputs"], &file["outputs"]);
    assert_same("link", &outputs(inputs), stored);

    // The code under test reads the text, finds the same rendezvous, and
    // opens both sealed messages to what was sealed.
    let text = stored["code_text"].as_str().unwrap();
    let code = LinkCode::parse(&text.to_uppercase()).unwrap();
    assert_eq!(code.to_display().as_str(), text);
    assert_eq!(code.rendezvous().to_vec(), hexv(stored, "rendezvous"));
    let phone = phone(inputs, "phone");
    let (name, key) = code.open_request(&phone, &hexv(stored, "request")).unwrap();
    assert_eq!(name, inputs["new_device_name"].as_str().unwrap());
    assert_eq!(key.as_bytes().to_vec(), hexv(stored, "new_device_point"));
    let response = code
        .open_response(&phone, &hexv(stored, "response"))
        .unwrap();
    assert_eq!(response.certificate.to_bytes(), hexv(stored, "certificate"));
    assert_eq!(response.list.to_bytes(), hexv(stored, "device_list"));
    assert!(response.account_pkcs8.is_none());
    let other = crate::domain::PhoneNumber::from_canonical("+12025550102").unwrap();
    assert!(code.open_request(&other, &hexv(stored, "request")).is_err());
}

pub(super) fn regenerate() {
    let v = inputs();
    let description = "Carrier v2 link code: the code's text, the rendezvous id and link key \
        derived from it, the new device's request and the existing device's response (without \
        the account key), sealed with fixed nonces. Byte strings are hex; the phone, the device \
        name and code_text are text.";
    let outputs = outputs(&v);
    write(
        FILE,
        &json!({"description": description, "inputs": v, "outputs": outputs}),
    );
}
