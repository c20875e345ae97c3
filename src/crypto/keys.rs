//! Identity keys: parsing and checking peers' public keys, and creating,
//! storing and using our own private key.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use p256::NistP256;
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::elliptic_curve::Generate;
use p256::elliptic_curve::scalar::IsHigh;
use pkcs8::der::SecretDocument;
use pkcs8::der::pem::PemLabel;
use pkcs8::pkcs5::{pbes2, scrypt};
use pkcs8::spki::{AlgorithmIdentifierRef, EncodePublicKey};
use pkcs8::{
    AssociatedOid, EncodePrivateKey, EncryptedPrivateKeyInfoRef, LineEnding, ObjectIdentifier,
    PrivateKeyInfoRef, SubjectPublicKeyInfoRef,
};
use rand::Rng;
use rand::rand_core::UnwrapErr;
use rand::rngs::SysRng;
use rsa::traits::PublicKeyParts;
use rsa::{Pss, RsaPrivateKey, RsaPublicKey};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::CryptoError;
use crate::domain::Fingerprint;
use crate::protocol::KeyType;

/// `id-ecPublicKey` (RFC 5480): the algorithm of every EC key, P-256 or not.
const EC_PUBLIC_KEY_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
/// `rsaEncryption` (RFC 8017); the PSS-only OID is refused to keep one form per key.
const RSA_ENCRYPTION_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
/// Size of RSA keys Carrier makes: 128-bit security, as for P-256.
const RSA_GENERATE_BITS: usize = 3072;
/// RSA moduli accepted from peers: weaker is breakable, larger is a cheap DoS.
const RSA_ACCEPTED_BITS: std::ops::RangeInclusive<u32> = 2048..=4096;
/// The only RSA public exponent accepted (F4), so odd keys cannot slip in.
const RSA_EXPONENT: [u8; 3] = [0x01, 0x00, 0x01];
/// RSA-PSS salt length, fixed so verification is strict rather than lenient.
const PSS_SALT_LEN: usize = 32;
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

/// A peer's public identity key, checked against Carrier's key policy when
/// parsed so that later code never meets a weak or odd key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// ECDSA/ECDH on NIST P-256.
    P256(p256::PublicKey),
    /// RSA with a 2048..=4096-bit modulus and exponent 65537.
    Rsa(RsaPublicKey),
}

impl PublicKey {
    /// Parses a key as received from the network or the database. Only the
    /// canonical DER form is accepted, so one key has exactly one fingerprint.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, CryptoError> {
        let spki = SubjectPublicKeyInfoRef::try_from(der)
            .map_err(|_| bad_key("not a DER SubjectPublicKeyInfo"))?;
        let key = match key_type_of(&spki.algorithm) {
            Some(KeyType::P256) => Self::P256(
                p256::PublicKey::try_from(spki).map_err(|_| bad_key("invalid P-256 point"))?,
            ),
            Some(KeyType::Rsa) => Self::Rsa(parse_rsa_spki(spki)?),
            None => return Err(bad_key("only P-256 and RSA keys are supported")),
        };
        if key.to_spki_der() != der {
            return Err(bad_key("key is not in canonical DER form"));
        }
        Ok(key)
    }

    /// Parses a key that arrived together with a declared type, refusing a
    /// mismatch so the declaration can be trusted wherever it is stored.
    pub fn from_spki_der_typed(key_type: KeyType, der: &[u8]) -> Result<Self, CryptoError> {
        let key = Self::from_spki_der(der)?;
        if key.key_type() != key_type {
            return Err(CryptoError::BadKey(format!(
                "declared as {} but the key is {}",
                key_type.as_str(),
                key.key_type().as_str()
            )));
        }
        Ok(key)
    }

    /// The wire and storage form, from which the fingerprint is computed.
    pub fn to_spki_der(&self) -> Vec<u8> {
        let doc = match self {
            Self::P256(k) => k.to_public_key_der(),
            Self::Rsa(k) => k.to_public_key_der(),
        };
        doc.expect("a valid public key always encodes").into_vec()
    }

    /// Selects the envelope algorithms used with this key.
    pub fn key_type(&self) -> KeyType {
        match self {
            Self::P256(_) => KeyType::P256,
            Self::Rsa(_) => KeyType::Rsa,
        }
    }

    /// What users compare out of band and what servers and contacts pin.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of_spki(&self.to_spki_der())
    }

    /// Checks a signature made by [`Identity::sign`]: ECDSA-SHA256 as 64-byte
    /// r ‖ s with 0 < r < n and 0 < s ≤ (n − 1)/2, or RSA-PSS-SHA256 with a
    /// 32-byte salt. The high-S twin (r, n − s) of a valid P-256 signature is
    /// refused, so nobody without the key can make a second signature for a
    /// statement. RSA-PSS signatures are still randomized: never use
    /// signature bytes to detect duplicates.
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> Result<(), CryptoError> {
        let ok = match self {
            Self::P256(k) => Signature::from_slice(sig).is_ok_and(|s| {
                !bool::from(s.s().is_high()) && VerifyingKey::from(k).verify(msg, &s).is_ok()
            }),
            Self::Rsa(k) => k.verify(pss(), &Sha256::digest(msg), sig).is_ok(),
        };
        ok.then_some(()).ok_or(CryptoError::BadSignature)
    }
}

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
    pub fn from_p256_scalar_for_tests(scalar: &[u8; 32]) -> Result<Self, CryptoError> {
        SigningKey::from_slice(scalar)
            .map(Self::P256)
            .map_err(|_| bad_key("scalar is zero or not below the group order"))
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
            (EncryptedPrivateKeyInfoRef::PEM_LABEL, None) => Err(pem_error(
                "the key file is encrypted; a passphrase is needed",
            )),
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

    fn from_pkcs8_der(der: &[u8]) -> Result<Self, CryptoError> {
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

    fn pkcs8_document(&self) -> SecretDocument {
        match self {
            Self::P256(k) => k.to_pkcs8_der(),
            Self::Rsa(k) => k.to_pkcs8_der(),
        }
        .expect("a valid private key always encodes")
    }
}

/// File name of the server's long-term key inside its data directory.
pub const SERVER_KEY_FILE: &str = "server_key.pem";

/// Loads the server's long-term P-256 key, or makes and saves one on first
/// start (the `bool` says which). Like every key file, one that other users
/// can access is refused.
pub fn load_or_create_server_key(path: &Path) -> Result<(Identity, bool), CryptoError> {
    match Identity::load(path, None) {
        Ok(identity) if identity.key_type() == KeyType::P256 => Ok((identity, false)),
        Ok(_) => Err(bad_key("the server key must be a P-256 key")),
        Err(CryptoError::Io(e)) if e.kind() == io::ErrorKind::NotFound => {
            create_private_dir(path)?;
            let identity = Identity::generate(KeyType::P256);
            identity.save(path, None)?;
            Ok((identity, true))
        }
        Err(e) => Err(e),
    }
}

fn pss() -> Pss<Sha256> {
    Pss::new_with_salt(PSS_SALT_LEN)
}

fn bad_key(why: &str) -> CryptoError {
    CryptoError::BadKey(why.to_owned())
}

fn pem_error(why: &str) -> CryptoError {
    CryptoError::Pem(why.to_owned())
}

fn key_type_of(algorithm: &AlgorithmIdentifierRef<'_>) -> Option<KeyType> {
    match algorithm.oid {
        EC_PUBLIC_KEY_OID => {
            (algorithm.parameters_oid().ok() == Some(NistP256::OID)).then_some(KeyType::P256)
        }
        RSA_ENCRYPTION_OID => Some(KeyType::Rsa),
        _ => None,
    }
}

fn parse_rsa_spki(spki: SubjectPublicKeyInfoRef<'_>) -> Result<RsaPublicKey, CryptoError> {
    let key = RsaPublicKey::try_from(spki).map_err(|_| bad_key("invalid RSA key"))?;
    check_rsa_policy(&key)?;
    Ok(key)
}

fn check_rsa_policy(key: &RsaPublicKey) -> Result<(), CryptoError> {
    let bits = key.n().bits();
    if !RSA_ACCEPTED_BITS.contains(&bits) {
        return Err(CryptoError::BadKey(format!(
            "RSA keys must have 2048 to 4096 bits, not {bits}"
        )));
    }
    if *key.e_bytes() != RSA_EXPONENT {
        return Err(bad_key("RSA public exponent must be 65537"));
    }
    Ok(())
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
    fn p256_spki_round_trip_and_fingerprint() {
        let id = Identity::generate(KeyType::P256);
        let der = id.public_key().to_spki_der();
        let parsed = PublicKey::from_spki_der_typed(KeyType::P256, &der).unwrap();
        assert_eq!(parsed, id.public_key());
        assert_eq!(parsed.fingerprint(), Fingerprint::of_spki(&der));
        assert_eq!(id.fingerprint(), parsed.fingerprint());
        assert!(PublicKey::from_spki_der_typed(KeyType::Rsa, &der).is_err());
    }

    #[test]
    fn rsa_spki_round_trip() {
        let id = rsa_identity();
        let der = id.public_key().to_spki_der();
        let parsed = PublicKey::from_spki_der_typed(KeyType::Rsa, &der).unwrap();
        assert_eq!(parsed, id.public_key());
        assert!(matches!(parsed, PublicKey::Rsa(ref k) if k.n().bits() == 3072));
    }

    #[test]
    fn refuses_odd_public_keys() {
        let mut rng = UnwrapErr(SysRng);
        let small = RsaPrivateKey::new(&mut rng, 1024).unwrap();
        let der = small.to_public_key().to_public_key_der().unwrap();
        assert!(matches!(
            PublicKey::from_spki_der(der.as_bytes()),
            Err(CryptoError::BadKey(_))
        ));
        let e3 = RsaPrivateKey::new_with_exp(&mut rng, 2048, 3u32.into()).unwrap();
        let der = e3.to_public_key().to_public_key_der().unwrap();
        assert!(matches!(
            PublicKey::from_spki_der(der.as_bytes()),
            Err(CryptoError::BadKey(_))
        ));
        let p256 = Identity::generate(KeyType::P256).public_key().to_spki_der();
        let mut trailing = p256.clone();
        trailing.push(0);
        for bad in [&b""[..], b"junk", &trailing, &p256[..p256.len() - 1]] {
            assert!(matches!(
                PublicKey::from_spki_der(bad),
                Err(CryptoError::BadKey(_))
            ));
        }
    }

    #[test]
    fn refuses_compressed_point_encoding() {
        let key = SigningKey::generate_from_rng(&mut UnwrapErr(SysRng));
        let compressed = key.verifying_key().to_sec1_point(true);
        let spki = pkcs8::SubjectPublicKeyInfoRef {
            algorithm: AlgorithmIdentifierRef {
                oid: EC_PUBLIC_KEY_OID,
                parameters: Some((&NistP256::OID).into()),
            },
            subject_public_key: pkcs8::der::asn1::BitStringRef::new(0, compressed.as_bytes())
                .unwrap(),
        };
        let der = pkcs8::der::Encode::to_der(&spki).unwrap();
        assert!(matches!(
            PublicKey::from_spki_der(&der),
            Err(CryptoError::BadKey(_))
        ));
    }

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
            assert!(err.to_string().contains("passphrase is needed"), "{err}");
        }
        assert!(matches!(
            Identity::from_pkcs8_pem("nope", None),
            Err(CryptoError::Pem(_))
        ));
    }

    #[test]
    fn pkcs8_der_parses_as_the_same_key() {
        let id = Identity::generate(KeyType::P256);
        let back = Identity::from_pkcs8_der(&id.pkcs8_der()).unwrap();
        assert_eq!(back.public_key(), id.public_key());
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
    }

    /// The high-S twin of a signature: (r, n − s).
    fn negate_s(sig: &[u8]) -> Vec<u8> {
        let sig = Signature::from_slice(sig).unwrap();
        let (r, s) = sig.split_scalars();
        Signature::from_scalars(r.to_bytes(), (-*s).to_bytes())
            .unwrap()
            .to_vec()
    }

    #[test]
    fn p256_signatures_are_low_s_and_their_twins_are_refused() {
        let id = Identity::generate(KeyType::P256);
        let pk = id.public_key();
        for i in 0..64u32 {
            let msg = i.to_be_bytes();
            let sig = id.sign(&msg);
            let parsed = Signature::from_slice(&sig).unwrap();
            assert!(!bool::from(parsed.s().is_high()), "signature {i} is high-S");
            pk.verify(&msg, &sig).unwrap();
            let twin = negate_s(&sig);
            assert_ne!(twin, sig);
            assert!(
                matches!(pk.verify(&msg, &twin), Err(CryptoError::BadSignature)),
                "the (r, n - s) twin of signature {i} was accepted"
            );
        }
    }

    #[test]
    fn p256_refuses_zero_out_of_range_and_misfit_encodings() {
        let id = Identity::generate(KeyType::P256);
        let pk = id.public_key();
        let sig = id.sign(b"m");
        let order = hex::decode("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551")
            .unwrap();
        let (r, s) = sig.split_at(32);
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("r = 0", [&[0u8; 32][..], s].concat()),
            ("s = 0", [r, &[0u8; 32][..]].concat()),
            ("r = n", [&order[..], s].concat()),
            ("s = n", [r, &order[..]].concat()),
            ("all ones", vec![0xff; 64]),
            ("empty", vec![]),
            ("63 bytes", sig[..63].to_vec()),
            ("65 bytes", [&sig[..], &[0]].concat()),
            ("leading zero", [&[0u8][..], &sig[..]].concat()),
            ("512 bytes", [&sig[..], &[0u8; 448][..]].concat()),
        ];
        for (what, bad) in cases {
            assert!(
                matches!(pk.verify(b"m", &bad), Err(CryptoError::BadSignature)),
                "{what} accepted"
            );
        }
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

    #[test]
    fn debug_shows_no_secret() {
        let id = Identity::from_p256_scalar_for_tests(&[7; 32]).unwrap();
        let shown = format!("{id:?}");
        assert!(shown.starts_with("Identity(p256, "), "{shown}");
        assert!(!shown.contains(&hex::encode([7u8; 32])));
    }
}
