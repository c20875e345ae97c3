//! Our own private identity key: made from the OS generator, used to
//! sign, and encoded as PKCS#8 for key files and the TLS certificate.

use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use p256::elliptic_curve::Generate;
use pkcs8::der::SecretDocument;
use pkcs8::{EncodePrivateKey, PrivateKeyInfoRef};
use rand::rand_core::UnwrapErr;
use rand::rngs::SysRng;
use rsa::RsaPrivateKey;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::public::{PublicKey, check_rsa_policy, key_type_of, pss};
use crate::crypto::CryptoError;
use crate::domain::Fingerprint;
use crate::protocol::KeyType;

/// Size of RSA keys Carrier makes: 128-bit security, as for P-256.
const RSA_GENERATE_BITS: usize = 3072;

/// Our own private identity key. It never leaves this module except as
/// PKCS#8 (for key files and the TLS certificate); both key types wipe
/// their secret values when dropped.
pub enum Identity {
    /// ECDSA/ECDH on NIST P-256.
    P256(SigningKey),
    /// RSA, 2048..=4096 bits (Carrier makes 3072).
    Rsa(RsaPrivateKey),
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Identity({}, {})",
            self.key_type().as_str(),
            self.fingerprint()
        )
    }
}

impl Identity {
    /// Makes a new key from the OS generator (RSA: 3072 bits, which takes a
    /// few seconds). Panics only if the OS generator fails.
    pub fn generate(key_type: KeyType) -> Self {
        let mut rng = UnwrapErr(SysRng);
        match key_type {
            KeyType::P256 => Self::P256(SigningKey::generate_from_rng(&mut rng)),
            KeyType::Rsa => Self::Rsa(
                RsaPrivateKey::new(&mut rng, RSA_GENERATE_BITS).expect("RSA key generation failed"),
            ),
        }
    }

    /// Builds a P-256 identity from a fixed scalar. For reproducible test
    /// vectors only: real keys must come from [`Identity::generate`].
    #[cfg(test)]
    pub(crate) fn from_p256_scalar_for_tests(scalar: &[u8; 32]) -> Result<Self, CryptoError> {
        SigningKey::from_slice(scalar)
            .map(Self::P256)
            .map_err(|_| super::public::bad_key("scalar is zero or not below the group order"))
    }

    /// What peers need to encrypt to us and check our signatures.
    pub fn public_key(&self) -> PublicKey {
        match self {
            Self::P256(k) => PublicKey::P256(k.verifying_key().into()),
            Self::Rsa(k) => PublicKey::Rsa(k.to_public_key()),
        }
    }

    /// Selects the envelope algorithms used with this key.
    pub fn key_type(&self) -> KeyType {
        match self {
            Self::P256(_) => KeyType::P256,
            Self::Rsa(_) => KeyType::Rsa,
        }
    }

    /// Our fingerprint, to show the user for out-of-band comparison.
    pub fn fingerprint(&self) -> Fingerprint {
        self.public_key().fingerprint()
    }

    /// Signs envelopes, statements and login transcripts. P-256 signatures
    /// are deterministic (RFC 6979) and normalised to low S, the only form
    /// [`PublicKey::verify`] accepts; RSA-PSS salts come from the OS generator.
    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        match self {
            Self::P256(k) => Signer::<Signature>::sign(k, msg).normalize_s().to_vec(),
            Self::Rsa(k) => k
                .sign_with_rng(&mut UnwrapErr(SysRng), pss(), &Sha256::digest(msg))
                .expect("RSA-PSS signing with a valid key cannot fail"),
        }
    }

    /// Unencrypted PKCS#8 DER, for building the server's TLS certificate.
    pub fn pkcs8_der(&self) -> Zeroizing<Vec<u8>> {
        self.pkcs8_document().to_bytes()
    }

    pub(super) fn from_pkcs8_der(der: &[u8]) -> Result<Self, CryptoError> {
        let damaged = || pem_error("wrong passphrase or damaged key file");
        let info = PrivateKeyInfoRef::try_from(der).map_err(|_| damaged())?;
        match key_type_of(&info.algorithm) {
            Some(KeyType::P256) => SigningKey::try_from(info)
                .map(Self::P256)
                .map_err(|_| damaged()),
            Some(KeyType::Rsa) => {
                let key = RsaPrivateKey::try_from(info).map_err(|_| damaged())?;
                check_rsa_policy(key.as_ref())?;
                Ok(Self::Rsa(key))
            }
            None => Err(pem_error(
                "unsupported key algorithm (Carrier uses P-256 or RSA)",
            )),
        }
    }

    pub(super) fn pkcs8_document(&self) -> SecretDocument {
        match self {
            Self::P256(k) => k.to_pkcs8_der(),
            Self::Rsa(k) => k.to_pkcs8_der(),
        }
        .expect("a valid private key always encodes")
    }
}

pub(super) fn pem_error(why: &str) -> CryptoError {
    CryptoError::Pem(why.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::test_keys::rsa_3072 as rsa_identity;
    use rsa::Pss;

    #[test]
    fn p256_sign_verify() {
        let id = Identity::generate(KeyType::P256);
        let sig = id.sign(b"hello");
        assert_eq!(sig.len(), 64);
        assert_eq!(
            sig,
            id.sign(b"hello"),
            "RFC 6979 signatures are deterministic"
        );
        let pk = id.public_key();
        pk.verify(b"hello", &sig).unwrap();
        assert!(matches!(
            pk.verify(b"hellO", &sig),
            Err(CryptoError::BadSignature)
        ));
        assert!(pk.verify(b"hello", &sig[..63]).is_err());
        let other = Identity::generate(KeyType::P256).public_key();
        assert!(other.verify(b"hello", &sig).is_err());
    }

    #[test]
    fn rsa_sign_verify() {
        let id = rsa_identity();
        let sig = id.sign(b"hello");
        assert_eq!(sig.len(), 384);
        let pk = id.public_key();
        pk.verify(b"hello", &sig).unwrap();
        assert!(pk.verify(b"hellO", &sig).is_err());
        let mut flipped = sig.clone();
        flipped[10] ^= 1;
        assert!(pk.verify(b"hello", &flipped).is_err());
        let wrong_salt = match id {
            Identity::Rsa(k) => k
                .sign_with_rng(
                    &mut UnwrapErr(SysRng),
                    Pss::<Sha256>::new_with_salt(20),
                    &Sha256::digest(b"hello"),
                )
                .unwrap(),
            Identity::P256(_) => unreachable!(),
        };
        assert!(
            pk.verify(b"hello", &wrong_salt).is_err(),
            "salt length is exactly 32"
        );
    }

    #[test]
    fn pkcs8_der_parses_as_the_same_key() {
        let id = Identity::generate(KeyType::P256);
        let back = Identity::from_pkcs8_der(&id.pkcs8_der()).unwrap();
        assert_eq!(back.public_key(), id.public_key());
    }

    #[test]
    fn debug_shows_no_secret() {
        let id = Identity::from_p256_scalar_for_tests(&[7; 32]).unwrap();
        let shown = format!("{id:?}");
        assert!(shown.starts_with("Identity(p256, "), "{shown}");
        assert!(!shown.contains(&hex::encode([7u8; 32])));
    }
}
