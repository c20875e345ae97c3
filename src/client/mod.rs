//! The client library the `carrier` command uses: connect and pin the
//! server, register, log in, send, fetch → history → ack (`session`, with
//! one delivered message checked in `receive`), contacts pinned on first use
//! (`contacts`), the home directory and its store (`home`), the interactive
//! chat (`chat`) and the lines the command prints (`show`). It shares only
//! `protocol`, `crypto`, `tls` and `domain` with the server; it never imports
//! server modules.

mod chat;
mod connection;
mod contacts;
mod home;
mod receive;
mod session;
pub mod show;

pub use chat::chat;
pub use connection::{Connection, Event};
pub use home::{Account, Direction, HistoryEntry, Home, Record};
pub use receive::{Received, Refusal};
pub use session::{Client, Session};

use std::sync::Arc;

use crate::domain::Fingerprint;
use crate::protocol::{ErrorCode, Response};
use crate::tls::ConnectError;

/// Things worth telling the user that are not errors.
#[derive(Debug, Clone)]
pub enum Notice {
    /// A server's key was seen for the first time and pinned.
    ServerPinned {
        addr: String,
        fingerprint: Fingerprint,
    },
    /// A contact's key was seen for the first time and pinned.
    ContactPinned {
        phone: String,
        fingerprint: Fingerprint,
    },
}

/// Receives notices; the command line prints them on standard error.
pub type Notify = Arc<dyn Fn(Notice) + Send + Sync>;

/// Everything that can go wrong on the client side, each with a message
/// that says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("{message} ({code})", code = code.as_str())]
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
    #[error(
        "cannot bring the store in the home directory up to date: {0}. \
         Was it written by a newer carrier?"
    )]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

/// An answer the request never calls for.
fn unexpected(r: Response) -> ClientError {
    ClientError::Protocol(format!("{r:?}"))
}
