//! Carrier: a persistent store-and-forward messaging service with
//! end-to-end encryption, its client, and the links between servers.
//!
//! # Code map
//!
//! Layers, bottom to top; each uses only those below it. The server stack
//! and the client stack share only the bottom row.
//!
//! - [`domain`]: values parsed once at the edge (`PhoneNumber`, `MessageId`,
//!   `Fingerprint`), with private fields.
//! - [`protocol`]: the wire. Frames (4-byte length, checked against a named
//!   maximum before allocation), JSON requests and responses, stable error
//!   codes, the envelope byte layout, the server-to-server messages and the
//!   signed statements' layouts. No sockets, storage or keys.
//! - [`crypto`]: identity keys, PEM files, envelope seal and open, login
//!   transcripts. The only module that touches private keys or plaintext.
//! - [`clock`]: time as the rules see it, so tests move it instead of sleeping.
//! - [`db`]: SQLite through sqlx (WAL, `synchronous=FULL`), one file per table
//!   family, and the group-commit queue writer. Opaque bytes only.
//! - [`auth`]: the one-time-code life cycle, where codes go, and proofs of
//!   key possession bound to the TLS session.
//! - [`routing`]: where a message goes: the directory of the neighbourhood
//!   with routes, live sessions, live links, relay, presence, broadcasts.
//! - [`tls`]: certificates made from long-term keys, pinning verifiers for
//!   clients and for mutual server links.
//! - [`private_files`]: files and directories only their owner may read.
//! - [`frame_writer`]: the task that writes a connection's outgoing frames.
//! - [`server`]: accept loop, one task per connection, one handler per request.
//! - [`link`]: neighbour links: listener, dialers with backoff, link sessions.
//! - [`client`]: the library behind the `carrier` command.
//! - [`config`]: the server's typed configuration.
//! - [`bench`]: the load generator behind `carrier-bench`.
//!
//! # Architecture invariants
//!
//! - `db` and `routing` never see plaintext or a private key: they do not
//!   import envelope opening, and the server holds no user's private key.
//! - `protocol` knows nothing of sockets, TLS, storage or keys.
//! - `client` never imports `server`, `db`, `routing` or `link`.
//! - Every length read from the wire is checked against a named constant
//!   before anything is allocated.
//! - A `send` (and a relayed message) is acknowledged only after its commit;
//!   an `ack` deletes only what the session was given.
//! - Secrets (codes, keys, plaintext) appear in no log, span or error message.
//! - A new request kind touches its variant in `protocol`, one handler file
//!   in `server::handlers`, and the client call.
#![forbid(unsafe_code)]

pub mod auth;
pub mod bench;
pub mod client;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod db;
pub mod domain;
pub mod frame_writer;
pub mod link;
pub mod private_files;
pub mod protocol;
pub mod routing;
pub mod server;
pub mod tls;
