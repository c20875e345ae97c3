//! The client library the `carrier` command uses: connect and pin the
//! server, register, log in, send, fetch → history → ack, contacts pinned on
//! first use, and the interactive chat. It shares only `protocol`, `crypto`,
//! `tls` and `domain` with the server; it never imports server modules.

mod connection;
mod home;
mod receive;
mod session;

pub use connection::{Connection, Event};
pub use home::{Account, HistoryEntry, Home};
pub use receive::{Received, Refusal};
pub use session::{Client, Notice, Session};

use crate::domain::Fingerprint;
use crate::protocol::ErrorCode;
use crate::tls::ConnectError;

/// Everything that can go wrong on the client side, each with a message
/// that says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("{message} ({code})", code = code_name(*code))]
    Server { code: ErrorCode, message: String },
    #[error("the server closed the connection")]
    Disconnected,
    #[error("the server answered something unexpected: {0}")]
    Protocol(String),
    #[error("no account in {0}: run `carrier register <phone>` first")]
    NoAccount(std::path::PathBuf),
    #[error(
        "the key of {phone} changed: pinned {pinned}, the server now reports {current}. \
         Check the new fingerprint with them, then run `carrier trust {phone}`"
    )]
    KeyChanged {
        phone: String,
        pinned: Fingerprint,
        current: Fingerprint,
    },
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    Crypto(#[from] crate::crypto::CryptoError),
    #[error("local storage in the home directory failed: {0}")]
    Store(#[from] sqlx::Error),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

fn code_name(code: ErrorCode) -> String {
    serde_json::to_value(code)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}
