//! Key files: PKCS#8 PEM, encrypted with PBES2 when a passphrase is
//! given, written atomically with mode 0600 and refused when others can
//! access them; and the server's own key, made on first start.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use pkcs8::der::SecretDocument;
use pkcs8::der::pem::PemLabel;
use pkcs8::pkcs5::{pbes2, scrypt};
use pkcs8::{EncryptedPrivateKeyInfoRef, LineEnding, PrivateKeyInfoRef};
use rand::Rng;
use rand::rand_core::UnwrapErr;
use rand::rngs::SysRng;
use zeroize::Zeroizing;

use super::identity::{Identity, pem_error};
use super::public::bad_key;
use crate::crypto::CryptoError;
use crate::protocol::KeyType;

/// scrypt cost of new passphrase-protected key files: N = 2^14 and r = 8 use
/// 16 MiB, the most for which OpenSSL 3's PKCS#8 reader still opens the file
/// (its PBES2 scrypt memory limit is 32 MiB, so N = 2^15 is refused), and
/// p = 5 multiplies the work five times over. This is the OWASP Password
/// Storage Cheat Sheet's scrypt minimum at 16 MiB, the equivalent of N = 2^17
/// with p = 1. Files keep their own parameters, so older ones still open.
const SCRYPT_LOG_N: u8 = 14;
const SCRYPT_R: u32 = 8;
const SCRYPT_P: u32 = 5;
/// PBES2 salt length for new key files.
const PBES2_SALT_LEN: usize = 16;

impl Identity {
    /// The key file format: PKCS#8 PEM, encrypted with PBES2 (scrypt +
    /// AES-256-CBC, which OpenSSL reads) when a passphrase is given.
    pub fn to_pkcs8_pem(&self, passphrase: Option<&str>) -> Zeroizing<String> {
        let doc = self.pkcs8_document();
        let pem = match passphrase {
            None => doc.to_pem(PrivateKeyInfoRef::PEM_LABEL, LineEnding::LF),
            Some(pass) => encrypt_pkcs8(&doc, pass)
                .to_pem(EncryptedPrivateKeyInfoRef::PEM_LABEL, LineEnding::LF),
        };
        pem.expect("PEM encoding of a key cannot fail")
    }

    /// Reads a key file's contents. The key type comes from the algorithm
    /// OID, so users need not say which kind of key they have.
    pub fn from_pkcs8_pem(pem: &str, passphrase: Option<&str>) -> Result<Self, CryptoError> {
        let (label, doc) =
            SecretDocument::from_pem(pem).map_err(|_| pem_error("the file is not a PEM key"))?;
        match (label, passphrase) {
            (PrivateKeyInfoRef::PEM_LABEL, _) => Self::from_pkcs8_der(doc.as_bytes()),
            (EncryptedPrivateKeyInfoRef::PEM_LABEL, None) => Err(CryptoError::NeedsPassphrase),
            (EncryptedPrivateKeyInfoRef::PEM_LABEL, Some(pass)) => {
                Self::from_pkcs8_der(decrypt_pkcs8(doc.as_bytes(), pass)?.as_bytes())
            }
            _ => Err(pem_error(
                "expected a PKCS#8 private key (BEGIN PRIVATE KEY)",
            )),
        }
    }

    /// Writes the key file atomically with mode 0600, so a crash never leaves
    /// a truncated key and other users never see it.
    pub fn save(&self, path: &Path, passphrase: Option<&str>) -> Result<(), CryptoError> {
        let pem = self.to_pkcs8_pem(passphrase);
        crate::private_files::write_atomic(path, pem.as_bytes())
            .map_err(|e| with_path(e, path).into())
    }

    /// Reads a key file written by [`Identity::save`] (or OpenSSL). A file
    /// other users may read or write is refused before it is read: the key
    /// may already be compromised, and its owner must decide.
    pub fn load(path: &Path, passphrase: Option<&str>) -> Result<Self, CryptoError> {
        let bytes = read_secret_file(path)?;
        let pem =
            std::str::from_utf8(&bytes).map_err(|_| pem_error("the file is not a PEM key"))?;
        Self::from_pkcs8_pem(pem, passphrase)
    }
}

/// File name of the server's long-term key inside its data directory.
pub const SERVER_KEY_FILE: &str = "server_key.pem";

/// Loads the server's long-term P-256 key, or makes and saves one on first
/// start (the `bool` says which). Like every key file, one that other users
/// can access is refused. The server has no passphrase to give, so an
/// encrypted key is refused with the command that writes it in the clear.
pub fn load_or_create_server_key(path: &Path) -> Result<(Identity, bool), CryptoError> {
    match Identity::load(path, None) {
        Ok(identity) if identity.key_type() == KeyType::P256 => Ok((identity, false)),
        Ok(_) => Err(bad_key("the server key must be a P-256 key")),
        Err(CryptoError::NeedsPassphrase) => Err(pem_error(&format!(
            "the key file is encrypted, and the server takes no passphrase: write it \
             unencrypted with `openssl pkey -in {path} -out {path}.plain`, then move \
             {path}.plain over it (mode 0600)",
            path = path.display()
        ))),
        Err(CryptoError::Io(e)) if e.kind() == io::ErrorKind::NotFound => {
            create_private_dir(path)?;
            let identity = Identity::generate(KeyType::P256);
            identity.save(path, None)?;
            Ok((identity, true))
        }
        Err(e) => Err(e),
    }
}

fn encrypt_pkcs8(doc: &SecretDocument, passphrase: &str) -> SecretDocument {
    let mut rng = UnwrapErr(SysRng);
    let mut salt = [0u8; PBES2_SALT_LEN];
    rng.fill_bytes(&mut salt);
    let mut iv = [0u8; 16];
    rng.fill_bytes(&mut iv);
    let cost = scrypt::Params::new(SCRYPT_LOG_N, SCRYPT_R, SCRYPT_P)
        .expect("the scrypt constants are valid parameters");
    let params = pbes2::Parameters::generate_scrypt_aes256cbc(cost, &salt, iv)
        .expect("a 16-byte salt is a valid scrypt salt");
    PrivateKeyInfoRef::try_from(doc.as_bytes())
        .and_then(|info| info.encrypt_with_params(params, passphrase))
        .expect("encrypting a valid PKCS#8 key cannot fail")
}

fn decrypt_pkcs8(der: &[u8], passphrase: &str) -> Result<SecretDocument, CryptoError> {
    EncryptedPrivateKeyInfoRef::try_from(der)
        .map_err(|_| pem_error("damaged encrypted key file"))?
        .decrypt(passphrase)
        .map_err(|_| pem_error("wrong passphrase or damaged key file"))
}

fn check_private_mode(path: &Path, mode: u32) -> Result<(), CryptoError> {
    if mode & 0o077 != 0 {
        return Err(CryptoError::InsecurePermissions {
            path: path.display().to_string(),
            mode: mode & 0o777,
        });
    }
    Ok(())
}

fn create_private_dir(path: &Path) -> Result<(), CryptoError> {
    match path.parent() {
        Some(dir) => crate::private_files::create_dir(dir).map_err(|e| with_path(e, dir).into()),
        None => Ok(()),
    }
}

/// Reads a key file into a buffer sized up front, so no stray copy of the
/// secret is left behind by reallocation. The mode is checked on the open
/// file, so it is the mode of the file that is read.
fn read_secret_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let mut file = File::open(path).map_err(|e| with_path(e, path))?;
    let meta = file.metadata().map_err(|e| with_path(e, path))?;
    check_private_mode(path, meta.permissions().mode())?;
    let len = usize::try_from(meta.len()).unwrap_or(0);
    let mut bytes = Zeroizing::new(Vec::with_capacity(len.saturating_add(1)));
    file.read_to_end(&mut bytes)
        .map_err(|e| with_path(e, path))?;
    Ok(bytes)
}

fn with_path(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::crypto::test_keys::rsa_3072 as rsa_identity;

    #[test]
    fn pem_round_trips() {
        for id in [&Identity::generate(KeyType::P256), rsa_identity()] {
            let plain = id.to_pkcs8_pem(None);
            assert!(plain.starts_with("-----BEGIN PRIVATE KEY-----"));
            let back = Identity::from_pkcs8_pem(&plain, None).unwrap();
            assert_eq!(back.public_key(), id.public_key());

            let enc = id.to_pkcs8_pem(Some("correct horse"));
            assert!(enc.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
            let back = Identity::from_pkcs8_pem(&enc, Some("correct horse")).unwrap();
            assert_eq!(back.public_key(), id.public_key());
            let err = Identity::from_pkcs8_pem(&enc, Some("wrong")).unwrap_err();
            assert!(err.to_string().contains("wrong passphrase"), "{err}");
            let err = Identity::from_pkcs8_pem(&enc, None).unwrap_err();
            assert!(matches!(err, CryptoError::NeedsPassphrase), "{err}");
        }
        assert!(matches!(
            Identity::from_pkcs8_pem("nope", None),
            Err(CryptoError::Pem(_))
        ));
    }

    #[test]
    fn save_writes_mode_0600_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id.pem");
        let id = Identity::generate(KeyType::P256);
        id.save(&path, Some("pw")).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        id.save(&path, None).unwrap();
        let back = Identity::load(&path, None).unwrap();
        assert_eq!(back.public_key(), id.public_key());
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }

    #[test]
    fn server_key_is_created_then_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("server.pem");
        let (created, fresh) = load_or_create_server_key(&path).unwrap();
        assert!(fresh);
        assert_eq!(created.key_type(), KeyType::P256);
        let (loaded, fresh) = load_or_create_server_key(&path).unwrap();
        assert!(!fresh);
        assert_eq!(loaded.public_key(), created.public_key());

        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_or_create_server_key(&path).unwrap_err();
        assert!(matches!(
            err,
            CryptoError::InsecurePermissions { mode: 0o644, .. }
        ));
        assert!(err.to_string().contains("chmod 600"), "{err}");

        created.save(&path, Some("pw")).unwrap();
        let err = load_or_create_server_key(&path).unwrap_err().to_string();
        assert!(
            err.contains(&format!("openssl pkey -in {}", path.display())),
            "an encrypted server key names the command that decrypts it: {err}"
        );
    }

    fn scrypt_params_of(pem: &str) -> pbes2::Parameters {
        let (_, doc) = SecretDocument::from_pem(pem).unwrap();
        match EncryptedPrivateKeyInfoRef::try_from(doc.as_bytes())
            .unwrap()
            .encryption_algorithm
        {
            pkcs8::pkcs5::EncryptionScheme::Pbes2(p) => p,
            other => panic!("not PBES2: {other:?}"),
        }
    }

    #[test]
    fn new_key_files_use_the_raised_scrypt_cost() {
        let id = Identity::generate(KeyType::P256);
        let params = scrypt_params_of(&id.to_pkcs8_pem(Some("pw")));
        let kdf = params.kdf.scrypt().expect("scrypt");
        assert_eq!(kdf.cost_parameter, 1 << SCRYPT_LOG_N);
        assert_eq!(u32::from(kdf.block_size), SCRYPT_R);
        assert_eq!(u32::from(kdf.parallelization), SCRYPT_P);
        assert_eq!(params.encryption.oid(), pbes2::AES_256_CBC_OID);
    }

    #[test]
    fn older_and_openssl_key_files_still_open() {
        let id = Identity::generate(KeyType::P256);
        let info = PrivateKeyInfoRef::try_from(id.pkcs8_document().as_bytes())
            .unwrap()
            .encrypt_with_rng(&mut SysRng, "pw")
            .unwrap();
        let old = info
            .to_pem(EncryptedPrivateKeyInfoRef::PEM_LABEL, LineEnding::LF)
            .unwrap();
        let kdf = scrypt_params_of(&old).kdf;
        assert_eq!(kdf.scrypt().unwrap().cost_parameter, 1 << 14);
        assert_eq!(kdf.scrypt().unwrap().parallelization, 1);
        let back = Identity::from_pkcs8_pem(&old, Some("pw")).unwrap();
        assert_eq!(back.public_key(), id.public_key());

        for file in ["openssl_scrypt_p256.pem", "openssl_pbkdf2_p256.pem"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/data/keys")
                .join(file);
            let pem = fs::read_to_string(&path).unwrap();
            let key = Identity::from_pkcs8_pem(&pem, Some("carrier")).unwrap();
            assert_eq!(key.key_type(), KeyType::P256, "{file}");
        }
    }

    #[test]
    fn load_refuses_files_others_can_access() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.pem");
        let id = Identity::generate(KeyType::P256);
        id.save(&path, None).unwrap();
        for mode in [0o644, 0o640, 0o604, 0o620, 0o602] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            let err = Identity::load(&path, None).unwrap_err();
            assert!(
                matches!(err, CryptoError::InsecurePermissions { mode: m, .. } if m == mode),
                "{mode:o}: {err}"
            );
            let shown = err.to_string();
            assert!(
                shown.contains(&format!("chmod 600 {}", path.display())),
                "{shown}"
            );
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
        assert_eq!(
            Identity::load(&path, None).unwrap().public_key(),
            id.public_key()
        );
    }
}
