//! Peers' public keys: parsed against Carrier's key policy (one
//! canonical form per key, no weak or odd RSA), and their signatures checked.

use p256::NistP256;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::elliptic_curve::scalar::IsHigh;
use pkcs8::spki::{AlgorithmIdentifierRef, EncodePublicKey};
use pkcs8::{AssociatedOid, ObjectIdentifier, SubjectPublicKeyInfoRef};
use rsa::traits::PublicKeyParts;
use rsa::{Pss, RsaPublicKey};
use sha2::{Digest, Sha256};

use crate::crypto::CryptoError;
use crate::domain::Fingerprint;
use crate::protocol::KeyType;

/// `id-ecPublicKey` (RFC 5480): the algorithm of every EC key, P-256 or not.
const EC_PUBLIC_KEY_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
/// `rsaEncryption` (RFC 8017); the PSS-only OID is refused to keep one form per key.
const RSA_ENCRYPTION_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
/// RSA moduli accepted from peers: weaker is breakable, larger is a cheap DoS.
const RSA_ACCEPTED_BITS: std::ops::RangeInclusive<u32> = 2048..=4096;
/// The only RSA public exponent accepted (F4), so odd keys cannot slip in.
const RSA_EXPONENT: [u8; 3] = [0x01, 0x00, 0x01];
/// RSA-PSS salt length, fixed so verification is strict rather than lenient.
const PSS_SALT_LEN: usize = 32;

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

pub(super) fn pss() -> Pss<Sha256> {
    Pss::new_with_salt(PSS_SALT_LEN)
}

pub(super) fn bad_key(why: &str) -> CryptoError {
    CryptoError::BadKey(why.to_owned())
}

pub(super) fn key_type_of(algorithm: &AlgorithmIdentifierRef<'_>) -> Option<KeyType> {
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

pub(super) fn check_rsa_policy(key: &RsaPublicKey) -> Result<(), CryptoError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Identity;
    use crate::crypto::test_keys::rsa_3072 as rsa_identity;
    use p256::ecdsa::SigningKey;
    use p256::elliptic_curve::Generate;
    use rand::rand_core::UnwrapErr;
    use rand::rngs::SysRng;
    use rsa::RsaPrivateKey;

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
}
