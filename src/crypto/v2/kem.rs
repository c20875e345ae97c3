//! ML-KEM-768 (FIPS 203) for the post-quantum half of PQXDH. Encapsulation
//! keys travel as their 1184-byte FIPS 203 encoding and ciphertexts as 1088
//! bytes, as `@noble/post-quantum` and other implementations write them;
//! decapsulation keys are kept as their 64-byte seed `d ‖ z`.

use ml_kem::kem::{Decapsulate, KeyExport};
use ml_kem::{B32, DecapsulationKey, EncapsulationKey, MlKem768, Seed};
use rand::Rng;
use rand::rand_core::UnwrapErr;
use rand::rngs::SysRng;
use zeroize::Zeroizing;

use super::Error;
use super::ec::Secret32;

/// Length of an ML-KEM-768 encapsulation (public) key.
pub const KEM_PUBLIC_LEN: usize = 1184;
/// Length of an ML-KEM-768 ciphertext.
pub const KEM_CIPHERTEXT_LEN: usize = 1088;
/// Length of the seed a decapsulation key is made from.
pub const KEM_SEED_LEN: usize = 64;

/// A checked ML-KEM-768 encapsulation key, kept with its encoding.
#[derive(Clone, PartialEq, Eq)]
pub struct KemPublic {
    key: EncapsulationKey<MlKem768>,
    bytes: Box<[u8; KEM_PUBLIC_LEN]>,
}

impl KemPublic {
    /// Parses 1184 bytes, refusing keys whose coefficients are out of range
    /// (the FIPS 203 input check).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let fixed: &[u8; KEM_PUBLIC_LEN] = bytes
            .try_into()
            .map_err(|_| Error::BadKey("an ML-KEM-768 key is 1184 bytes"))?;
        let key = EncapsulationKey::new(&(*fixed).into())
            .map_err(|_| Error::BadKey("not a valid ML-KEM-768 key"))?;
        Ok(Self {
            key,
            bytes: Box::new(*fixed),
        })
    }

    pub fn as_bytes(&self) -> &[u8; KEM_PUBLIC_LEN] {
        &self.bytes
    }

    /// Encapsulates with a fresh 32-byte `m` from the OS generator.
    pub fn encapsulate(&self) -> (Box<[u8; KEM_CIPHERTEXT_LEN]>, Secret32) {
        let mut m = Zeroizing::new([0u8; 32]);
        UnwrapErr(SysRng).fill_bytes(m.as_mut());
        self.encapsulate_with(&m)
    }

    /// Encapsulation with its randomness given, for test vectors.
    pub(crate) fn encapsulate_with(
        &self,
        m: &[u8; 32],
    ) -> (Box<[u8; KEM_CIPHERTEXT_LEN]>, Secret32) {
        let (ct, shared) = self.key.encapsulate_deterministic(&B32::from(*m));
        let mut ct_bytes = Box::new([0u8; KEM_CIPHERTEXT_LEN]);
        ct_bytes.copy_from_slice(ct.as_slice());
        (ct_bytes, Zeroizing::new(shared.into()))
    }
}

impl std::fmt::Debug for KemPublic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KemPublic({}…)", hex::encode(&self.bytes[..8]))
    }
}

/// An ML-KEM-768 decapsulation key; wiped when dropped.
#[derive(Clone)]
pub struct KemSecret {
    key: DecapsulationKey<MlKem768>,
}

impl KemSecret {
    pub fn generate() -> Self {
        let mut seed = Zeroizing::new([0u8; KEM_SEED_LEN]);
        UnwrapErr(SysRng).fill_bytes(seed.as_mut());
        Self::from_seed(&seed)
    }

    /// The key FIPS 203 derives from `d ‖ z` (ML-KEM.KeyGen_internal).
    pub fn from_seed(seed: &[u8; KEM_SEED_LEN]) -> Self {
        Self {
            key: DecapsulationKey::from_seed(Seed::from(*seed)),
        }
    }

    pub fn to_seed(&self) -> Zeroizing<[u8; KEM_SEED_LEN]> {
        Zeroizing::new(self.key.to_bytes().into())
    }

    pub fn public(&self) -> KemPublic {
        let bytes: [u8; KEM_PUBLIC_LEN] = self.key.encapsulation_key().to_bytes().into();
        KemPublic {
            key: self.key.encapsulation_key().clone(),
            bytes: Box::new(bytes),
        }
    }

    /// Decapsulation never fails: a wrong ciphertext yields an unrelated
    /// secret (implicit rejection), which later fails authentication.
    pub fn decapsulate(&self, ciphertext: &[u8; KEM_CIPHERTEXT_LEN]) -> Secret32 {
        let ct = ml_kem::Ciphertext::<MlKem768>::from(*ciphertext);
        Zeroizing::new(self.key.decapsulate(&ct).into())
    }
}

impl std::fmt::Debug for KemSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KemSecret({:?})", self.public())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_encodings() {
        let secret = KemSecret::generate();
        let public = KemPublic::from_bytes(secret.public().as_bytes()).unwrap();
        let (ct, shared) = public.encapsulate();
        assert_eq!(*secret.decapsulate(&ct), *shared);
        let again = KemSecret::from_seed(&secret.to_seed());
        assert_eq!(again.public(), public);

        let mut wrong = *ct;
        wrong[0] ^= 1;
        assert_ne!(*secret.decapsulate(&wrong), *shared);
        assert!(KemPublic::from_bytes(&[0u8; 100]).is_err());
        assert!(KemPublic::from_bytes(&[0xffu8; KEM_PUBLIC_LEN]).is_err());
        assert!(!format!("{secret:?}").contains(&hex::encode(&secret.to_seed()[..16])));
    }
}
