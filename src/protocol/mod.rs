//! The wire: how bytes become frames, frames become requests and responses,
//! and how a sealed envelope is laid out. No sockets, storage or keys here;
//! the codec is generic over any `AsyncRead`/`AsyncWrite`.

mod b64;
mod devices;
pub mod envelope;
mod error;
mod frame;
pub mod link;
mod message;
pub mod notice;
mod outbox;
pub mod signed;

pub use b64::B64;
pub use devices::{CurrentDevices, LastSeen};
pub use error::ErrorCode;
pub use frame::{FrameError, FrameQueue, read_frame, write_frame, write_loop};
pub use link::Broadcast;
pub use message::{
    Delivered, KeyType, ListedUser, OneTimeCode, Request, RequestFrame, Response, ResponseFrame,
    UserInfo, classify_request_error,
};
pub use outbox::{Outbox, OutboxError, OutboxReceiver, Queued};

/// Protocol version 1's envelope version byte, kept so that a version 1
/// envelope is recognised and refused (docs/PROTOCOL.md §14.7).
pub const PROTOCOL_VERSION: u8 = 1;

/// The protocol version this build speaks, as a link's and a WebSocket's
/// `hello` announce it (docs/PROTOCOL.md §1, §19.4, §20.3).
pub const HELLO_VERSION: u8 = 2;

/// Largest frame a server accepts from a client. A `send` carrying the
/// largest envelope, base64-encoded inside JSON, fits with room to spare.
pub const MAX_REQUEST_FRAME: usize = 128 * 1024;

/// Largest frame a server accepts from a connection that has not logged in.
/// What may be sent before login is small (`register` with an RSA-4096 key,
/// a `link_request` of at most 16 384 bytes, base64-encoded), and a
/// connection nobody has vouched for should not hold a request frame's worth
/// of memory each: there may be 256 of them per address.
pub const MAX_PRE_LOGIN_FRAME: usize = 32 * 1024;

/// Largest frame a client accepts from a server (a `fetch` batch).
pub const MAX_RESPONSE_FRAME: usize = 4 * 1024 * 1024;

/// Longest message text, in bytes of UTF-8, that a client will seal.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;

/// Largest envelope a server stores: the largest text plus headers, an RSA
/// key block and signature, and the AES-GCM tag.
pub const MAX_ENVELOPE_BYTES: usize = MAX_TEXT_BYTES + 2048;

/// Label of the TLS exporter value that login signatures are bound to
/// (RFC 8446 §7.5, 32 bytes, no context).
pub const TLS_EXPORTER_LABEL: &[u8] = b"EXPORTER-carrier-v2-auth";
