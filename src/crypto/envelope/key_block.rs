//! The message key and the key block that carries it to the recipient:
//! P-256 recipients derive it from an ephemeral ECDH secret through
//! HKDF-SHA256 (the key block is the ephemeral point); RSA recipients get a
//! random key wrapped with OAEP-SHA256.

use zeroize::Zeroizing;

use super::SealRandomness;
use crate::crypto::primitives::{
    AES_KEY_LEN, hkdf_sha256, p256_ecdh, p256_ecdh_key_block, rsa_oaep_unwrap, rsa_oaep_wrap,
    uncompressed,
};
use crate::crypto::{CryptoError, Identity, PublicKey};
use crate::protocol::envelope::EnvelopeView;

/// Domain separator prefixed to the HKDF salt, so keys derived here cannot
/// collide with any other use of the same ECDH secret.
const HKDF_LABEL: &[u8] = b"carrier-v1";
/// HKDF info: names what the derived key is for.
const HKDF_INFO: &[u8] = b"carrier-v1 message key";

pub(super) type MessageKey = Zeroizing<[u8; AES_KEY_LEN]>;

/// Returns the key block and the message key it carries.
pub(super) fn wrap_key(
    recipient: &PublicKey,
    rnd: &SealRandomness,
) -> Result<(Vec<u8>, MessageKey), CryptoError> {
    match recipient {
        PublicKey::P256(pk) => {
            let ephemeral_point = uncompressed(&rnd.ephemeral.public_key());
            let shared = p256_ecdh(&rnd.ephemeral.to_nonzero_scalar(), pk);
            let key = message_key(
                shared.raw_secret_bytes(),
                &ephemeral_point,
                &uncompressed(pk),
            );
            Ok((ephemeral_point, key))
        }
        PublicKey::Rsa(pk) => Ok((
            rsa_oaep_wrap(pk, rnd.aes_key.as_ref())?,
            rnd.aes_key.clone(),
        )),
    }
}

/// Recovers the message key from the key block; any failure is `Decrypt`.
pub(super) fn unwrap_key(
    recipient: &Identity,
    view: &EnvelopeView<'_>,
) -> Result<MessageKey, CryptoError> {
    match recipient {
        Identity::P256(sk) => {
            let shared = p256_ecdh_key_block(sk.as_nonzero_scalar(), view.key_block)?;
            let own_point = uncompressed(&p256::PublicKey::from(sk.verifying_key()));
            Ok(message_key(
                shared.raw_secret_bytes(),
                view.key_block,
                &own_point,
            ))
        }
        Identity::Rsa(sk) => {
            let raw = rsa_oaep_unwrap(sk, view.key_block)?;
            if raw.len() != AES_KEY_LEN {
                return Err(CryptoError::Decrypt);
            }
            let mut key = Zeroizing::new([0u8; AES_KEY_LEN]);
            key.copy_from_slice(&raw);
            Ok(key)
        }
    }
}

/// HKDF salt: binds the derived key to both public points, so a key block
/// cannot be replayed against a different recipient key.
fn hkdf_salt(ephemeral_point: &[u8], recipient_point: &[u8]) -> Vec<u8> {
    [HKDF_LABEL, ephemeral_point, recipient_point].concat()
}

/// The P-256 message key: HKDF-SHA256 over the ECDH x-coordinate.
fn message_key(shared_x: &[u8], ephemeral_point: &[u8], recipient_point: &[u8]) -> MessageKey {
    let salt = hkdf_salt(ephemeral_point, recipient_point);
    let mut key = Zeroizing::new([0u8; AES_KEY_LEN]);
    hkdf_sha256(shared_x, &salt, HKDF_INFO, key.as_mut())
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    key
}
