//! Notices a server queues for one of its own users' devices, delivered
//! like messages (`fetch`, pushed `message`) but not envelopes: the bytes
//! in the `envelope` member start with [`NOTICE_TAG`], a first byte no
//! envelope has (v1 and v2 envelopes start with their version), and the
//! rest is one JSON object. Nobody signs a notice: it comes from the
//! device's own server over its authenticated connection, and says no
//! more than that server could do anyway (drop a message).

use serde::{Deserialize, Serialize};

use super::ErrorCode;
use crate::domain::MessageId;

/// The first byte of a notice's bytes.
pub const NOTICE_TAG: u8 = 0;

/// Longest reason a notice carries, in bytes; a longer one is cut at a
/// character boundary.
pub const MAX_REASON_BYTES: usize = 1024;

/// One copy of a message sent by this device that the recipient's home
/// server refused (docs/PROTOCOL.md §11.15.4): it will never be delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename = "undeliverable")]
pub struct Undeliverable {
    /// The refused message's id.
    pub id: MessageId,
    /// The message's recipient.
    pub to: String,
    /// The recipient device whose copy was refused.
    pub device: u32,
    /// The refusal's error code.
    pub code: ErrorCode,
    /// The refusing server's reason, for people.
    pub reason: String,
}

impl Undeliverable {
    /// The bytes queued for the sending device: the tag, then the JSON.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut shown = self.clone();
        if shown.reason.len() > MAX_REASON_BYTES {
            let mut end = MAX_REASON_BYTES;
            while !shown.reason.is_char_boundary(end) {
                end -= 1;
            }
            shown.reason.truncate(end);
        }
        let mut out = vec![NOTICE_TAG];
        out.extend(serde_json::to_vec(&shown).expect("a notice serialises"));
        out
    }

    /// A notice from delivered bytes: `None` for anything else (an
    /// envelope, or a notice this build does not know).
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        match bytes.split_first() {
            Some((&NOTICE_TAG, json)) => serde_json::from_slice(json).ok(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notice_round_trips_and_is_told_from_an_envelope() {
        let n = Undeliverable {
            id: MessageId::random(),
            to: "+12025550103".into(),
            device: 2,
            code: ErrorCode::StaleDevices,
            reason: "é".repeat(MAX_REASON_BYTES),
        };
        let bytes = n.to_bytes();
        assert_eq!(bytes[0], NOTICE_TAG);
        let back = Undeliverable::parse(&bytes).unwrap();
        assert_eq!((back.id, back.device), (n.id, 2));
        assert!(back.reason.len() <= MAX_REASON_BYTES);
        assert!(
            Undeliverable::parse(&[2, b'{', b'}']).is_none(),
            "an envelope"
        );
        assert!(Undeliverable::parse(&[NOTICE_TAG, b'x']).is_none());
        let json = String::from_utf8(bytes[1..].to_vec()).unwrap();
        assert!(
            json.starts_with(r#"{"type":"undeliverable","id":""#),
            "{json}"
        );
    }
}
