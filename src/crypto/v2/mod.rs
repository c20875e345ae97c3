//! Protocol v2's cryptographic core (docs/PROTOCOL.md): device
//! certificates and lists signed by the account key, signed prekeys with
//! ML-KEM-768, PQXDH over P-256, the Double Ratchet, padded and typed
//! payloads, signed envelopes, and safety numbers.
//!
//! How the pieces meet, for a client:
//! - once per device: [`LocalDevice`] (the device key), a [`PrekeyStore`]
//!   whose public halves are published, a [`DeviceCertificate`] and a new
//!   [`DeviceList`] signed by the account key;
//! - to write to a device first: check the peer's list and bundle
//!   ([`DeviceList::verify`], [`PrekeyBundle::verify`]), add a claimed
//!   one-time prekey ([`VerifiedBundle::with_claim`]), then
//!   [`Session::initiate`] and [`Session::seal`];
//! - on receipt: [`Envelope::parse`], find the [`VerifiedDevice`] of the
//!   sender, then [`Session::open`] for a known session id or
//!   [`Session::accept`] for a new one. Both check the device's signature
//!   before any secret state is read or changed, and change nothing when
//!   they fail.
//!
//! Every secret type wipes itself when dropped, prints no secret in
//! `Debug`, and has a versioned byte encoding for the client's database.

mod codec;
mod device;
mod ec;
mod envelope;
#[cfg(test)]
mod fixture;
mod kem;
mod link;
mod padding;
mod pqxdh;
mod prekey_store;
mod prekeys;
#[cfg(test)]
mod properties;
mod ratchet;
mod safety_number;
mod session;
#[cfg(test)]
mod vectors;

pub use device::{
    DeviceCertificate, DeviceList, MAX_DEVICE_NAME, MAX_LIST_DEVICES, VerifiedDevice,
    VerifiedDeviceList,
};
pub use ec::{DeviceKey, EcSecret, POINT_LEN, PublicPoint, SIGNATURE_LEN};
pub use envelope::{ClearHeader, Envelope, EnvelopeKind, MAX_ENVELOPE_V2, SessionId};
pub use kem::{KEM_CIPHERTEXT_LEN, KEM_PUBLIC_LEN, KemPublic, KemSecret};
pub use link::{LinkCode, LinkResponse};
pub use padding::{Content, MAX_PADDED, MAX_TEXT_BYTES, MIN_PADDED, is_padded_size, padded_size};
pub use prekey_store::{
    KEM_ONE_TIME_BATCH, KEM_ONE_TIME_LOW, MAX_HELD_BATCHES, MAX_SEEN_BASE_KEYS, ONE_TIME_BATCH,
    ONE_TIME_LOW, PrekeyStore, RETAIN_REPLACED_MS, ROTATE_AFTER_MS,
};
pub use prekeys::{
    ClaimedPrekeys, PrekeyBundle, PrekeyKind, PrekeyPublic, PublicPrekey, VerifiedBundle,
};
pub use ratchet::{MAX_SKIP, MAX_SKIPPED_AGE_MS, MAX_SKIPPED_KEYS};
pub use safety_number::{ITERATIONS as SAFETY_NUMBER_ITERATIONS, safety_number};
pub use session::{LocalDevice, Opened, Session, device_login_transcript};

/// Protocol version 2: the envelope's first byte and the `carrier-v2` labels.
pub const VERSION: u8 = 2;

/// A device's number within its account: 1 and up, chosen by the device
/// that signs the certificate, never reused under one account key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(u32);

impl DeviceId {
    /// Refuses 0, which the formats use for "none".
    pub fn new(id: u32) -> Result<Self, Error> {
        if id == 0 {
            Err(Error::Malformed("device id 0"))
        } else {
            Ok(Self(id))
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl std::fmt::Display for DeviceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Why a v2 operation failed. None of these carries key material or
/// plaintext; each says what was wrong with the input.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// Bytes that do not follow the layout; names the field.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// A public key that is not acceptable.
    #[error("unusable key: {0}")]
    BadKey(&'static str),
    /// A signature that does not verify, or a high-S ECDSA signature.
    #[error("signature does not verify")]
    BadSignature,
    /// The device does not chain to the pinned account key.
    #[error("device not certified: {0}")]
    NotCertified(&'static str),
    /// The envelope is for another phone or device.
    #[error("envelope is addressed to another device")]
    WrongRecipient,
    /// The envelope's sender is not the device it was opened with, or it
    /// belongs to another session.
    #[error("envelope does not belong to this session or sender")]
    WrongSession,
    /// A bundle's signed or last-resort prekey is older than devices keep
    /// them; look the device up again.
    #[error("the device's published prekeys are out of date")]
    StalePrekey,
    /// A prekey the envelope names is not held (used, or rotated out).
    #[error("prekey {0} is not available (already used or expired)")]
    UnknownPrekey(u32),
    /// The message was already opened, or its key was dropped as too old.
    #[error("message already received or too old to open")]
    Replay,
    /// The sender skipped more messages than a session keeps keys for.
    #[error("message is too far ahead in its chain")]
    TooFarAhead,
    /// Authenticated decryption failed.
    #[error("message could not be decrypted")]
    Decrypt,
    /// The content does not fit the largest padded payload.
    #[error("message content is too long")]
    TooLong,
    /// A stored state written by an unknown format version.
    #[error("stored state has unknown format version {0}")]
    StateVersion(u8),
    /// A counter would wrap; the session must be replaced by a new one.
    #[error("session exhausted; start a new session")]
    Exhausted,
}
