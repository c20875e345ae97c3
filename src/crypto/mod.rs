//! Keys, sealed envelopes and login proofs.
//!
//! This is the only module that touches private keys or message plaintext.
//! Everything else in Carrier handles public keys, fingerprints and opaque
//! envelope bytes, so a review of secret handling can start and end here.
//! All primitives come from the RustCrypto crates; randomness comes only
//! from the operating system's generator.

mod envelope;
mod keys;
pub mod primitives;
#[cfg(test)]
mod test_keys;
mod transcript;
pub mod v2;
#[cfg(test)]
mod vectors;
#[cfg(test)]
mod withdrawal_vector;

pub use envelope::{Opened, Outgoing, open, seal};
pub use keys::{Identity, PublicKey, SERVER_KEY_FILE, load_or_create_server_key};
pub use transcript::{Purpose, auth_transcript, sign_proof};

use crate::protocol::envelope::EnvelopeError;

/// Why a cryptographic operation failed. Messages name the problem and, where
/// the user can act, what to do; they never carry key material or plaintext.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// A public key that cannot be parsed or that Carrier does not accept.
    #[error("unusable public key: {0}")]
    BadKey(String),
    /// The signature does not verify under the claimed sender's key.
    #[error("signature does not verify")]
    BadSignature,
    /// The message could not be decrypted: wrong key, or it was altered.
    #[error("message could not be decrypted (wrong key or altered in transit)")]
    Decrypt,
    /// The envelope bytes are malformed.
    #[error("malformed envelope: {0}")]
    Envelope(#[from] EnvelopeError),
    /// The envelope is addressed to someone else.
    #[error("envelope is addressed to another recipient")]
    WrongRecipient,
    /// The envelope's algorithms do not fit the keys it is opened with.
    #[error("envelope algorithm does not match the key type")]
    KeyMismatch,
    /// A private key file that cannot be read or decrypted.
    #[error("cannot read private key: {0}")]
    Pem(String),
    /// A key file encrypted with a passphrase, read without one. Its own
    /// variant so each binary can say where a passphrase comes from (the
    /// client's `CARRIER_PASSPHRASE`; the server takes none).
    #[error("cannot read private key: the key file is encrypted and no passphrase was given")]
    NeedsPassphrase,
    /// A private key file other users can read; refused rather than used.
    #[error(
        "private key file {path} is accessible to other users (mode {mode:03o}); run `chmod 600 {path}`"
    )]
    InsecurePermissions {
        /// The offending file, shown so the user can fix it.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// Reading or writing a key file failed.
    #[error("key file I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The text is longer than one message may carry.
    #[error(
        "message text is longer than {} bytes",
        crate::protocol::MAX_TEXT_BYTES
    )]
    TextTooLong,
    /// The decrypted content is not UTF-8 text.
    #[error("decrypted message is not UTF-8 text")]
    NotUtf8,
}
