//! Carrier's integration tests: real servers on ephemeral ports with
//! temporary data directories, driven as a client would drive them.
//!
//! - `common`: in-process servers (`spawn_server`), registered users.
//! - `wire`: a raw protocol client for hostile and hand-built requests.
//! - `process`: the two binaries as child processes.
//!
//! Areas: `registration`, `delivery`, `bad_input`, `shutdown`, `crash`
//! (SIGKILL of the real binary), `cli` (both binaries end to end); the
//! client's `client_cli`, `client_keys` and `chat_terminal` (through a
//! pseudo-terminal), with `client_support` for running `carrier`.

mod common;
mod process;
mod wire;

mod architecture;
mod bad_input;
mod chat;
mod chat_terminal;
mod cli;
mod client_cli;
mod client_keys;
mod client_support;
mod crash;
mod delivery;
mod faults;
mod neighbourhood;
mod registration;
mod shutdown;
