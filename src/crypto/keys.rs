//! Identity keys: peers' public keys ([`public`]), our own private key
//! ([`identity`]) and the files it is kept in ([`file`]).

mod file;
mod identity;
mod public;

pub use file::{SERVER_KEY_FILE, load_or_create_server_key};
pub use identity::Identity;
pub use public::PublicKey;
