//! Proof of key possession: a signature over a transcript that binds the
//! purpose, this connection's TLS exporter value, a fresh server nonce, the
//! phone and the key. A captured signature is useless on any other
//! connection (different exporter) or twice on this one (nonce used once).

use crate::crypto::PublicKey;
use crate::crypto::v2::{DeviceId, PublicPoint, device_login_transcript};
use crate::crypto::{Purpose, auth_transcript};
use crate::domain::PhoneNumber;
use crate::protocol::ErrorCode;

/// Length of the server's login nonce.
pub const NONCE_LEN: usize = 32;

/// A refused proof of key possession.
#[derive(Debug, thiserror::Error)]
#[error("the signature does not prove possession of the key for this connection")]
pub struct ProofRefused;

impl ProofRefused {
    /// The stable code a client is told.
    pub fn code(&self) -> ErrorCode {
        ErrorCode::BadSignature
    }
}

/// A fresh nonce from the operating system's generator.
pub fn fresh_nonce() -> [u8; NONCE_LEN] {
    use rand::TryRng;
    let mut n = [0u8; NONCE_LEN];
    rand::rngs::SysRng
        .try_fill_bytes(&mut n)
        .expect("the operating system's random generator failed");
    n
}

/// Checks that `signature` proves possession of `key` for this purpose,
/// connection and nonce.
fn verify(
    purpose: Purpose,
    exporter: &[u8; 32],
    nonce: &[u8; NONCE_LEN],
    phone: &PhoneNumber,
    key: &PublicKey,
    signature: &[u8],
) -> bool {
    let transcript = auth_transcript(purpose, exporter, nonce, phone, &key.to_spki_der());
    key.verify(&transcript, signature).is_ok()
}

/// [`verify`] off the async threads (a public-key operation costs about as
/// much as storing many messages); a refusal is logged.
pub async fn check(
    purpose: Purpose,
    exporter: [u8; 32],
    nonce: [u8; NONCE_LEN],
    phone: &PhoneNumber,
    key: PublicKey,
    signature: Vec<u8>,
) -> Result<(), ProofRefused> {
    find(purpose, exporter, nonce, phone, vec![key], signature)
        .await
        .map(drop)
}

/// Which of `keys` (the first, if several) `signature` proves possession
/// of, for this purpose, connection and nonce; checked as [`check`] does.
pub async fn find(
    purpose: Purpose,
    exporter: [u8; 32],
    nonce: [u8; NONCE_LEN],
    phone: &PhoneNumber,
    keys: Vec<PublicKey>,
    signature: Vec<u8>,
) -> Result<usize, ProofRefused> {
    let phone_owned = phone.clone();
    let found = tokio::task::spawn_blocking(move || {
        keys.iter()
            .position(|key| verify(purpose, &exporter, &nonce, &phone_owned, key, &signature))
    })
    .await
    .unwrap_or(None);
    found.ok_or_else(|| {
        tracing::info!(%phone, "proof of key possession refused");
        ProofRefused
    })
}

/// Checks that `signature`, by a listed device's key, proves possession of
/// that key for this connection and nonce (the device login transcript of
/// docs/PROTOCOL.md §9.2). One P-256 verification, cheap enough to run
/// in place.
pub fn check_device(
    exporter: &[u8; 32],
    nonce: &[u8; NONCE_LEN],
    phone: &PhoneNumber,
    device: DeviceId,
    key: &PublicPoint,
    signature: &[u8],
) -> Result<(), ProofRefused> {
    let transcript = device_login_transcript(exporter, nonce, phone, device, key);
    key.verify(&transcript, signature).map_err(|_| {
        tracing::info!(%phone, %device, "device login refused");
        ProofRefused
    })
}
