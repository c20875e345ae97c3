//! A frame from a neighbour, as a link session parses it: JSON into
//! `LinkMessage`, then the checks its contents meet first (directory entries
//! and withdrawals parsed and their signatures verified, presence origins
//! and phones, relayed envelopes' headers). Nothing may panic; what parses must
//! re-encode to itself.
#![no_main]

use carrier::domain::{Fingerprint, PhoneNumber};
use carrier::protocol::link::LinkMessage;
use carrier::routing::directory::withdrawal::Tombstone;
use carrier::routing::directory::{parse_entry, verify_signature};
use carrier_fuzz::assert_json_round_trip;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(message) = serde_json::from_slice::<LinkMessage>(data) else {
        return;
    };
    assert_json_round_trip(&message);
    match &message {
        LinkMessage::Directory { entries } => {
            let via = Fingerprint::of_spki(b"neighbour");
            for e in entries {
                if let Ok(entry) = parse_entry(e, via) {
                    let _ = verify_signature(&entry);
                    assert_eq!(entry.hops, e.hops.saturating_add(1));
                }
            }
        }
        LinkMessage::Presence { origin, online, .. } => {
            let _ = Fingerprint::parse(origin);
            for p in online {
                let _ = PhoneNumber::from_canonical(p);
            }
        }
        LinkMessage::Withdrawn { withdrawals } => {
            for w in withdrawals {
                let _ = Tombstone::from_wire(w, i64::MAX / 2);
            }
        }
        LinkMessage::Relay(r) => {
            let _ = PhoneNumber::from_canonical(&r.from);
            let _ = PhoneNumber::from_canonical(&r.to);
            let _ = carrier::protocol::envelope::parse(&r.envelope.0);
            for fp in &r.path {
                let _ = Fingerprint::parse(fp);
            }
        }
        _ => {}
    }
});
