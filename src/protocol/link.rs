//! The server-to-server protocol spoken on neighbour links (mutual TLS 1.3,
//! the same frames as clients use). Each frame is one [`LinkMessage`].

use serde::{Deserialize, Serialize};

use super::{B64, ErrorCode, KeyType};
use crate::domain::MessageId;

/// Largest frame on a link: a batch of directory entries or relayed messages.
pub const MAX_LINK_FRAME: usize = 4 * 1024 * 1024;

/// Most servers a relayed message may cross; a guard against loops in a
/// misconfigured neighbourhood (routes alone already avoid them).
pub const MAX_HOPS: usize = 16;

/// Everything servers say to each other.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LinkMessage {
    /// First frame on a link: who we are, for logs and `list`.
    Hello {
        name: String,
        /// Any whole number: one past a byte is a version this build does
        /// not speak, and must end the link like any other.
        version: u64,
    },
    /// Directory entries, on link-up (everything) and on change.
    Directory {
        entries: Vec<DirectoryEntry>,
    },
    /// A message on its way to the recipient's home server.
    Relay(Relayed),
    /// These relayed messages are committed at the receiving hop. `device`
    /// names the recipient device of v2 copies (absent: 0, v1). `to` names
    /// their recipient: ids are unique per recipient only, so one id may
    /// wait for two recipients (absent, from an older server: every copy
    /// under the id and device).
    RelayAck {
        ids: Vec<MessageId>,
        #[serde(default, skip_serializing_if = "is_zero")]
        device: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<String>,
    },
    /// This relayed message cannot be delivered; the sending hop drops it
    /// and logs why.
    /// `device` names the recipient device of a v2 copy (absent: 0, v1).
    /// A refusal on its way back to the server where the message was sent
    /// carries the message's `path` (absent: the refusal is about a message
    /// the receiving hop sent itself). Without a path, `to` names the
    /// refused copy's recipient, as in [`LinkMessage::RelayAck`].
    RelayRefused {
        id: MessageId,
        code: ErrorCode,
        message: String,
        #[serde(default, skip_serializing_if = "is_zero")]
        device: u32,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        path: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<String>,
        /// With `path`: the refused message's sender, so the server it was
        /// sent from can tell the sending device (absent from older
        /// servers).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<String>,
        /// With `path`: the sending device (absent for 0).
        #[serde(default, skip_serializing_if = "is_zero")]
        sender_device: u32,
    },
    /// A public message, flooded to every server once.
    Broadcast(Broadcast),
    /// Who is connected at `origin` now; a newer `seq` replaces an older one.
    Presence {
        origin: String,
        seq: u64,
        online: Vec<String>,
    },
    /// Heartbeat; answered with `pong`.
    Ping,
    Pong,
    /// Protocol v2: users' signed device lists and bundles, flooded like
    /// the directory (on link-up everything, then what changed).
    Devices {
        entries: Vec<DeviceEntry>,
    },
    /// Protocol v2: one-time prekeys asked of a user's home server, passed
    /// hop by hop towards it.
    Claim(ClaimRequest),
    /// The home server's answer to a [`LinkMessage::Claim`], passed back
    /// along the claim's path.
    Claimed(ClaimAnswer),
    /// Users withdrawn by their home server, on link-up (every withdrawal
    /// held) and on change.
    Withdrawn {
        withdrawals: Vec<Withdrawal>,
    },
}

impl LinkMessage {
    /// Reads one frame body. A `relay` or `relay_ack`, nearly every frame
    /// on a busy link, is read straight into its own type: serde reads an
    /// internally tagged enum by first copying the whole object into a
    /// tree of owned values (the envelope's base64 text and every path
    /// element included) and then reading the variant from that copy.
    /// Anything the direct read does not take is read the general way, so
    /// what is accepted and refused is the same.
    pub fn parse(frame: &[u8]) -> serde_json::Result<Self> {
        let direct = match frame_type(frame).as_deref() {
            Some("relay") => serde_json::from_slice::<Relayed>(frame)
                .ok()
                .map(LinkMessage::Relay),
            Some("relay_ack") => serde_json::from_slice::<RelayAckFrame>(frame)
                .ok()
                .map(|a| LinkMessage::RelayAck {
                    ids: a.ids,
                    device: a.device,
                    to: a.to,
                }),
            _ => None,
        };
        match direct {
            Some(message) => Ok(message),
            None => serde_json::from_slice(frame),
        }
    }
}

/// A frame's `type`: read from the front when it comes first (as this
/// server writes it), else found by skipping over the other members
/// without copying them.
fn frame_type(frame: &[u8]) -> Option<std::borrow::Cow<'_, str>> {
    for kind in ["relay", "relay_ack"] {
        let rest = frame
            .strip_prefix(br#"{"type":""#.as_slice())
            .and_then(|r| r.strip_prefix(kind.as_bytes()))
            .and_then(|r| r.strip_prefix(br#"","#.as_slice()));
        if rest.is_some() {
            return Some(kind.into());
        }
    }
    #[derive(Deserialize)]
    struct Tag<'a> {
        #[serde(rename = "type", borrow)]
        kind: std::borrow::Cow<'a, str>,
    }
    serde_json::from_slice::<Tag>(frame).ok().map(|t| t.kind)
}

/// The members of a `relay_ack`, as [`LinkMessage::RelayAck`] reads them.
#[derive(Deserialize)]
struct RelayAckFrame {
    ids: Vec<MessageId>,
    #[serde(default)]
    device: u32,
    #[serde(default)]
    to: Option<String>,
}

/// A user's devices as their home server published them: the device list
/// signed by the account key and one bundle per device that has published
/// prekeys (docs/PROTOCOL.md §9.7, §10.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceEntry {
    pub phone: String,
    pub device_list: B64,
    pub bundles: Vec<B64>,
}

/// A claim on its way to the home server of `phone`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClaimRequest {
    /// Chosen by the asking server; names the answer.
    pub request: u64,
    pub phone: String,
    pub devices: Vec<u32>,
    /// Fingerprints of the servers crossed so far, the asking server first.
    pub path: Vec<String>,
}

/// A claim's answer on its way back: `claims` (one claim result per asked
/// device, in order) or a refusal's `code` and `message`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClaimAnswer {
    pub request: u64,
    /// The claim's path as the home server received it plus the home
    /// server; each hop sends the answer to the server before itself.
    pub path: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claims: Option<Vec<B64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<ErrorCode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Whether a link `hello`'s `version` is one this build speaks with: 2,
/// or 1, which builds of protocol version 2 wrote before their `hello`
/// said 2 (the ALPN `carrier-link/2` already keeps version 1 servers
/// out). Any other version is a protocol this build does not know.
pub fn speaks_hello_version(version: u64) -> bool {
    version == u64::from(super::HELLO_VERSION) || version == 1
}

/// The longest server name, in bytes of UTF-8: a server's own `[server]
/// name`, a directory entry's `home_name` and a link `hello`'s `name`.
/// It keeps a `list` page (at most 1 000 users) within half of the
/// response frame limit however names are escaped.
pub const MAX_SERVER_NAME: usize = 255;

/// `name` cut to at most [`MAX_SERVER_NAME`] bytes, at a character
/// boundary.
pub fn cut_server_name(name: &str) -> &str {
    let mut end = name.len().min(MAX_SERVER_NAME);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

/// A user as vouched for by their home server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryEntry {
    pub phone: String,
    pub key_type: KeyType,
    /// The user's SPKI DER.
    pub public_key: B64,
    /// The home server's SPKI DER; its fingerprint names the home server.
    pub home_key: B64,
    /// The home server's client address, for people.
    pub home_name: String,
    /// When this key was registered; a later registration replaces an
    /// earlier one everywhere.
    pub registered_at: i64,
    /// The home server's signature over `signed::directory_entry_bytes`.
    pub signature: B64,
    /// Links crossed from the home server so far (not signed).
    pub hops: u32,
}

/// A sealed envelope in transit between servers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Relayed {
    pub id: MessageId,
    pub from: String,
    pub to: String,
    /// Protocol v2: the recipient's device and the sending device; absent
    /// (0) for a v1 message.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub device: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub sender_device: u32,
    pub envelope: B64,
    pub received_at: i64,
    pub expires_at: i64,
    /// Fingerprints of the servers crossed so far, the origin first.
    pub path: Vec<String>,
}

/// A public message and its author's signature over
/// `signed::broadcast_bytes`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Broadcast {
    pub id: MessageId,
    pub from: String,
    pub sent_at: u64,
    pub text: String,
    pub signature: B64,
}

/// A home server's statement that a user it vouched for is gone: the
/// registration of `phone` at `registered_at` is withdrawn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Withdrawal {
    pub phone: String,
    /// The `registered_at` of the entry withdrawn; with the home key, the
    /// version this withdrawal outranks entries up to.
    pub registered_at: i64,
    /// When the home server deleted the user (tombstones expire from it).
    pub withdrawn_at: i64,
    /// The home server's SPKI DER; its fingerprint names the home server.
    pub home_key: B64,
    /// The home server's signature over `signed::withdrawal_bytes`.
    pub signature: B64,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hellos_of_version_2_and_of_earlier_version_2_builds_are_spoken() {
        assert!(speaks_hello_version(2) && speaks_hello_version(1));
        assert!(!speaks_hello_version(0) && !speaks_hello_version(3));
        assert!(!speaks_hello_version(258));
    }

    #[test]
    fn server_names_are_cut_at_a_character_boundary() {
        assert_eq!(cut_server_name("localhost:5000"), "localhost:5000");
        let long = format!("a{}", "é".repeat(200));
        let cut = cut_server_name(&long);
        assert_eq!((cut.len(), cut.chars().count()), (255, 128));
    }

    /// Relays and acknowledgements read directly come out as the general
    /// read gives them, wherever `type` is; what the direct read refuses
    /// is refused the general way too.
    #[test]
    fn relays_and_acks_read_directly_match_the_general_read() {
        let relay = Relayed {
            id: MessageId::random(),
            from: "+12025550101".into(),
            to: "+12025550102".into(),
            device: 2,
            sender_device: 3,
            envelope: B64(vec![7; 100]),
            received_at: 5,
            expires_at: 6,
            path: vec!["ab".repeat(32)],
        };
        let frame = serde_json::to_vec(&LinkMessage::Relay(relay.clone())).unwrap();
        assert!(frame.starts_with(br#"{"type":"relay","#));
        let moved = format!(
            r#"{{"id":"{}","from":"+12025550101","to":"+12025550102","device":2,"sender_device":3,"envelope":"{}","received_at":5,"expires_at":6,"path":["{}"],"type":"relay"}}"#,
            relay.id.to_hex(),
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [7u8; 100]),
            "ab".repeat(32)
        );
        for f in [frame.as_slice(), moved.as_bytes()] {
            let direct = format!("{:?}", LinkMessage::parse(f).unwrap());
            let general = format!("{:?}", serde_json::from_slice::<LinkMessage>(f).unwrap());
            assert_eq!(direct, general);
            assert!(direct.starts_with("Relay(Relayed {"), "{direct}");
        }
        let ack = r#"{"type":"relay_ack","ids":["01a206d2e2edd327b947c6eb38d84784"],"device":4,"to":"+12025550102"}"#;
        let direct = format!("{:?}", LinkMessage::parse(ack.as_bytes()).unwrap());
        let general = format!("{:?}", serde_json::from_str::<LinkMessage>(ack).unwrap());
        assert_eq!(direct, general);
        for bad in [
            r#"{"type":"relay","id":"zz"}"#,
            r#"{"type":"relay_ack","ids":"01"}"#,
            r#"{"type":"relay_ack","ids":[],"device":-1}"#,
            r#"{"type":"nonsense"}"#,
            r#"{"type":"relay","#,
        ] {
            assert!(LinkMessage::parse(bad.as_bytes()).is_err(), "{bad}");
        }
        assert!(matches!(
            LinkMessage::parse(br#"{"type":"ping"}"#),
            Ok(LinkMessage::Ping)
        ));
    }

    /// An older server's `relay_ack` names no recipient: it still parses,
    /// and one without a recipient is written without `to`.
    #[test]
    fn a_relay_ack_without_a_recipient_parses_and_omits_it() {
        let old = r#"{"type":"relay_ack","ids":["01a206d2e2edd327b947c6eb38d84784"]}"#;
        let parsed: LinkMessage = serde_json::from_str(old).unwrap();
        assert!(matches!(
            parsed,
            LinkMessage::RelayAck {
                device: 0,
                to: None,
                ..
            }
        ));
        assert_eq!(serde_json::to_string(&parsed).unwrap(), old);
        let new = r#"{"type":"relay_ack","ids":["01a206d2e2edd327b947c6eb38d84784"],"to":"+12025550102"}"#;
        let parsed: LinkMessage = serde_json::from_str(new).unwrap();
        assert!(
            matches!(parsed, LinkMessage::RelayAck { to: Some(ref to), .. } if to == "+12025550102")
        );
    }
}
