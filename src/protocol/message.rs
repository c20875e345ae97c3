use serde::{Deserialize, Serialize};

use super::{B64, ErrorCode};
use crate::domain::MessageId;

/// The kind of a user's identity key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyType {
    /// ECDSA/ECDH on NIST P-256.
    P256,
    /// RSA, 2048 to 4096 bits (clients make 3072).
    Rsa,
}

impl KeyType {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::P256 => "p256",
            KeyType::Rsa => "rsa",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "p256" => Some(KeyType::P256),
            "rsa" => Some(KeyType::Rsa),
            _ => None,
        }
    }
}

/// A one-time code as the client typed it in `verify`, kept as text (the
/// server answers a malformed one with `wrong_code`, not `bad_request`).
/// Its `Debug` never shows it and it is wiped when dropped, so logging a
/// request cannot leak a code.
#[derive(
    Clone, PartialEq, Eq, Serialize, Deserialize, zeroize::Zeroize, zeroize::ZeroizeOnDrop,
)]
#[serde(transparent)]
pub struct OneTimeCode(String);

impl OneTimeCode {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for OneTimeCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OneTimeCode(…)")
    }
}

impl From<String> for OneTimeCode {
    fn from(code: String) -> Self {
        Self(code)
    }
}

impl From<&str> for OneTimeCode {
    fn from(code: &str) -> Self {
        Self(code.to_owned())
    }
}

/// One request from a client: an optional sequence number, echoed in the
/// response as `re`, and the request itself tagged by `type`.
#[derive(Debug, Serialize, Deserialize)]
pub struct RequestFrame {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(flatten)]
    pub request: Request,
}

/// Every request a client can make. A variant's wire name (its `type`) is
/// its name in snake case, for serde and for [`Request::kind`] and
/// [`Request::KINDS`] alike, so a new request kind is this variant alone.
#[derive(Debug, Serialize, Deserialize, strum::IntoStaticStr, strum::VariantNames)]
#[serde(tag = "type", rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Request {
    /// Ask for a fresh nonce to sign in `verify` or `login`.
    Challenge,
    /// Start registration: the server sends a code through its OTP channel.
    Register {
        phone: String,
        key_type: KeyType,
        public_key: B64,
    },
    /// Finish registration with the code and a signature over the challenge.
    Verify {
        phone: String,
        code: OneTimeCode,
        signature: B64,
    },
    /// Prove possession of the registered key.
    Login { phone: String, signature: B64 },
    /// A user's public key and fingerprint.
    Lookup { phone: String },
    /// Protocol v1's send, retired: still parsed so that it can be
    /// answered `version_retired` rather than `unknown_request`.
    Send {
        id: MessageId,
        to: String,
        envelope: B64,
    },
    /// Waiting messages, oldest first; with `after`, those queued after
    /// the messages an earlier answer's `cursor` ended with.
    Fetch {
        #[serde(default)]
        limit: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<u64>,
    },
    /// Delete delivered messages.
    Ack { ids: Vec<MessageId> },
    /// The users of the neighbourhood, with their home and presence, one
    /// page in phone order: those after phone `after` (the previous
    /// answer's `next`), at most `limit` of them.
    List {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
    /// A public message to every connected user of the neighbourhood.
    Broadcast {
        id: MessageId,
        sent_at: u64,
        text: String,
        signature: B64,
    },
    /// Publish the account's signed device list with a certificate per
    /// listed device (protocol v2).
    PublishDevices { list: B64, certificates: Vec<B64> },
    /// Publish prekeys of the logged-in device (protocol v2).
    PublishPrekeys { prekeys: Vec<B64> },
    /// Prove possession of a listed device's key (protocol v2).
    DeviceLogin {
        phone: String,
        device: u32,
        signature: B64,
    },
    /// Queue a v2 envelope for one device of its recipient, sealed under
    /// the recipient's device list of `list_version`.
    DeviceSend {
        id: MessageId,
        to: String,
        device: u32,
        list_version: u64,
        envelope: B64,
    },
    /// Hand out one-time prekeys of some of a user's devices, once each.
    Claim { phone: String, devices: Vec<u32> },
    /// The logged-in account's devices.
    Devices,
    /// Open a link code's rendezvous for a new device, for 10 minutes.
    LinkOpen { rendezvous: B64 },
    /// From a new device, not logged in: a sealed link request for the
    /// session that opened `rendezvous`; answered once that session accepts.
    LinkRequest {
        phone: String,
        rendezvous: B64,
        request: B64,
    },
    /// The sealed answer to a link request, for the new device.
    LinkAccept { rendezvous: B64, response: B64 },
    /// Close an open rendezvous without linking; a waiting new device is
    /// answered `no_link` at once.
    LinkRefuse { rendezvous: B64 },
    /// Keep-alive; answered with `pong`.
    Ping,
    /// End the session.
    Quit,
}

impl Request {
    /// The wire name of every request kind.
    pub const KINDS: &[&str] = <Self as strum::VariantNames>::VARIANTS;

    /// The wire name of the request, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        self.into()
    }
}

/// Explains why a frame did not parse as a request, with the stable code to
/// answer it with and the `seq` to echo if one could be read. Only the error
/// path pays for this second look.
pub fn classify_request_error(
    frame: &[u8],
    err: &serde_json::Error,
) -> (Option<u64>, ErrorCode, String) {
    let Ok(probe) = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(frame)
    else {
        return (
            None,
            ErrorCode::MalformedJson,
            format!("the frame is not a JSON object: {err}"),
        );
    };
    let seq = probe.get("seq").and_then(|v| v.as_u64());
    match probe.get("type").and_then(|v| v.as_str()) {
        None => (
            seq,
            ErrorCode::BadRequest,
            "the request has no \"type\" string".into(),
        ),
        Some(kind) if !Request::KINDS.contains(&kind) => {
            let shown: String = kind.chars().take(40).collect();
            (
                seq,
                ErrorCode::UnknownRequest,
                format!("unknown request type \"{shown}\""),
            )
        }
        Some(kind) => (
            seq,
            ErrorCode::BadRequest,
            format!("bad \"{kind}\" request: {err}"),
        ),
    }
}

/// One frame from the server: a response (with `re` echoing the request's
/// `seq`) or, with no `re`, an event the server pushed.
#[derive(Debug, Serialize, Deserialize)]
pub struct ResponseFrame {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub re: Option<u64>,
    #[serde(flatten)]
    pub response: Response,
}

/// A message waiting for, or pushed to, its recipient.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Delivered {
    pub id: MessageId,
    pub from: String,
    pub envelope: B64,
    /// When the server accepted it, in milliseconds since the Unix epoch.
    pub received_at: i64,
    /// The sending device, for a message from a device (protocol v2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<u32>,
}

/// What `lookup` tells about a user.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserInfo {
    pub phone: String,
    pub key_type: KeyType,
    pub public_key: B64,
    pub fingerprint: String,
    /// When this key was registered, in milliseconds since the Unix epoch.
    pub registered_at: i64,
    /// The user's devices, once they have published a list (protocol v2).
    #[serde(default, skip_serializing_if = "Option::is_none", flatten)]
    pub devices: Option<super::CurrentDevices>,
}

/// One line of `list`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListedUser {
    pub phone: String,
    pub fingerprint: String,
    /// The home server's client address.
    pub home: String,
    /// The home server's key fingerprint.
    pub home_fingerprint: String,
    /// Whether the user has a live session at their home server now.
    pub online: bool,
}

/// Every response and event a server sends.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    Challenge {
        nonce: B64,
    },
    CodeSent {
        phone: String,
        expires_in_s: u64,
    },
    Registered {
        phone: String,
        fingerprint: String,
        replaced_key: bool,
    },
    LoggedIn {
        phone: String,
        /// The device logged in as, for a `device_login`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        device: Option<u32>,
        fingerprint: String,
        queued: u64,
    },
    User(UserInfo),
    Accepted {
        id: MessageId,
    },
    Messages {
        messages: Vec<Delivered>,
        more: bool,
        /// Where these messages end in the queue, for the next `fetch`'s
        /// `after`; absent when `messages` is empty.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cursor: Option<u64>,
    },
    Acked {
        deleted: u64,
    },
    Users {
        users: Vec<ListedUser>,
        /// The `after` of the next page; absent on the last page.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next: Option<String>,
    },
    BroadcastSent {
        id: MessageId,
    },
    DevicesPublished {
        version: u64,
    },
    PrekeysPublished {
        one_time: u64,
        kem_one_time: u64,
    },
    Claimed {
        claims: Vec<B64>,
    },
    Devices {
        device_list: B64,
        certificates: Vec<B64>,
        last_seen: Vec<super::LastSeen>,
    },
    LinkOpened {
        expires_in_s: u64,
    },
    /// A pushed event: a new device asks to be linked through a rendezvous
    /// this session opened.
    LinkRequested {
        rendezvous: B64,
        request: B64,
    },
    /// The answer to `link_request`, once the opening session accepted.
    Linked {
        response: B64,
    },
    LinkAccepted,
    LinkRefused,
    Pong,
    Bye,
    /// A pushed event: a message arrived for the logged-in user.
    Message(Delivered),
    /// A pushed event: a public message from someone in the neighbourhood.
    Broadcast(super::Broadcast),
    Error {
        code: ErrorCode,
        message: String,
        /// For a refusal that holds only for now (`rate_limited`): in how
        /// many milliseconds the same request would pass.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
        /// For `wrong_code` after a try was spent: how many tries the code
        /// has left (0: it is dead), so a client stops asking for it
        /// without parsing the message.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tries_left: Option<u32>,
        /// For `stale_devices`: the recipient's current devices.
        #[serde(default, skip_serializing_if = "Option::is_none", flatten)]
        devices: Option<super::CurrentDevices>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_requests() {
        let f: RequestFrame =
            serde_json::from_str(r#"{"seq":7,"type":"fetch","limit":10}"#).unwrap();
        assert_eq!(f.seq, Some(7));
        assert!(matches!(
            f.request,
            Request::Fetch {
                limit: Some(10),
                after: None
            }
        ));
        let f: RequestFrame =
            serde_json::from_str(r#"{"type":"fetch","limit":10,"after":42}"#).unwrap();
        assert!(matches!(
            f.request,
            Request::Fetch {
                after: Some(42),
                ..
            }
        ));
        let f: RequestFrame = serde_json::from_str(r#"{"type":"ping"}"#).unwrap();
        assert!(matches!(f.request, Request::Ping));
    }

    /// Many JSON libraries keep the last of two members silently; a
    /// request naming one twice is refused instead, answered under the last
    /// `seq` it gives (docs/PROTOCOL.md §4.1).
    #[test]
    fn a_member_given_twice_is_a_bad_request() {
        let frame = br#"{"seq":10,"type":"ping","seq":11}"#;
        let e = serde_json::from_slice::<RequestFrame>(frame).unwrap_err();
        let (seq, code, message) = classify_request_error(frame, &e);
        assert_eq!((seq, code), (Some(11), ErrorCode::BadRequest));
        assert!(message.contains("duplicate field `seq`"), "{message}");
    }

    #[test]
    fn every_kind_is_a_wire_name() {
        assert_eq!(Request::KINDS.len(), 22);
        for kind in Request::KINDS {
            // Unit kinds parse from their name alone; the others fail on a
            // missing field, which names them as known kinds.
            let frame = format!(r#"{{"type":"{kind}"}}"#);
            match serde_json::from_str::<RequestFrame>(&frame) {
                Ok(f) => assert_eq!(f.request.kind(), *kind),
                Err(e) => {
                    let (_, code, _) = classify_request_error(frame.as_bytes(), &e);
                    assert_eq!(code, ErrorCode::BadRequest, "{kind}: {e}");
                    assert!(e.to_string().contains("missing field"), "{kind}: {e}");
                }
            }
        }
        let ping: RequestFrame = serde_json::from_str(r#"{"type":"ping"}"#).unwrap();
        assert_eq!(ping.request.kind(), "ping");
        let ack: RequestFrame = serde_json::from_str(r#"{"type":"ack","ids":[]}"#).unwrap();
        assert_eq!(ack.request.kind(), "ack");
    }

    #[test]
    fn classifies_errors() {
        let cases: &[(&str, ErrorCode)] = &[
            ("{not json", ErrorCode::MalformedJson),
            ("[1,2]", ErrorCode::MalformedJson),
            (r#"{"seq":1}"#, ErrorCode::BadRequest),
            (r#"{"seq":1,"type":"launch"}"#, ErrorCode::UnknownRequest),
            (r#"{"seq":1,"type":"send","to":5}"#, ErrorCode::BadRequest),
        ];
        for (frame, want) in cases {
            let err = serde_json::from_str::<RequestFrame>(frame).unwrap_err();
            let (_, code, _) = classify_request_error(frame.as_bytes(), &err);
            assert_eq!(code, *want, "{frame}");
        }
    }

    #[test]
    fn a_request_debug_never_shows_the_code() {
        let f: RequestFrame = serde_json::from_str(
            r#"{"type":"verify","phone":"+12025550101","code":"731946","signature":""}"#,
        )
        .unwrap();
        let shown = format!("{f:?}");
        assert!(!shown.contains("731946"), "{shown}");
        assert!(shown.contains("+12025550101"), "{shown}");
        let Request::Verify { code, .. } = f.request else {
            panic!("a verify request")
        };
        assert_eq!(code.as_str(), "731946");
    }

    #[test]
    fn response_shape() {
        let r = ResponseFrame {
            re: Some(3),
            response: Response::Acked { deleted: 2 },
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"re":3,"type":"acked","deleted":2}"#
        );
        let e = ResponseFrame {
            re: None,
            response: Response::Error {
                code: ErrorCode::NotLoggedIn,
                message: "x".into(),
                retry_after_ms: None,
                tries_left: None,
                devices: None,
            },
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"type":"error","code":"not_logged_in","message":"x"}"#
        );
        let later =
            r#"{"re":4,"type":"error","code":"rate_limited","message":"y","retry_after_ms":250}"#;
        let f: ResponseFrame = serde_json::from_str(later).unwrap();
        assert!(matches!(
            f.response,
            Response::Error {
                code: ErrorCode::RateLimited,
                retry_after_ms: Some(250),
                ..
            }
        ));
        assert_eq!(serde_json::to_string(&f).unwrap(), later);
        // As PROTOCOL.md §6 shows it.
        let wrong = r#"{"re":2,"type":"error","code":"wrong_code","message":"wrong code; 4 tries left","tries_left":4}"#;
        let f: ResponseFrame = serde_json::from_str(wrong).unwrap();
        assert!(matches!(
            f.response,
            Response::Error {
                code: ErrorCode::WrongCode,
                tries_left: Some(4),
                ..
            }
        ));
        assert_eq!(serde_json::to_string(&f).unwrap(), wrong);
    }
}
