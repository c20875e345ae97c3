//! A client's request frame, as the server parses it: JSON into
//! `RequestFrame`, the error classifier on failure, and the fields the
//! handlers parse next (keys, envelopes, phones). Nothing may panic; what
//! parses must re-encode to itself, and a key that parses is canonical.
#![no_main]

use carrier::crypto::PublicKey;
use carrier::domain::PhoneNumber;
use carrier::protocol::{Request, RequestFrame, classify_request_error};
use carrier_fuzz::assert_json_round_trip;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let frame = match serde_json::from_slice::<RequestFrame>(data) {
        Ok(frame) => frame,
        Err(e) => {
            let (_, _, message) = classify_request_error(data, &e);
            assert!(!message.is_empty());
            return;
        }
    };
    assert_json_round_trip(&frame);
    match &frame.request {
        Request::Register {
            phone,
            key_type,
            public_key,
        } => {
            let _ = PhoneNumber::parse(phone);
            if let Ok(key) = PublicKey::from_spki_der_typed(*key_type, &public_key.0) {
                assert_eq!(key.to_spki_der(), public_key.0, "a parsed key is canonical");
            }
        }
        Request::Send { to, envelope, .. } => {
            let _ = PhoneNumber::parse(to);
            let _ = carrier::protocol::envelope::parse(&envelope.0);
        }
        Request::Verify { phone, .. }
        | Request::Login { phone, .. }
        | Request::Lookup { phone } => {
            let _ = PhoneNumber::parse(phone);
        }
        _ => {}
    }
});
