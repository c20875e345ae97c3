//! Device certificates and device lists: the two statements an account key
//! signs in v2 (docs/PROTOCOL.md §9.6, §9.7, §10.1). A certificate says "this key is
//! device N of this phone, named so, since then"; the list says which
//! devices are current, and its version only grows, so a server cannot
//! bring back a removed device by serving an older list.

use super::codec::{Put, Reader};
use super::ec::{PublicPoint, account_sign, account_verify};
use super::{DeviceId, Error};
use crate::crypto::{Identity, PublicKey};
use crate::domain::{Fingerprint, PhoneNumber};

const CERTIFICATE_LABEL: &[u8] = b"carrier-v2 device certificate\0";
const LIST_LABEL: &[u8] = b"carrier-v2 device list\0";
/// Longest device name, in bytes of UTF-8.
pub const MAX_DEVICE_NAME: usize = 64;
/// Most devices a list can name; servers set a lower limit (8 by default).
pub const MAX_LIST_DEVICES: usize = 32;
/// Longest account signature (RSA-4096).
const MAX_ACCOUNT_SIGNATURE: usize = 512;

/// An account key's statement about one device. Parsed or issued; its
/// signature is checked by [`VerifiedDeviceList::certify`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceCertificate {
    pub phone: PhoneNumber,
    /// Fingerprint of the account key that signs; must be the pinned one.
    pub account: Fingerprint,
    pub device_id: DeviceId,
    pub device_key: PublicPoint,
    /// Chosen by the user; shown to contacts when the device is added.
    pub name: String,
    pub created_at_ms: u64,
    signature: Vec<u8>,
}

impl DeviceCertificate {
    /// Signs a certificate with the account key (only a device holding the
    /// account key can add a device).
    pub fn issue(
        account: &Identity,
        phone: &PhoneNumber,
        device_id: DeviceId,
        device_key: &PublicPoint,
        name: &str,
        created_at_ms: u64,
    ) -> Result<Self, Error> {
        check_name(name)?;
        let mut cert = Self {
            phone: phone.clone(),
            account: account.fingerprint(),
            device_id,
            device_key: device_key.clone(),
            name: name.to_owned(),
            created_at_ms,
            signature: Vec::new(),
        };
        cert.signature = account_sign(account, &cert.statement());
        Ok(cert)
    }

    /// The signed bytes (docs/PROTOCOL.md §9.6).
    pub fn statement(&self) -> Vec<u8> {
        let mut out = head(CERTIFICATE_LABEL, &self.phone, &self.account);
        out.put_u32(self.device_id.get());
        out.put(self.device_key.as_bytes());
        out.put_short(self.name.as_bytes());
        out.put_u64(self.created_at_ms);
        out
    }

    /// Statement ‖ `u16` signature length ‖ signature.
    pub fn to_bytes(&self) -> Vec<u8> {
        with_signature(self.statement(), &self.signature)
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        let (mut r, phone, account) = read_head(bytes, CERTIFICATE_LABEL, "certificate label")?;
        let device_id = DeviceId::new(r.u32("certificate device id")?)?;
        let device_key = PublicPoint::from_bytes(r.take(65, "certificate device key")?)?;
        let name = std::str::from_utf8(r.short("certificate name")?)
            .map_err(|_| Error::Malformed("certificate name"))?
            .to_owned();
        check_name(&name)?;
        let created_at_ms = r.u64("certificate time")?;
        let signature = r
            .medium(MAX_ACCOUNT_SIGNATURE, "certificate signature")?
            .to_vec();
        r.finish("certificate")?;
        Ok(Self {
            phone,
            account,
            device_id,
            device_key,
            name,
            created_at_ms,
            signature,
        })
    }

    pub fn signature(&self) -> &[u8] {
        &self.signature
    }
}

/// The account's current devices, signed by the account key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceList {
    pub phone: PhoneNumber,
    pub account: Fingerprint,
    /// Grows with every new list; clients refuse a list older than one seen.
    pub version: u64,
    pub issued_at_ms: u64,
    /// Sorted by id, ids and keys unique, 1 ..= [`MAX_LIST_DEVICES`] entries.
    pub devices: Vec<(DeviceId, PublicPoint)>,
    signature: Vec<u8>,
}

impl DeviceList {
    /// Signs a list; `devices` is sorted here and checked for duplicates.
    pub fn issue(
        account: &Identity,
        phone: &PhoneNumber,
        version: u64,
        issued_at_ms: u64,
        mut devices: Vec<(DeviceId, PublicPoint)>,
    ) -> Result<Self, Error> {
        devices.sort_by_key(|(id, _)| *id);
        check_devices(&devices)?;
        let mut list = Self {
            phone: phone.clone(),
            account: account.fingerprint(),
            version,
            issued_at_ms,
            devices,
            signature: Vec::new(),
        };
        list.signature = account_sign(account, &list.statement());
        Ok(list)
    }

    /// The signed bytes (docs/PROTOCOL.md §9.7).
    pub fn statement(&self) -> Vec<u8> {
        let mut out = head(LIST_LABEL, &self.phone, &self.account);
        out.put_u64(self.version);
        out.put_u64(self.issued_at_ms);
        out.put_u8(self.devices.len() as u8);
        for (id, key) in &self.devices {
            out.put_u32(id.get());
            out.put(key.as_bytes());
        }
        out
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        with_signature(self.statement(), &self.signature)
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        let (mut r, phone, account) = read_head(bytes, LIST_LABEL, "device list label")?;
        let version = r.u64("device list version")?;
        let issued_at_ms = r.u64("device list time")?;
        let count = usize::from(r.u8("device count")?);
        let mut devices = Vec::with_capacity(count.min(MAX_LIST_DEVICES));
        for _ in 0..count.min(MAX_LIST_DEVICES + 1) {
            let id = DeviceId::new(r.u32("device id")?)?;
            devices.push((id, PublicPoint::from_bytes(r.take(65, "device key")?)?));
        }
        check_devices(&devices)?;
        let signature = r
            .medium(MAX_ACCOUNT_SIGNATURE, "device list signature")?
            .to_vec();
        r.finish("device list")?;
        Ok(Self {
            phone,
            account,
            version,
            issued_at_ms,
            devices,
            signature,
        })
    }

    /// Checks the list against the account key pinned for `phone`. Rollback
    /// is the caller's check: refuse a `version` lower than one already seen.
    pub fn verify(
        self,
        account_key: &PublicKey,
        phone: &PhoneNumber,
    ) -> Result<VerifiedDeviceList, Error> {
        if &self.phone != phone || self.account != account_key.fingerprint() {
            return Err(Error::NotCertified("device list is for another account"));
        }
        account_verify(account_key, &self.statement(), &self.signature)?;
        Ok(VerifiedDeviceList {
            list: self,
            account_key: account_key.clone(),
        })
    }
}

/// A device list whose signature checked out under the pinned account key.
#[derive(Clone, Debug)]
pub struct VerifiedDeviceList {
    list: DeviceList,
    account_key: PublicKey,
}

impl VerifiedDeviceList {
    pub fn list(&self) -> &DeviceList {
        &self.list
    }

    pub fn version(&self) -> u64 {
        self.list.version
    }

    /// Checks a certificate against this list: same phone and account, a
    /// good account signature, and the device id and key both in the list.
    pub fn certify(&self, cert: &DeviceCertificate) -> Result<VerifiedDevice, Error> {
        if cert.phone != self.list.phone || cert.account != self.list.account {
            return Err(Error::NotCertified("certificate is for another account"));
        }
        account_verify(&self.account_key, &cert.statement(), &cert.signature)?;
        let listed = self
            .list
            .devices
            .iter()
            .any(|(id, key)| *id == cert.device_id && *key == cert.device_key);
        if !listed {
            return Err(Error::NotCertified("device is not in the current list"));
        }
        Ok(VerifiedDevice {
            phone: cert.phone.clone(),
            device_id: cert.device_id,
            key: cert.device_key.clone(),
            name: cert.name.clone(),
            created_at_ms: cert.created_at_ms,
        })
    }
}

/// A peer device whose key chains to a pinned account key through a
/// certificate and the current device list. Only [`VerifiedDeviceList::certify`]
/// makes one, so holding one means the chain was checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedDevice {
    pub phone: PhoneNumber,
    pub device_id: DeviceId,
    pub key: PublicPoint,
    pub name: String,
    pub created_at_ms: u64,
}

impl VerifiedDevice {
    /// Rebuilds a device the client checked earlier and stored. Only for
    /// values read back from the client's own database.
    pub fn from_trusted_storage(
        phone: PhoneNumber,
        device_id: DeviceId,
        key: PublicPoint,
        name: String,
        created_at_ms: u64,
    ) -> Self {
        Self {
            phone,
            device_id,
            key,
            name,
            created_at_ms,
        }
    }
}

/// What both account statements start with: label ‖ phone ‖ account
/// fingerprint.
fn head(label: &[u8], phone: &PhoneNumber, account: &Fingerprint) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.put(label);
    out.put_phone(phone);
    out.put(account.as_bytes());
    out
}

fn read_head<'a>(
    bytes: &'a [u8],
    label: &[u8],
    what: &'static str,
) -> Result<(Reader<'a>, PhoneNumber, Fingerprint), Error> {
    let mut r = Reader::new(bytes);
    if r.take(label.len(), what)? != label {
        return Err(Error::Malformed(what));
    }
    let phone = r.phone("statement phone")?;
    let account = r.fingerprint("statement account")?;
    Ok((r, phone, account))
}

fn with_signature(mut statement: Vec<u8>, signature: &[u8]) -> Vec<u8> {
    statement.put_medium(signature);
    statement
}

/// A name is 1 ..= 64 bytes of UTF-8 without control characters, so it can
/// be printed on a terminal as it is.
fn check_name(name: &str) -> Result<(), Error> {
    if name.is_empty() || name.len() > MAX_DEVICE_NAME || name.chars().any(char::is_control) {
        return Err(Error::Malformed(
            "device name must be 1 to 64 bytes without control characters",
        ));
    }
    Ok(())
}

fn check_devices(devices: &[(DeviceId, PublicPoint)]) -> Result<(), Error> {
    if devices.is_empty() || devices.len() > MAX_LIST_DEVICES {
        return Err(Error::Malformed("device list must name 1 to 32 devices"));
    }
    let ascending = devices.windows(2).all(|w| w[0].0 < w[1].0);
    let mut keys: Vec<_> = devices.iter().map(|(_, k)| k.as_bytes()).collect();
    keys.sort();
    keys.dedup();
    if !ascending || keys.len() != devices.len() {
        return Err(Error::Malformed(
            "device list ids must ascend and ids and keys be unique",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::test_keys::rsa_2048;
    use crate::crypto::v2::ec::{DeviceKey, flip_s};
    use crate::protocol::KeyType;

    fn phone() -> PhoneNumber {
        PhoneNumber::from_canonical("+12025550101").unwrap()
    }

    fn id(n: u32) -> DeviceId {
        DeviceId::new(n).unwrap()
    }

    #[test]
    fn certificate_round_trip_and_chain() {
        for account in [&Identity::generate(KeyType::P256), rsa_2048()] {
            let key = DeviceKey::generate().public();
            let cert =
                DeviceCertificate::issue(account, &phone(), id(1), &key, "laptop", 7).unwrap();
            let parsed = DeviceCertificate::parse(&cert.to_bytes()).unwrap();
            assert_eq!(parsed, cert);
            let list =
                DeviceList::issue(account, &phone(), 1, 8, vec![(id(1), key.clone())]).unwrap();
            let list = DeviceList::parse(&list.to_bytes()).unwrap();
            let verified = list.verify(&account.public_key(), &phone()).unwrap();
            let device = verified.certify(&parsed).unwrap();
            assert_eq!((device.device_id, device.key), (id(1), key));
        }
    }

    #[test]
    fn refuses_wrong_account_high_s_and_unlisted_devices() {
        let account = Identity::generate(KeyType::P256);
        let other = Identity::generate(KeyType::P256);
        let (k1, k2) = (
            DeviceKey::generate().public(),
            DeviceKey::generate().public(),
        );
        let cert = DeviceCertificate::issue(&account, &phone(), id(2), &k2, "phone", 1).unwrap();
        let list = DeviceList::issue(&account, &phone(), 3, 1, vec![(id(1), k1.clone())]).unwrap();
        assert!(list.clone().verify(&other.public_key(), &phone()).is_err());
        let elsewhere = PhoneNumber::from_canonical("+12025550102").unwrap();
        assert!(
            list.clone()
                .verify(&account.public_key(), &elsewhere)
                .is_err()
        );
        let verified = list
            .clone()
            .verify(&account.public_key(), &phone())
            .unwrap();
        assert!(matches!(
            verified.certify(&cert),
            Err(Error::NotCertified(_))
        ));

        let mut flipped = list.clone();
        flipped.signature = flip_s(&list.signature);
        assert!(matches!(
            flipped.verify(&account.public_key(), &phone()),
            Err(Error::BadSignature)
        ));
        let forged = DeviceCertificate::issue(&other, &phone(), id(1), &k1, "phone", 1).unwrap();
        assert!(verified.certify(&forged).is_err());
        let mut renamed = DeviceCertificate::issue(&account, &phone(), id(1), &k1, "a", 1).unwrap();
        renamed.name = "b".into();
        assert!(matches!(
            verified.certify(&renamed),
            Err(Error::BadSignature)
        ));
    }

    #[test]
    fn refuses_malformed_lists_and_names() {
        let account = Identity::generate(KeyType::P256);
        let k = DeviceKey::generate().public();
        assert!(DeviceList::issue(&account, &phone(), 1, 1, vec![]).is_err());
        let dup = vec![(id(1), k.clone()), (id(2), k.clone())];
        assert!(DeviceList::issue(&account, &phone(), 1, 1, dup).is_err());
        for name in ["", "tab\there", &"x".repeat(65)] {
            assert!(DeviceCertificate::issue(&account, &phone(), id(1), &k, name, 1).is_err());
        }
        let bytes = DeviceList::issue(&account, &phone(), 1, 1, vec![(id(1), k)])
            .unwrap()
            .to_bytes();
        for cut in 0..bytes.len() {
            assert!(DeviceList::parse(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(DeviceList::parse(&longer).is_err());
    }
}
