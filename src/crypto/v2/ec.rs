//! P-256 below the account key: points in their 65-byte uncompressed form,
//! secrets that wipe themselves, ECDH as the 32-byte x-coordinate, and
//! ECDSA signatures that are always low-S when made and refused when high-S.
//!
//! Account keys stay what v1 made them ([`Identity`], SPKI DER, P-256 or
//! RSA); only the two functions at the bottom touch them, to sign and check
//! device certificates and lists with low-S signatures for P-256.

use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::elliptic_curve::Generate;
use p256::elliptic_curve::scalar::IsHigh;
use p256::elliptic_curve::sec1::ToSec1Point;
use rand::rand_core::UnwrapErr;
use rand::rngs::SysRng;
use zeroize::Zeroizing;

use super::Error;
use crate::crypto::{Identity, PublicKey};
use crate::domain::Fingerprint;

/// Length of an uncompressed SEC1 point: `04 ‖ x ‖ y`.
pub const POINT_LEN: usize = 65;
/// Length of an ECDSA P-256 signature as `r ‖ s`.
pub const SIGNATURE_LEN: usize = 64;
/// DER prefix of a P-256 SubjectPublicKeyInfo; the point follows.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// A 32-byte secret (chain, root and message keys, ECDH outputs).
pub type Secret32 = Zeroizing<[u8; 32]>;

/// A P-256 public key checked to be on the curve, kept with its encoding.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicPoint {
    key: p256::PublicKey,
    bytes: [u8; POINT_LEN],
}

impl PublicPoint {
    /// Parses exactly 65 bytes `04 ‖ x ‖ y` of a point on P-256. Compressed
    /// and other forms are refused so that each key has one encoding.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() != POINT_LEN || bytes[0] != 0x04 {
            return Err(Error::BadKey("a P-256 point is 65 bytes starting with 04"));
        }
        let key = p256::PublicKey::from_sec1_bytes(bytes)
            .map_err(|_| Error::BadKey("not a point on P-256"))?;
        Ok(Self::from_key(key))
    }

    fn from_key(key: p256::PublicKey) -> Self {
        let mut bytes = [0u8; POINT_LEN];
        bytes.copy_from_slice(key.to_sec1_point(false).as_bytes());
        Self { key, bytes }
    }

    pub fn as_bytes(&self) -> &[u8; POINT_LEN] {
        &self.bytes
    }

    /// SHA-256 of the key's SPKI DER, as for account keys, so one P-256 key
    /// has the same fingerprint whatever it is used for.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of_spki(&[&P256_SPKI_PREFIX[..], &self.bytes].concat())
    }

    /// Checks a 64-byte `r ‖ s` ECDSA-SHA256 signature, refusing high S.
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> Result<(), Error> {
        let sig = low_s_signature(sig)?;
        VerifyingKey::from(&self.key)
            .verify(msg, &sig)
            .map_err(|_| Error::BadSignature)
    }
}

impl std::fmt::Debug for PublicPoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicPoint({})", hex::encode(&self.bytes[1..9]))
    }
}

/// A P-256 private scalar used for ECDH only: prekeys, ephemeral and ratchet
/// keys. The scalar is wiped when dropped.
#[derive(Clone)]
pub struct EcSecret(p256::SecretKey);

impl EcSecret {
    /// A fresh key from the operating system's generator.
    pub fn generate() -> Self {
        Self(p256::SecretKey::generate_from_rng(&mut UnwrapErr(SysRng)))
    }

    /// Reads a 32-byte big-endian scalar in `1 ..= n-1`.
    pub fn from_bytes(scalar: &[u8]) -> Result<Self, Error> {
        p256::SecretKey::from_slice(scalar)
            .map(Self)
            .map_err(|_| Error::BadKey("scalar is zero or not below the group order"))
    }

    pub fn to_bytes(&self) -> Secret32 {
        Zeroizing::new(self.0.to_bytes().into())
    }

    pub fn public(&self) -> PublicPoint {
        PublicPoint::from_key(self.0.public_key())
    }

    /// ECDH: the x-coordinate of `self · peer`, 32 bytes, unhashed.
    pub fn dh(&self, peer: &PublicPoint) -> Secret32 {
        dh(self.0.to_nonzero_scalar(), peer)
    }
}

impl std::fmt::Debug for EcSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EcSecret({:?})", self.public())
    }
}

/// A device's identity key: it signs the device's prekeys, envelopes and
/// login proofs (ECDSA, low-S) and takes part in PQXDH (ECDH), as Signal's
/// identity key does. Certified by the account key.
#[derive(Clone)]
pub struct DeviceKey(SigningKey);

impl DeviceKey {
    pub fn generate() -> Self {
        Self(SigningKey::generate_from_rng(&mut UnwrapErr(SysRng)))
    }

    /// Reads a 32-byte big-endian scalar in `1 ..= n-1`.
    pub fn from_bytes(scalar: &[u8]) -> Result<Self, Error> {
        SigningKey::from_slice(scalar)
            .map(Self)
            .map_err(|_| Error::BadKey("scalar is zero or not below the group order"))
    }

    pub fn to_bytes(&self) -> Secret32 {
        Zeroizing::new(self.0.to_bytes().into())
    }

    pub fn public(&self) -> PublicPoint {
        PublicPoint::from_key(self.0.verifying_key().into())
    }

    /// ECDSA-SHA256 (RFC 6979, so deterministic), normalised to low S.
    pub fn sign(&self, msg: &[u8]) -> [u8; SIGNATURE_LEN] {
        let sig: Signature = self.0.sign(msg);
        sig.normalize_s().to_bytes().into()
    }

    pub fn dh(&self, peer: &PublicPoint) -> Secret32 {
        dh(*self.0.as_nonzero_scalar(), peer)
    }
}

impl std::fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeviceKey({:?})", self.public())
    }
}

fn dh(scalar: p256::NonZeroScalar, peer: &PublicPoint) -> Secret32 {
    let shared = p256::ecdh::diffie_hellman(scalar, peer.key.as_affine());
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(shared.raw_secret_bytes());
    out
}

/// Parses `r ‖ s` and refuses the high-S twin of a valid signature, so a
/// signature cannot be altered into a second valid one.
fn low_s_signature(sig: &[u8]) -> Result<Signature, Error> {
    let sig = Signature::from_slice(sig).map_err(|_| Error::BadSignature)?;
    if bool::from(sig.s().is_high()) {
        return Err(Error::BadSignature);
    }
    Ok(sig)
}

/// Signs with the account key: P-256 as low-S `r ‖ s`, RSA as RSA-PSS
/// (SHA-256, salt 32) exactly as v1 does.
pub(crate) fn account_sign(account: &Identity, msg: &[u8]) -> Vec<u8> {
    match account {
        Identity::P256(k) => {
            let sig: Signature = k.sign(msg);
            sig.normalize_s().to_vec()
        }
        Identity::Rsa(_) => account.sign(msg),
    }
}

/// Checks an account key's signature; P-256 signatures must be low-S.
pub(crate) fn account_verify(account: &PublicKey, msg: &[u8], sig: &[u8]) -> Result<(), Error> {
    if let PublicKey::P256(_) = account {
        low_s_signature(sig)?;
    }
    account.verify(msg, sig).map_err(|_| Error::BadSignature)
}

/// The high-S twin (r, n - s) of a signature, for tests of refusal.
#[cfg(test)]
pub(crate) fn flip_s(sig: &[u8]) -> Vec<u8> {
    let (r, s) = Signature::from_slice(sig).unwrap().split_scalars();
    Signature::from_scalars(r.to_bytes(), (-*s).to_bytes())
        .unwrap()
        .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::KeyType;

    #[test]
    fn points_have_one_encoding() {
        let key = EcSecret::generate().public();
        assert_eq!(PublicPoint::from_bytes(key.as_bytes()).unwrap(), key);
        let compressed = key.key.to_sec1_point(true);
        assert!(PublicPoint::from_bytes(compressed.as_bytes()).is_err());
        let mut off_curve = *key.as_bytes();
        off_curve[64] ^= 1;
        assert!(PublicPoint::from_bytes(&off_curve).is_err());
        assert!(PublicPoint::from_bytes(&[0u8; 65]).is_err());
        assert!(PublicPoint::from_bytes(&[0u8]).is_err());
    }

    #[test]
    fn device_signatures_are_low_s_and_high_s_is_refused() {
        let device = DeviceKey::generate();
        let public = device.public();
        for i in 0..32u8 {
            let msg = [i; 7];
            let sig = device.sign(&msg);
            let s = Signature::from_slice(&sig).unwrap().s();
            assert!(!bool::from(s.is_high()));
            public.verify(&msg, &sig).unwrap();
            assert!(matches!(
                public.verify(&msg, &flip_s(&sig)),
                Err(Error::BadSignature)
            ));
        }
        assert!(public.verify(b"x", &[0u8; 64]).is_err());
        assert!(public.verify(b"x", &[1u8; 63]).is_err());
    }

    #[test]
    fn account_signatures_are_low_s() {
        let account = Identity::generate(KeyType::P256);
        let key = account.public_key();
        for i in 0..32u8 {
            let sig = account_sign(&account, &[i]);
            account_verify(&key, &[i], &sig).unwrap();
            assert!(account_verify(&key, &[i], &flip_s(&sig)).is_err());
        }
    }

    #[test]
    fn ecdh_agrees_and_fingerprint_matches_spki() {
        let (a, b) = (DeviceKey::generate(), EcSecret::generate());
        assert_eq!(*a.dh(&b.public()), *b.dh(&a.public()));
        let id = Identity::from_p256_scalar_for_tests(&a.to_bytes()).unwrap();
        assert_eq!(a.public().fingerprint(), id.fingerprint());
        assert!(!format!("{a:?}{b:?}").contains(&hex::encode(*a.to_bytes())));
    }
}
