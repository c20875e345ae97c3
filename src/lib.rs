//! Carrier: a persistent store-and-forward messaging service with
//! end-to-end encryption, its client, and the links between servers.
//!
//! # Code map
//!
//! Modules, bottom to top: each uses only those listed before it
//! (`tests/integration/architecture.rs` reads every `crate::` path under
//! `src/` and holds the code to this order). Two stacks share the bottom
//! rows up to [`tls`]: the server's ([`db`] to [`server`]) and the
//! client's ([`client`]), which never uses the server's.
//!
//! - [`domain`]: values parsed once at the edge (`PhoneNumber`, `MessageId`,
//!   `Fingerprint`), with private fields.
//! - [`protocol`]: the wire. Frames (4-byte length, checked against a named
//!   maximum before allocation) and the task that writes a connection's
//!   frames, JSON requests and responses, stable error codes, the envelope
//!   byte layout, the server-to-server messages and the signed statements'
//!   layouts. No sockets, storage or keys.
//! - [`clock`]: time as the rules see it, so tests move it instead of sleeping,
//!   and as people read it.
//! - [`rate`]: token buckets keyed by whoever is limited.
//! - [`private_files`]: files and directories only their owner may read.
//! - [`data_lock`]: one server per data directory (and per SQLite database).
//! - [`telemetry`]: the log set-up every binary shares, and warnings
//!   logged at most once per interval.
//! - [`metrics`]: the process's Prometheus counters, gauges and histograms.
//! - [`listen`]: accepting TCP connections so that none waits unseen in
//!   the backlog, even out of file descriptors, and keeping those that
//!   have not proved who they are in order and per client address, so
//!   the oldest of them yields to a newcomer.
//! - [`crypto`]: identity keys, PEM files, envelope seal and open, login
//!   transcripts. The only module that touches private keys or plaintext.
//! - [`tls`]: certificates made from long-term keys, pinning verifiers for
//!   clients and for mutual server links, dialling with a pinned key.
//! - [`db`]: the `Store`, on SQLite (WAL, `synchronous=FULL`) or PostgreSQL
//!   (`synchronous_commit = on`) behind one closed enum; one file per table
//!   family with its SQL written once, the group-commit queue writer, and
//!   full or unreachable storage turned into its own error codes. Opaque
//!   bytes only.
//! - [`auth`]: the one-time-code life cycle, where codes go, and proofs of
//!   key possession bound to the TLS session.
//! - [`routing`]: where a message goes, behind one `Router`: local delivery,
//!   relay, the directory of the neighbourhood with routes and withdrawals,
//!   live sessions and links, presence, broadcasts, and protocol v2's
//!   device lists, prekeys and per-device queues.
//! - [`config`]: the server's typed configuration, from a file and flags.
//! - [`link`]: neighbour links: listener, dialers with backoff, link sessions,
//!   and the running set that a configuration reload changes.
//! - [`admin`]: the operator's commands (`carrier-server admin`), on a
//!   running server's admin socket or a stopped server's store.
//! - [`server`]: start-up (`server::serve`), accept loop, one task per
//!   connection, one handler per request.
//! - [`web`]: the browser's edge: the embedded web client at `/` and the
//!   client protocol over a WebSocket at `/ws`, a session like the TCP
//!   port's (`server::run_session`), its proofs bound to a `hello` frame;
//!   `web::serve` is `carrier-server`'s start-up path.
//! - [`client`]: the library behind the `carrier` command.
//! - [`bench`]: the load generator behind `carrier-bench`.
//!
//! # Architecture invariants
//!
//! - Only `db` names a database backend: the rest of the server calls
//!   `Store` methods.
//! - `db` and `routing` never see plaintext or a private key: they do not
//!   import envelope opening, and the server holds no user's private key.
//! - `protocol` knows nothing of sockets, TLS, storage or keys.
//! - `client` never imports `db`, `auth`, `routing`, `config`, `link` or
//!   `server`.
//! - Every length read from the wire is checked against a named constant
//!   before anything is allocated.
//! - A `send` (and a relayed message) is acknowledged only after its commit;
//!   an `ack` deletes only what the session was given.
//! - Secrets (codes, keys, plaintext) appear in no log, span or error message.
//! - A new request kind touches its variant in `protocol` (its wire name
//!   comes from the variant), one handler file in `server::handlers` with
//!   its arm in the dispatching `match`, and the client call.
#![forbid(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod bench;
pub mod client;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod data_lock;
pub mod db;
pub mod domain;
pub mod link;
pub mod listen;
pub mod metrics;
pub mod private_files;
pub mod protocol;
pub mod rate;
pub mod routing;
pub mod server;
pub mod telemetry;
pub mod tls;
pub mod web;
