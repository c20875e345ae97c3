//! The server's secret for one-time-code hashes: 32 bytes from the OS
//! generator, kept in the data directory (mode 0600, like the server key),
//! made on first start. A code is stored only as HMAC-SHA256 under this
//! key, bound to its phone and key, so the database alone tells nothing
//! about pending codes. Servers that share one database share this file.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use hmac::{KeyInit, Mac};
use zeroize::Zeroizing;

use crate::domain::PhoneNumber;

/// File name of the key inside the data directory.
pub const CODE_KEY_FILE: &str = "otp_code.key";
/// Tag of stored code hashes; anything else (an older argon2 hash) matches
/// no code.
const PREFIX: &str = "hmac-sha256:";
const KEY_LEN: usize = 32;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The secret code hashes are made with.
pub struct CodeKey(Zeroizing<[u8; KEY_LEN]>);

impl CodeKey {
    /// Reads the key at `path`, or makes and saves one if there is none. A
    /// file of another user, one others may read, or one of the wrong
    /// length is refused.
    pub fn load_or_create(path: &Path) -> std::io::Result<Self> {
        crate::private_files::check_owner(path)?.map_err(std::io::Error::other)?;
        match std::fs::File::open(path) {
            Ok(mut file) => {
                let mode = file.metadata()?.permissions().mode();
                if mode & 0o077 != 0 {
                    return Err(std::io::Error::other(format!(
                        "{} is readable by others (mode {:o}); run chmod 600 on it",
                        path.display(),
                        mode & 0o777
                    )));
                }
                let mut key = Zeroizing::new([0u8; KEY_LEN]);
                file.read_exact(&mut key[..])?;
                if file.read(&mut [0u8; 1])? != 0 {
                    return Err(std::io::Error::other(format!(
                        "{} is not a {KEY_LEN}-byte key",
                        path.display()
                    )));
                }
                Ok(Self(key))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                use rand::TryRng;
                let mut key = Zeroizing::new([0u8; KEY_LEN]);
                rand::rngs::SysRng
                    .try_fill_bytes(&mut key[..])
                    .map_err(std::io::Error::other)?;
                crate::private_files::write_atomic(path, &key[..])?;
                Ok(Self(key))
            }
            Err(e) => Err(e),
        }
    }

    /// The stored form of `code` for `phone` registering the key `spki`.
    pub fn hash(&self, phone: &PhoneNumber, spki: &[u8], code: &str) -> String {
        let tag = self.mac(phone, spki, code).finalize().into_bytes();
        format!("{PREFIX}{}", hex::encode(tag))
    }

    /// Whether `code` is the one `stored` was made from, compared in
    /// constant time.
    pub fn matches(&self, stored: &str, phone: &PhoneNumber, spki: &[u8], code: &str) -> bool {
        let Some(tag) = stored
            .strip_prefix(PREFIX)
            .and_then(|h| hex::decode(h).ok())
        else {
            return false;
        };
        self.mac(phone, spki, code).verify_slice(&tag).is_ok()
    }

    /// A value that tells whether two servers hold the same key without
    /// revealing it: the HMAC of a fixed label, which members of a cluster
    /// compare at start.
    pub fn check_value(&self) -> String {
        let mut mac = HmacSha256::new_from_slice(&self.0[..]).expect("HMAC takes any key length");
        mac.update(b"carrier-v1 cluster member check");
        hex::encode(mac.finalize().into_bytes())
    }

    fn mac(&self, phone: &PhoneNumber, spki: &[u8], code: &str) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.0[..]).expect("HMAC takes any key length");
        mac.update(b"carrier-v1 otp code\0");
        for field in [phone.as_str().as_bytes(), spki] {
            mac.update(&(field.len() as u32).to_be_bytes());
            mac.update(field);
        }
        mac.update(code.as_bytes());
        mac
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phone(p: &str) -> PhoneNumber {
        PhoneNumber::from_canonical(p).unwrap()
    }

    #[test]
    fn a_hash_matches_only_its_code_phone_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = CodeKey::load_or_create(&dir.path().join(CODE_KEY_FILE)).unwrap();
        let (alice, bob) = (phone("+12025550101"), phone("+12025550102"));
        let stored = key.hash(&alice, b"key a", "123456");
        assert!(key.matches(&stored, &alice, b"key a", "123456"));
        assert!(!key.matches(&stored, &alice, b"key a", "123457"));
        assert!(!key.matches(&stored, &bob, b"key a", "123456"));
        assert!(!key.matches(&stored, &alice, b"key b", "123456"));
        assert!(!key.matches("$argon2id$v=19$whatever", &alice, b"key a", "123456"));
        let again = CodeKey::load_or_create(&dir.path().join(CODE_KEY_FILE)).unwrap();
        assert!(
            again.matches(&stored, &alice, b"key a", "123456"),
            "the key persists"
        );
        let other = tempfile::tempdir().unwrap();
        let stranger = CodeKey::load_or_create(&other.path().join(CODE_KEY_FILE)).unwrap();
        assert!(!stranger.matches(&stored, &alice, b"key a", "123456"));
        assert_eq!(key.check_value(), again.check_value());
        assert_ne!(key.check_value(), stranger.check_value());
    }

    #[test]
    fn a_key_file_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CODE_KEY_FILE);
        CodeKey::load_or_create(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = CodeKey::load_or_create(&path).err().expect("refused");
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }
}
