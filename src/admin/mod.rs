//! `carrier-server admin`: an operator's view of a server and the changes
//! an operator makes (delete or disable a user, reset codes, purge a queue,
//! forget a pin, back up).
//!
//! One closed [`Request`] enum and one [`execute`] serve both ways of
//! reaching a server: a running server answers on a Unix socket in its data
//! directory ([`socket`], mode 0600, so only the server's own user may use
//! it), and a stopped one is opened directly, under the data-directory lock
//! so it cannot start meanwhile ([`cli`]). Running, the live parts (sessions,
//! links up) are filled in and a deleted or disabled user's sessions are
//! closed at once.

mod backup;
pub mod cli;
mod execute;
pub mod socket;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use execute::{Context, Live, Signer, execute};

use crate::db::admin::{Pin, QueueDepth};

/// What an operator asks of a server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Status,
    UsersList,
    UsersShow { phone: String },
    UsersDelete { phone: String },
    UsersDisable { phone: String },
    UsersEnable { phone: String },
    OtpReset { phone: String },
    QueueStats,
    QueuePurge { phone: String },
    Links,
    PinsList,
    PinsForget { address: String },
    Backup { file: PathBuf },
}

/// A server's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", content = "data", rename_all = "snake_case")]
pub enum Reply {
    Status(Status),
    Users(Vec<UserSummary>),
    User(UserSummary),
    Queues(Vec<QueueDepth>),
    Links(Vec<LinkState>),
    Pins(Vec<Pin>),
    /// A change made, in a sentence.
    Done(String),
}

/// `admin status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    /// Whether the server is running (answered on its socket).
    pub running: bool,
    pub uptime_secs: Option<u64>,
    pub users: usize,
    pub disabled_users: usize,
    pub sessions: Option<usize>,
    pub queued_messages: i64,
    pub queued_bytes: i64,
    pub links: Vec<LinkState>,
}

/// One registered user.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserSummary {
    pub phone: String,
    pub key_type: String,
    pub fingerprint: String,
    pub registered_at: i64,
    pub disabled: bool,
    pub queued_messages: i64,
    pub queued_bytes: i64,
    /// Live sessions, when the server is running.
    pub sessions: Option<usize>,
}

/// One neighbour: configured, pinned, or with messages waiting for it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LinkState {
    /// Its key fingerprint, when known.
    pub fingerprint: Option<String>,
    /// Its link address, when configured.
    pub address: Option<String>,
    /// Whether the link is up, when the server is running.
    pub up: Option<bool>,
    pub outbound_messages: i64,
    pub outbound_bytes: i64,
    /// Age of the oldest message waiting for it, in seconds.
    pub oldest_age_secs: Option<i64>,
}

/// Why an admin request failed, in a sentence for the operator.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    Refused(String),
    #[error("the database: {0}")]
    Db(#[from] crate::db::DbError),
    #[error("{0}")]
    Io(String),
}
