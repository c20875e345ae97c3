//! The client library the `carrier` command uses: connect and pin the
//! server, register with this home's device (`register`), log in, send,
//! fetch → history → ack (`session`; protocol v2's devices, sessions,
//! fan-out and linking in `device`, and the checks every delivered message
//! passes in `receive`), signed broadcasts (`broadcast`), contacts
//! pinned on first use and replaced only when the user trusts a new key
//! (`contacts`), the home directory, its account and its store (`home`,
//! `account`), what the server pushes (`events`, bounded), the interactive
//! chat (`chat`), the lines and JSON the command prints, with text from the
//! network made safe for a terminal (`show`), and errors with their exit
//! statuses (`error`). It shares only `protocol`, `crypto`, `tls` and
//! `domain` with the server; it never imports server modules.

mod account;
mod broadcast;
mod chat;
mod connection;
mod contacts;
mod device;
mod error;
mod events;
mod home;
mod receive;
mod register;
mod session;
pub mod show;

pub use account::{Account, DEFAULT_SERVER, check_address, server_for};
pub use broadcast::Authorship;
pub use chat::{chat, chat_on_terminal};
pub use connection::Connection;
pub use contacts::KeyOffer;
pub use device::manage::{DeviceInfo, LINK_WAIT};
pub use device::outbox::{DeviceCopy, Sealed};
pub use device::partly::PartlySent;
pub use error::{ClientError, Exit};
pub use events::{Event, MAX_QUEUED_BYTES, MAX_QUEUED_EVENTS, Missed};
pub use home::{Direction, HistoryEntry, Home, Record};
pub use receive::{Received, Refusal};
pub use register::{CodeAnswer, Registration};
pub use session::{Client, Session};

use std::sync::Arc;

use crate::domain::Fingerprint;
use crate::protocol::Response;

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
    /// The recipient's server refused one device's copy of a message this
    /// device sent (protocol v2); that copy will never arrive.
    Undeliverable(crate::protocol::notice::Undeliverable),
    /// A device of `phone` gets nothing from this send, for `why`.
    /// `device` is its id: always when the server offered no keys for it,
    /// and when refused keys named one whose certificate checked out.
    DeviceLeftOut {
        phone: String,
        device: Option<u32>,
        why: LeftOut,
    },
}

/// Why a listed device gets nothing from a send (docs/PROTOCOL.md §7.9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeftOut {
    /// The keys the server offered for it were refused: forged, or older
    /// than a device keeps them.
    Refused(crate::crypto::v2::Error),
    /// The server offered none: the device has not published its prekeys
    /// yet (or not the last-resort keys a session starts from).
    NoKeys,
}

/// Receives notices; the command line prints them on standard error.
pub type Notify = Arc<dyn Fn(Notice) + Send + Sync>;

/// An answer the request never calls for.
fn unexpected(r: Response) -> ClientError {
    ClientError::Protocol(format!("{r:?}"))
}

/// An answer that is not what the request calls for: a server's `error`
/// is its refusal, with the wait it named; anything else is unexpected.
fn refused(r: Response) -> ClientError {
    match r {
        Response::Error {
            code,
            message,
            retry_after_ms,
            ..
        } => ClientError::Server {
            code,
            message,
            retry_after_ms,
        },
        other => unexpected(other),
    }
}
