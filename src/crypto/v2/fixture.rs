//! Test parties: an account with one device, its prekeys, and a stand-in
//! for the server's claim of one-time prekeys.

use super::{
    ClaimedPrekeys, DeviceCertificate, DeviceId, DeviceKey, DeviceList, Envelope, LocalDevice,
    Opened, PrekeyBundle, PrekeyKind, PrekeyStore, PublicPrekey, Session, VerifiedBundle,
    VerifiedDevice,
};
use crate::crypto::Identity;
use crate::domain::PhoneNumber;
use crate::protocol::KeyType;

pub(crate) const NOW: u64 = 1_700_000_000_000;

pub(crate) struct Party {
    pub(crate) account: Identity,
    pub(crate) device: LocalDevice,
    pub(crate) certificate: DeviceCertificate,
    pub(crate) list: DeviceList,
    pub(crate) store: PrekeyStore,
    /// What the server holds for claims.
    pub(crate) published: Vec<PublicPrekey>,
}

impl Party {
    pub(crate) fn new(phone: &str, device_id: u32) -> Self {
        let account = Identity::generate(KeyType::P256);
        Self::with_keys(phone, device_id, account, DeviceKey::generate())
    }

    pub(crate) fn with_keys(
        phone: &str,
        device_id: u32,
        account: Identity,
        key: DeviceKey,
    ) -> Self {
        let phone = PhoneNumber::from_canonical(phone).unwrap();
        let id = DeviceId::new(device_id).unwrap();
        let certificate =
            DeviceCertificate::issue(&account, &phone, id, &key.public(), "device", NOW).unwrap();
        let list = DeviceList::issue(&account, &phone, 1, NOW, vec![(id, key.public())]).unwrap();
        let mut store = PrekeyStore::new();
        let published = store.maintain(&key, NOW);
        Self {
            account,
            device: LocalDevice::new(phone, id, key),
            certificate,
            list,
            store,
            published,
        }
    }

    /// An independent copy (same keys, own state), for tests that need many
    /// fresh parties without paying for key generation each time.
    pub(crate) fn copy(&self) -> Self {
        Self {
            account: Identity::from_pkcs8_pem(&self.account.to_pkcs8_pem(None), None).unwrap(),
            device: LocalDevice::from_bytes(&self.device.to_bytes()).unwrap(),
            certificate: self.certificate.clone(),
            list: self.list.clone(),
            store: self.store.clone(),
            published: self.published.clone(),
        }
    }

    /// This device as a peer sees it after checking list and certificate.
    pub(crate) fn verified(&self) -> VerifiedDevice {
        self.list
            .clone()
            .verify(&self.account.public_key(), &self.device.phone)
            .unwrap()
            .certify(&self.certificate)
            .unwrap()
    }

    pub(crate) fn bundle(&self) -> PrekeyBundle {
        let (signed_prekey, kem_prekey) = self.store.current(self.device.key()).unwrap();
        PrekeyBundle {
            certificate: self.certificate.clone(),
            signed_prekey,
            kem_prekey,
        }
    }

    /// The server's side of a claim: hands out each one-time prekey once.
    pub(crate) fn claim(&mut self, one_time: bool) -> ClaimedPrekeys {
        let mut take = |kind| {
            let i = self.published.iter().position(|p| p.kind == kind)?;
            Some(self.published.remove(i))
        };
        ClaimedPrekeys {
            device_id: self.device.device_id,
            one_time: if one_time {
                take(PrekeyKind::OneTime)
            } else {
                None
            },
            kem_one_time: if one_time {
                take(PrekeyKind::KemOneTime)
            } else {
                None
            },
        }
    }

    /// The verified bundle a sender builds from lookup and claim.
    pub(crate) fn verified_bundle(&mut self, one_time: bool) -> VerifiedBundle {
        let list = self
            .list
            .clone()
            .verify(&self.account.public_key(), &self.device.phone)
            .unwrap();
        let claim = self.claim(one_time);
        self.bundle()
            .verify(&list, NOW)
            .unwrap()
            .with_claim(&claim)
            .unwrap()
    }

    /// Opens an envelope as a client would: by session, or set one up.
    pub(crate) fn receive(
        &mut self,
        sessions: &mut Vec<Session>,
        from: &VerifiedDevice,
        bytes: &[u8],
        now: u64,
    ) -> Result<Opened, super::Error> {
        let envelope = Envelope::parse(bytes)?;
        if let Some(s) = sessions
            .iter_mut()
            .find(|s| s.id() == envelope.session_id())
        {
            return s.open(&self.device, from, &envelope, now);
        }
        let (session, opened) =
            Session::accept(&self.device, &mut self.store, from, &envelope, now)?;
        sessions.push(session);
        Ok(opened)
    }
}
