//! The primitive steps an envelope is built from, each behind one narrow
//! function that fixes Carrier's parameters: AES-256-GCM with a 12-byte
//! nonce and a 16-byte tag, HKDF-SHA256, P-256 ECDH, RSA-OAEP-SHA256.
//!
//! `envelope.rs` reaches these algorithms only through this file, and the
//! functions are public so that the Wycheproof vectors (`tests/wycheproof.rs`)
//! and the fuzzers run exactly the code that sealing and opening run, rather
//! than the crates underneath. Every failure on received data is
//! [`CryptoError::Decrypt`], so an attacker learns nothing from which step
//! refused.

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, AeadInOut, KeyInit, Payload};
use hkdf::Hkdf;
use p256::ecdh::SharedSecret;
use p256::elliptic_curve::sec1::ToSec1Point;
use rand::rand_core::UnwrapErr;
use rand::rngs::SysRng;
use rsa::{Oaep, RsaPrivateKey, RsaPublicKey};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::CryptoError;
use crate::protocol::envelope::{NONCE_LEN, TAG_LEN};

/// AES-256 key length.
pub const AES_KEY_LEN: usize = 32;
/// An uncompressed SEC1 P-256 point: 0x04 ‖ x ‖ y. The only point form an
/// envelope carries, so one point has one encoding.
pub const P256_POINT_LEN: usize = 65;

/// AES-256-GCM encryption; returns ciphertext ‖ 16-byte tag. Fails only for
/// a plaintext beyond GCM's limit, far above any message Carrier seals.
pub fn aes_gcm_seal(
    key: &[u8; AES_KEY_LEN],
    nonce: &[u8; NONCE_LEN],
    plaintext: &[u8],
    aad: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    Aes256Gcm::new(key.into())
        .encrypt(
            nonce.into(),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| CryptoError::TextTooLong)
}

/// AES-256-GCM decryption of ciphertext ‖ tag. The plaintext is returned in
/// a buffer that is wiped when dropped; a wrong key, tag, nonce or associated
/// data (or input shorter than a tag) is [`CryptoError::Decrypt`].
pub fn aes_gcm_open(
    key: &[u8; AES_KEY_LEN],
    nonce: &[u8; NONCE_LEN],
    ciphertext_and_tag: &[u8],
    aad: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    if ciphertext_and_tag.len() < TAG_LEN {
        return Err(CryptoError::Decrypt);
    }
    let mut buf = Zeroizing::new(ciphertext_and_tag.to_vec());
    Aes256Gcm::new(key.into())
        .decrypt_in_place(nonce.into(), aad, &mut *buf)
        .map_err(|_| CryptoError::Decrypt)?;
    Ok(buf)
}

/// HKDF-SHA256 (RFC 5869) extract-then-expand into `out`. An empty salt is
/// the same as none. Refuses an output longer than 255 × 32 bytes.
pub fn hkdf_sha256(
    ikm: &[u8],
    salt: &[u8],
    info: &[u8],
    out: &mut [u8],
) -> Result<(), CryptoError> {
    Hkdf::<Sha256>::new(Some(salt), ikm)
        .expand(info, out)
        .map_err(|_| CryptoError::BadKey("HKDF output too long".into()))
}

/// P-256 ECDH with a peer key already parsed and checked (a recipient's
/// identity key); returns the shared x-coordinate, wiped when dropped.
pub fn p256_ecdh(own: &p256::NonZeroScalar, peer: &p256::PublicKey) -> SharedSecret {
    p256::ecdh::diffie_hellman(own, peer.as_affine())
}

/// P-256 ECDH with a point received in an envelope's key block: exactly 65
/// bytes, uncompressed, on the curve and not the identity. Anything else is
/// [`CryptoError::Decrypt`], so no invalid-curve or small-subgroup point is
/// ever multiplied by our secret.
pub fn p256_ecdh_key_block(
    own: &p256::NonZeroScalar,
    key_block: &[u8],
) -> Result<SharedSecret, CryptoError> {
    if key_block.len() != P256_POINT_LEN {
        return Err(CryptoError::Decrypt);
    }
    let peer = p256::PublicKey::from_sec1_bytes(key_block).map_err(|_| CryptoError::Decrypt)?;
    Ok(p256_ecdh(own, &peer))
}

/// The 65-byte uncompressed encoding of a point, as carried in key blocks
/// and bound into the message key.
pub fn uncompressed(point: &p256::PublicKey) -> Vec<u8> {
    point.to_sec1_point(false).as_bytes().to_vec()
}

/// RSA-OAEP (SHA-256, MGF1-SHA256, empty label) encryption of a message key.
pub fn rsa_oaep_wrap(peer: &RsaPublicKey, key: &[u8]) -> Result<Vec<u8>, CryptoError> {
    peer.encrypt(&mut UnwrapErr(SysRng), Oaep::<Sha256>::new(), key)
        .map_err(|_| CryptoError::BadKey("RSA key cannot wrap a message key".into()))
}

/// RSA-OAEP (SHA-256, MGF1-SHA256, empty label) decryption, blinded; the
/// result is wiped when dropped. Any failure is [`CryptoError::Decrypt`].
pub fn rsa_oaep_unwrap(
    own: &RsaPrivateKey,
    block: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    own.decrypt_blinded(&mut UnwrapErr(SysRng), Oaep::<Sha256>::new(), block)
        .map(Zeroizing::new)
        .map_err(|_| CryptoError::Decrypt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::elliptic_curve::Generate;

    #[test]
    fn gcm_round_trip_and_refusals() {
        let (key, nonce) = ([7u8; 32], [1u8; 12]);
        let ct = aes_gcm_seal(&key, &nonce, b"text", b"aad").unwrap();
        assert_eq!(ct.len(), 4 + TAG_LEN);
        assert_eq!(&*aes_gcm_open(&key, &nonce, &ct, b"aad").unwrap(), b"text");
        for bad in [&ct[..TAG_LEN - 1], &ct[..0], &ct[1..]] {
            assert!(matches!(
                aes_gcm_open(&key, &nonce, bad, b"aad"),
                Err(CryptoError::Decrypt)
            ));
        }
        assert!(aes_gcm_open(&key, &nonce, &ct, b"aaD").is_err());
        assert!(aes_gcm_open(&[8; 32], &nonce, &ct, b"aad").is_err());
    }

    #[test]
    fn hkdf_length_limit() {
        let mut ok = vec![0u8; 255 * 32];
        hkdf_sha256(b"ikm", b"", b"", &mut ok).unwrap();
        let mut too_long = vec![0u8; 255 * 32 + 1];
        assert!(hkdf_sha256(b"ikm", b"", b"", &mut too_long).is_err());
    }

    #[test]
    fn key_block_point_forms() {
        let mut rng = UnwrapErr(SysRng);
        let own = p256::SecretKey::generate_from_rng(&mut rng);
        let peer = p256::SecretKey::generate_from_rng(&mut rng);
        let point = uncompressed(&peer.public_key());
        let via_block = p256_ecdh_key_block(&own.to_nonzero_scalar(), &point).unwrap();
        let direct = p256_ecdh(&own.to_nonzero_scalar(), &peer.public_key());
        assert_eq!(via_block.raw_secret_bytes(), direct.raw_secret_bytes());

        let compressed = peer.public_key().to_sec1_point(true);
        let mut off_curve = point.clone();
        off_curve[64] ^= 1;
        let identity = [0u8; 1];
        let zeros = [[4u8].as_slice(), &[0u8; 64]].concat();
        for bad in [compressed.as_bytes(), &off_curve, &identity, &zeros, &[]] {
            assert!(matches!(
                p256_ecdh_key_block(&own.to_nonzero_scalar(), bad),
                Err(CryptoError::Decrypt)
            ));
        }
    }
}
