//! Public prekeys, signed by the device key, and the two shapes in which a
//! sender receives them: a device's bundle (certificate, signed prekey,
//! last-resort ML-KEM prekey) from `lookup`, and the one-time prekeys a
//! `claim` hands out once (docs/PROTOCOL.md §9.8, §10).

use super::codec::{Put, Reader};
use super::device::{DeviceCertificate, VerifiedDevice, VerifiedDeviceList};
use super::ec::{DeviceKey, POINT_LEN, PublicPoint, SIGNATURE_LEN};
use super::kem::{KEM_PUBLIC_LEN, KemPublic};
use super::prekey_store::{RETAIN_REPLACED_MS, ROTATE_AFTER_MS};
use super::{DeviceId, Error};

const PREKEY_LABEL: &[u8] = b"carrier-v2 prekey\0";
/// Longest encoded public prekey (an ML-KEM one); bounds bundle fields.
pub(crate) const MAX_PREKEY_BYTES: usize = 1 + 4 + 8 + 2 + KEM_PUBLIC_LEN + SIGNATURE_LEN;
/// Longest encoded certificate (RSA-4096 signature).
const MAX_CERTIFICATE_BYTES: usize = 1024;

/// What a prekey is for; part of the signed bytes, so one kind can never be
/// passed off as another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrekeyKind {
    /// P-256, rotated weekly; every session set-up uses one.
    Signed = 1,
    /// P-256, handed out once.
    OneTime = 2,
    /// ML-KEM-768, rotated weekly; used when no one-time ML-KEM key is left.
    KemLastResort = 3,
    /// ML-KEM-768, handed out once.
    KemOneTime = 4,
}

impl PrekeyKind {
    fn from_byte(b: u8) -> Result<Self, Error> {
        match b {
            1 => Ok(Self::Signed),
            2 => Ok(Self::OneTime),
            3 => Ok(Self::KemLastResort),
            4 => Ok(Self::KemOneTime),
            _ => Err(Error::Malformed("prekey kind")),
        }
    }

    fn is_kem(self) -> bool {
        matches!(self, Self::KemLastResort | Self::KemOneTime)
    }
}

/// The public half of a prekey.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PrekeyPublic {
    Ec(PublicPoint),
    Kem(KemPublic),
}

impl PrekeyPublic {
    fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Ec(p) => p.as_bytes(),
            Self::Kem(k) => k.as_bytes(),
        }
    }
}

/// A prekey as published: kind, id, creation time, key, and the device
/// key's signature over all of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicPrekey {
    pub kind: PrekeyKind,
    /// Unique among the device's prekeys of every kind.
    pub id: u32,
    pub created_at_ms: u64,
    pub key: PrekeyPublic,
    signature: [u8; SIGNATURE_LEN],
}

impl PublicPrekey {
    pub(crate) fn sign(
        device: &DeviceKey,
        kind: PrekeyKind,
        id: u32,
        created_at_ms: u64,
        key: PrekeyPublic,
    ) -> Self {
        let mut prekey = Self {
            kind,
            id,
            created_at_ms,
            key,
            signature: [0; SIGNATURE_LEN],
        };
        prekey.signature = device.sign(&prekey.statement());
        prekey
    }

    /// The signed bytes: label ‖ kind ‖ id ‖ created_at ‖ `u16` length ‖ key.
    pub fn statement(&self) -> Vec<u8> {
        let key = self.key.as_bytes();
        let mut out = Vec::with_capacity(PREKEY_LABEL.len() + 15 + key.len());
        out.put(PREKEY_LABEL);
        out.put_u8(self.kind as u8);
        out.put_u32(self.id);
        out.put_u64(self.created_at_ms);
        out.put_medium(key);
        out
    }

    /// On the wire the label is implied: kind ‖ id ‖ created_at ‖ `u16`
    /// length ‖ key ‖ 64-byte signature.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.statement().split_off(PREKEY_LABEL.len());
        out.put(&self.signature);
        out
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        let mut r = Reader::new(bytes);
        let kind = PrekeyKind::from_byte(r.u8("prekey kind")?)?;
        let id = r.u32("prekey id")?;
        let created_at_ms = r.u64("prekey time")?;
        let raw = r.medium(KEM_PUBLIC_LEN, "prekey key")?;
        let key = if kind.is_kem() {
            PrekeyPublic::Kem(KemPublic::from_bytes(raw)?)
        } else if raw.len() == POINT_LEN {
            PrekeyPublic::Ec(PublicPoint::from_bytes(raw)?)
        } else {
            return Err(Error::Malformed("prekey key"));
        };
        let signature = r.array("prekey signature")?;
        r.finish("prekey")?;
        if id == 0 {
            return Err(Error::Malformed("prekey id 0"));
        }
        Ok(Self {
            kind,
            id,
            created_at_ms,
            key,
            signature,
        })
    }

    /// Checks the device key's signature and that the kind is `expected`.
    pub fn verify(&self, device_key: &PublicPoint, expected: PrekeyKind) -> Result<(), Error> {
        if self.kind != expected {
            return Err(Error::Malformed("prekey of the wrong kind"));
        }
        device_key.verify(&self.statement(), &self.signature)
    }

    fn ec(&self) -> Result<(u32, PublicPoint), Error> {
        match &self.key {
            PrekeyPublic::Ec(p) => Ok((self.id, p.clone())),
            PrekeyPublic::Kem(_) => Err(Error::Malformed("prekey kind")),
        }
    }

    fn kem(&self) -> Result<(u32, KemPublic), Error> {
        match &self.key {
            PrekeyPublic::Kem(k) => Ok((self.id, k.clone())),
            PrekeyPublic::Ec(_) => Err(Error::Malformed("prekey kind")),
        }
    }
}

/// What `lookup` serves for each device: its certificate, its current
/// signed prekey and its current last-resort ML-KEM prekey.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrekeyBundle {
    pub certificate: DeviceCertificate,
    pub signed_prekey: PublicPrekey,
    pub kem_prekey: PublicPrekey,
}

impl PrekeyBundle {
    /// `u16` length ‖ certificate ‖ `u16` length ‖ signed prekey ‖ `u16`
    /// length ‖ last-resort ML-KEM prekey.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(2048);
        out.put_medium(&self.certificate.to_bytes());
        out.put_medium(&self.signed_prekey.to_bytes());
        out.put_medium(&self.kem_prekey.to_bytes());
        out
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        let mut r = Reader::new(bytes);
        let certificate =
            DeviceCertificate::parse(r.medium(MAX_CERTIFICATE_BYTES, "bundle certificate")?)?;
        let signed_prekey = PublicPrekey::parse(r.medium(MAX_PREKEY_BYTES, "bundle prekey")?)?;
        let kem_prekey = PublicPrekey::parse(r.medium(MAX_PREKEY_BYTES, "bundle kem prekey")?)?;
        r.finish("bundle")?;
        Ok(Self {
            certificate,
            signed_prekey,
            kem_prekey,
        })
    }

    /// Checks the certificate against the account's verified device list,
    /// both prekeys' signatures under the certified device key, and that
    /// neither is older than a device keeps it (so a server cannot serve a
    /// prekey whose secret may have leaked since its deletion).
    pub fn verify(&self, list: &VerifiedDeviceList, now_ms: u64) -> Result<VerifiedBundle, Error> {
        self.verify_prekeys(list.certify(&self.certificate)?, now_ms)
    }

    /// [`Self::verify`] past the certificate, for a `device` it certified:
    /// a caller that tells which device a refused bundle was for certifies
    /// first, and once.
    pub fn verify_prekeys(
        &self,
        device: VerifiedDevice,
        now_ms: u64,
    ) -> Result<VerifiedBundle, Error> {
        // Signatures first: a forged prekey must not pass as one out of date.
        self.signed_prekey.verify(&device.key, PrekeyKind::Signed)?;
        self.kem_prekey
            .verify(&device.key, PrekeyKind::KemLastResort)?;
        for prekey in [&self.signed_prekey, &self.kem_prekey] {
            if now_ms.saturating_sub(prekey.created_at_ms) > ROTATE_AFTER_MS + RETAIN_REPLACED_MS {
                return Err(Error::StalePrekey);
            }
        }
        Ok(VerifiedBundle {
            signed: self.signed_prekey.ec()?,
            kem: self.kem_prekey.kem()?,
            kem_one_time: false,
            one_time: None,
            device,
        })
    }
}

/// What a `claim` returns for one device: at most one one-time P-256
/// prekey and at most one one-time ML-KEM prekey, each handed out once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimedPrekeys {
    pub device_id: DeviceId,
    pub one_time: Option<PublicPrekey>,
    pub kem_one_time: Option<PublicPrekey>,
}

impl ClaimedPrekeys {
    /// `u32` device id ‖ `u16` length ‖ one-time prekey ‖ `u16` length ‖
    /// one-time ML-KEM prekey; a length of 0 means none was left.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1500);
        out.put_u32(self.device_id.get());
        for prekey in [&self.one_time, &self.kem_one_time] {
            out.put_medium(
                &prekey
                    .as_ref()
                    .map(PublicPrekey::to_bytes)
                    .unwrap_or_default(),
            );
        }
        out
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        let mut r = Reader::new(bytes);
        let device_id = DeviceId::new(r.u32("claim device id")?)?;
        let mut optional = |field| -> Result<Option<PublicPrekey>, Error> {
            match r.medium(MAX_PREKEY_BYTES, field)? {
                [] => Ok(None),
                raw => PublicPrekey::parse(raw).map(Some),
            }
        };
        let one_time = optional("claimed prekey")?;
        let kem_one_time = optional("claimed kem prekey")?;
        r.finish("claim")?;
        Ok(Self {
            device_id,
            one_time,
            kem_one_time,
        })
    }
}

/// A bundle whose every signature checked out: what a sender needs to set
/// up a session with one device.
#[derive(Clone, Debug)]
pub struct VerifiedBundle {
    pub device: VerifiedDevice,
    pub(crate) signed: (u32, PublicPoint),
    pub(crate) one_time: Option<(u32, PublicPoint)>,
    pub(crate) kem: (u32, KemPublic),
    pub(crate) kem_one_time: bool,
}

impl VerifiedBundle {
    /// Adds the one-time prekeys claimed for this device, checking their
    /// signatures; a one-time ML-KEM prekey replaces the last-resort one.
    pub fn with_claim(mut self, claim: &ClaimedPrekeys) -> Result<Self, Error> {
        if claim.device_id != self.device.device_id {
            return Err(Error::WrongSession);
        }
        if let Some(prekey) = &claim.one_time {
            prekey.verify(&self.device.key, PrekeyKind::OneTime)?;
            self.one_time = Some(prekey.ec()?);
        }
        if let Some(prekey) = &claim.kem_one_time {
            prekey.verify(&self.device.key, PrekeyKind::KemOneTime)?;
            self.kem = prekey.kem()?;
            self.kem_one_time = true;
        }
        Ok(self)
    }

    /// Whether the session will have a one-time P-256 prekey (DH4).
    pub fn has_one_time_prekey(&self) -> bool {
        self.one_time.is_some()
    }

    /// Whether the ML-KEM prekey is a one-time one.
    pub fn has_one_time_kem_prekey(&self) -> bool {
        self.kem_one_time
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Identity;
    use crate::crypto::v2::device::DeviceList;
    use crate::crypto::v2::ec::{EcSecret, flip_s};
    use crate::crypto::v2::kem::KemSecret;
    use crate::domain::PhoneNumber;
    use crate::protocol::KeyType;

    struct Fixture {
        list: VerifiedDeviceList,
        device: DeviceKey,
        bundle: PrekeyBundle,
    }

    fn fixture() -> Fixture {
        let account = Identity::generate(KeyType::P256);
        let phone = PhoneNumber::from_canonical("+12025550101").unwrap();
        let device = DeviceKey::generate();
        let id = DeviceId::new(1).unwrap();
        let certificate =
            DeviceCertificate::issue(&account, &phone, id, &device.public(), "phone", 5).unwrap();
        let list = DeviceList::issue(&account, &phone, 1, 5, vec![(id, device.public())])
            .unwrap()
            .verify(&account.public_key(), &phone)
            .unwrap();
        let spk = EcSecret::generate().public();
        let kem = KemSecret::generate().public();
        let bundle = PrekeyBundle {
            certificate,
            signed_prekey: PublicPrekey::sign(
                &device,
                PrekeyKind::Signed,
                1,
                5,
                PrekeyPublic::Ec(spk),
            ),
            kem_prekey: PublicPrekey::sign(
                &device,
                PrekeyKind::KemLastResort,
                2,
                5,
                PrekeyPublic::Kem(kem),
            ),
        };
        Fixture {
            list,
            device,
            bundle,
        }
    }

    #[test]
    fn bundle_and_claim_round_trip_and_verify() {
        let f = fixture();
        let parsed = PrekeyBundle::parse(&f.bundle.to_bytes()).unwrap();
        assert_eq!(parsed, f.bundle);
        let verified = parsed.verify(&f.list, 5).unwrap();
        let late = 5 + ROTATE_AFTER_MS + RETAIN_REPLACED_MS + 1;
        assert_eq!(
            parsed.verify(&f.list, late).unwrap_err(),
            Error::StalePrekey
        );
        assert!(!verified.has_one_time_prekey() && !verified.has_one_time_kem_prekey());

        let opk = EcSecret::generate().public();
        let claim = ClaimedPrekeys {
            device_id: DeviceId::new(1).unwrap(),
            one_time: Some(PublicPrekey::sign(
                &f.device,
                PrekeyKind::OneTime,
                3,
                5,
                PrekeyPublic::Ec(opk),
            )),
            kem_one_time: None,
        };
        let claim = ClaimedPrekeys::parse(&claim.to_bytes()).unwrap();
        let with = verified.with_claim(&claim).unwrap();
        assert!(with.has_one_time_prekey() && !with.has_one_time_kem_prekey());
    }

    #[test]
    fn refuses_swapped_kinds_forged_and_high_s_prekeys() {
        let f = fixture();
        let mut swapped = f.bundle.clone();
        std::mem::swap(&mut swapped.signed_prekey, &mut swapped.kem_prekey);
        assert!(swapped.verify(&f.list, 5).is_err());

        let mut high_s = f.bundle.clone();
        high_s.signed_prekey.signature =
            flip_s(&high_s.signed_prekey.signature).try_into().unwrap();
        assert_eq!(high_s.verify(&f.list, 5).unwrap_err(), Error::BadSignature);

        let mut other_key = f.bundle.clone();
        other_key.signed_prekey = PublicPrekey::parse(&f.bundle.signed_prekey.to_bytes()).unwrap();
        other_key.signed_prekey.key = PrekeyPublic::Ec(EcSecret::generate().public());
        assert_eq!(
            other_key.verify(&f.list, 5).unwrap_err(),
            Error::BadSignature
        );

        let bytes = f.bundle.to_bytes();
        for cut in (0..bytes.len()).step_by(37) {
            assert!(PrekeyBundle::parse(&bytes[..cut]).is_err());
        }
    }
}
