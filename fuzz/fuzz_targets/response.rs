//! A server's response or event frame, as the client parses it. Nothing may
//! panic, and what parses must re-encode to itself.
#![no_main]

use carrier::protocol::{Response, ResponseFrame};
use carrier_fuzz::assert_json_round_trip;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(frame) = serde_json::from_slice::<ResponseFrame>(data) else {
        return;
    };
    assert_json_round_trip(&frame);
    if let Response::Message(d) = &frame.response {
        let _ = carrier::protocol::envelope::parse(&d.envelope.0);
    }
});
