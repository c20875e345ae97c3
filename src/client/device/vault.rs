//! The state key: what seals every secret value of protocol v2 that the
//! client keeps in its database (the device key, the prekey store, the
//! sessions). It is derived from a P-256 key kept in `state.pem` beside the
//! identity key, written and read exactly like it: encrypted with the
//! passphrase when there is one, mode 0600. So the database alone (a backup,
//! a copied file) opens nothing, and the passphrase guards the sessions as
//! it guards the account key, at the cost of one more key derivation per
//! command.

use std::path::Path;

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use hkdf::Hkdf;
use rand::Rng;
use rand::rand_core::UnwrapErr;
use rand::rngs::SysRng;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::client::ClientError;
use crate::crypto::Identity;
use crate::protocol::KeyType;

/// The file beside `identity.pem` that holds the state key's root.
pub const STATE_FILE: &str = "state.pem";
const NONCE_LEN: usize = 12;
const INFO: &[u8] = b"carrier-v2 client state";

/// Seals and opens the client's stored secrets.
pub struct Vault {
    key: Zeroizing<[u8; 32]>,
}

impl Vault {
    /// Makes a new state key and saves its root in `dir`.
    pub fn create(dir: &Path, passphrase: Option<&str>) -> Result<Self, ClientError> {
        let root = Identity::generate(KeyType::P256);
        root.save(&dir.join(STATE_FILE), passphrase)?;
        Ok(Self::derive(&root))
    }

    /// Reads the state key's root from `dir`.
    pub fn load(dir: &Path, passphrase: Option<&str>) -> Result<Self, ClientError> {
        let root = crate::client::error::load_key(&dir.join(STATE_FILE), passphrase)?;
        Ok(Self::derive(&root))
    }

    fn derive(root: &Identity) -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        Hkdf::<Sha256>::new(Some(&[0u8; 32]), &root.pkcs8_der())
            .expand(INFO, key.as_mut())
            .expect("32 bytes is a valid HKDF-SHA256 length");
        Self { key }
    }

    /// nonce ‖ AES-256-GCM(plain) with `what` (the row it is stored in) as
    /// associated data, so one sealed value cannot stand in for another.
    pub fn seal(&self, what: &str, plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        UnwrapErr(SysRng).fill_bytes(&mut nonce);
        let sealed = Aes256Gcm::new((&*self.key).into())
            .encrypt(
                (&nonce).into(),
                Payload {
                    msg: plain,
                    aad: what.as_bytes(),
                },
            )
            .expect("client state fits AES-GCM");
        [&nonce[..], &sealed].concat()
    }

    /// Opens what [`Vault::seal`] made for `what`.
    pub fn open(&self, what: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, ClientError> {
        let damaged = || ClientError::Protocol(format!("the stored {what} is damaged"));
        if sealed.len() < NONCE_LEN {
            return Err(damaged());
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| damaged())?;
        Aes256Gcm::new((&*self.key).into())
            .decrypt(
                (&nonce).into(),
                Payload {
                    msg: body,
                    aad: what.as_bytes(),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| damaged())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_state_opens_only_with_its_key_and_label() {
        let dir = tempfile::tempdir().unwrap();
        let vault = Vault::create(dir.path(), Some("pass")).unwrap();
        let sealed = vault.seal("session", b"secret state");
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        let again = Vault::load(dir.path(), Some("pass")).unwrap();
        assert_eq!(&*again.open("session", &sealed).unwrap(), b"secret state");
        assert!(again.open("device", &sealed).is_err(), "another row");
        assert!(
            Vault::load(dir.path(), None).is_err(),
            "needs the passphrase"
        );
        let other = tempfile::tempdir().unwrap();
        let stranger = Vault::create(other.path(), None).unwrap();
        assert!(stranger.open("session", &sealed).is_err());
    }
}
