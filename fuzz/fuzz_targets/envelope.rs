//! The envelope parser and opener on arbitrary bytes, with the keys of the
//! test vectors. The parser never panics and a parsed envelope has exactly
//! one encoding; the opener never panics, and opens nothing but the vector
//! envelopes themselves (every other byte string is forged or damaged).
#![no_main]

use std::sync::LazyLock;

use carrier::crypto::{Identity, open};
use carrier::domain::PhoneNumber;
use carrier::protocol::envelope::{
    encode_body, encode_header, encode_key_block, encode_signature, parse,
};
use carrier_fuzz::{p256_identity, p256_vector_envelope, phone, rsa_vector};
use libfuzzer_sys::fuzz_target;

struct Keys {
    alice: Identity,
    bob: Identity,
    bob_phone: PhoneNumber,
    p256_envelope: Vec<u8>,
    rsa: (Identity, PhoneNumber, Vec<u8>),
}

static KEYS: LazyLock<Keys> = LazyLock::new(|| Keys {
    alice: p256_identity(0x11),
    bob: p256_identity(0x22),
    bob_phone: phone("+12025550102"),
    p256_envelope: p256_vector_envelope(),
    rsa: rsa_vector(),
});

fuzz_target!(|data: &[u8]| {
    let k = &*KEYS;
    if let Ok(v) = parse(data) {
        let mut again = Vec::new();
        encode_header(&v.header, &mut again);
        encode_key_block(v.key_block, &mut again);
        encode_body(&v.nonce, v.ciphertext, &mut again);
        encode_signature(v.signature, &mut again);
        assert_eq!(again, data, "an envelope has one encoding");
    }
    if open(&k.bob, &k.bob_phone, &k.alice.public_key(), data).is_ok() {
        assert_eq!(
            data, k.p256_envelope,
            "opened an envelope Alice never sealed"
        );
    }
    let (rsa, rsa_phone, rsa_envelope) = &k.rsa;
    if open(rsa, rsa_phone, &rsa.public_key(), data).is_ok() {
        assert_eq!(data, rsa_envelope, "opened an RSA envelope never sealed");
    }
});
