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
        version: u8,
    },
    /// Directory entries, on link-up (everything) and on change.
    Directory {
        entries: Vec<DirectoryEntry>,
    },
    /// A message on its way to the recipient's home server.
    Relay(Relayed),
    /// These relayed messages are committed at the receiving hop.
    RelayAck {
        ids: Vec<MessageId>,
    },
    /// This relayed message cannot be delivered; the sending hop drops it
    /// and logs why.
    RelayRefused {
        id: MessageId,
        code: ErrorCode,
        message: String,
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
    /// Users withdrawn by their home server, on link-up (every withdrawal
    /// held) and on change.
    Withdrawn {
        withdrawals: Vec<Withdrawal>,
    },
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
