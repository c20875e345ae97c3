//! Carrier's integration tests: real servers on ephemeral ports with
//! temporary data directories, driven as a client would drive them.
//!
//! - `common`: in-process servers (`spawn_server`), registered users.
//! - `wire`: a raw protocol client for hostile and hand-built requests.
//! - `process`: the two binaries as child processes.
//! - `test_db`: a fresh SQLite file or PostgreSQL schema per test.
//!
//! Areas: `registration`, `delivery`, `bad_input`, `shutdown`, `crash`
//! (SIGKILL of the real binary), `cli` (both binaries end to end),
//! `server_key` (who may own the key file), `resources` (what one client,
//! user or address may take), `devices` (protocol v2's devices, prekeys
//! and per-device queues); the client's `client_cli`, `client_keys` and
//! `chat_terminal` (through a pseudo-terminal), with `client_support` for
//! running `carrier`; `storage` (the storage rules on every backend),
//! `cluster` (two members on one PostgreSQL database) and `full_disk`.

mod common;
mod process;
mod test_db;
mod wire;

mod admin;
mod architecture;
mod bad_input;
mod chat;
mod chat_terminal;
mod cli;
mod client_cli;
mod client_keys;
mod client_support;
mod client_v2;
mod cluster;
mod crash;
mod data_lock;
mod delivery;
mod devices;
mod faults;
mod full_disk;
mod list_paging;
mod logs;
mod metrics;
mod neighbourhood;
mod registration;
mod reload;
mod resources;
mod server_key;
mod shutdown;
mod storage;
mod web;
mod withdrawal;
