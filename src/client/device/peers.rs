//! Contacts' devices, checked the only way docs/PROTOCOL.md §10.1
//! allows: the list signed by the pinned account key and no older than one
//! accepted before, each certificate signed by that key and listed, each
//! bundle's prekeys signed by the certified device key. What passes is
//! remembered (`peer_devices`), so an envelope's sender is found without
//! asking the server each time. A device added under the pinned key is no
//! key change: it is accepted, and noted for `fetch` to tell once.

use super::now_ms;
use super::store::{self, PeerDeviceRow};
use crate::client::{ClientError, Session};
use crate::crypto::PublicKey;
use crate::crypto::v2::{
    self, DeviceId, DeviceList, PrekeyBundle, PublicPoint, VerifiedBundle, VerifiedDevice,
    VerifiedDeviceList,
};
use crate::domain::{Fingerprint, PhoneNumber};
use crate::protocol::CurrentDevices;

/// An account's devices as checked now.
pub(in crate::client) struct Checked {
    pub phone: PhoneNumber,
    /// The account key the list was checked against, and its fingerprint.
    pub key: PublicKey,
    pub fingerprint: Fingerprint,
    pub version: u64,
    /// The devices to write to. From a lookup, those whose bundles checked
    /// out: a device whose bundle is refused or missing gets nothing, also
    /// when a session with it exists. From memory (`remembered_own`), the
    /// devices with a session.
    pub devices: Vec<u32>,
    /// The bundles that checked out, for new sessions.
    pub bundles: Vec<VerifiedBundle>,
    /// The bundles that did not.
    pub refused: Vec<RefusedBundle>,
}

/// A bundle that did not check out: the device it is for, when its
/// certificate did check out (a server could write any id into one that
/// does not), and why. What the user is told of a device left out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(in crate::client) struct RefusedBundle {
    pub device: Option<u32>,
    pub reason: v2::Error,
}

/// Checks one bundle of a verified list. A refusal names the device only
/// once the certificate checked out: a server could write any id into one
/// that does not.
fn check_bundle(
    bytes: &[u8],
    list: &VerifiedDeviceList,
    now: u64,
) -> Result<VerifiedBundle, RefusedBundle> {
    let uncertified = |reason| RefusedBundle {
        device: None,
        reason,
    };
    let bundle = PrekeyBundle::parse(bytes).map_err(uncertified)?;
    let device = list.certify(&bundle.certificate).map_err(uncertified)?;
    let id = device.device_id.get();
    bundle
        .verify_prekeys(device, now)
        .map_err(|reason| RefusedBundle {
            device: Some(id),
            reason,
        })
}

impl Session<'_> {
    /// Looks `phone` up and checks its devices: against the pinned key (or
    /// pins it on first contact, or refuses a changed one), or against this
    /// account's own key for `me`.
    pub(in crate::client) async fn devices_of(
        &self,
        phone: &PhoneNumber,
    ) -> Result<Checked, ClientError> {
        let (key, info) = if phone == &self.me {
            (self.identity.public_key(), self.lookup(phone).await?)
        } else {
            let (key, _, info) = self.contacts().current_info(phone).await?;
            (key, info)
        };
        let Some(devices) = info.devices else {
            return Err(ClientError::NoDevicesYet {
                phone: phone.to_string(),
            });
        };
        self.check_devices(phone, &key, &devices).await
    }

    /// Checks a device list and bundles (from `lookup` or a
    /// `stale_devices` refusal) and remembers what passed.
    pub(in crate::client) async fn check_devices(
        &self,
        phone: &PhoneNumber,
        key: &PublicKey,
        current: &CurrentDevices,
    ) -> Result<Checked, ClientError> {
        let fingerprint = key.fingerprint();
        let list = DeviceList::parse(&current.device_list.0)?
            .verify(key, phone)
            .map_err(|e| {
                ClientError::Forged(format!("the device list of {phone} is refused: {e}"))
            })?;
        let pool = self.client.home.pool();
        if let Some(seen) = store::list_version(pool, phone.as_str(), &fingerprint.to_hex()).await?
            && list.version() < seen
        {
            return Err(ClientError::Forged(format!(
                "the server gave version {} of the device list of {phone}, older than version \
                 {seen} seen before: a removed device may be coming back; nothing was sent",
                list.version()
            )));
        }
        let now = now_ms(&self.client.clock);
        let mut bundles = Vec::new();
        let mut refused = Vec::new();
        for b in &current.bundles {
            match check_bundle(&b.0, &list, now) {
                Ok(b) => bundles.push(b),
                Err(r) => refused.push(r),
            }
        }
        let rows: Vec<PeerDeviceRow> = bundles
            .iter()
            .map(|b| PeerDeviceRow {
                device_id: b.device.device_id.get() as i64,
                account_fingerprint: fingerprint.to_hex(),
                device_key: b.device.key.as_bytes().to_vec(),
                name: b.device.name.clone(),
                created_at: b.device.created_at_ms as i64,
            })
            .collect();
        let mut tx = crate::client::home::write_tx(pool).await?;
        store::replace_peer_devices(
            &mut tx,
            phone.as_str(),
            &fingerprint.to_hex(),
            list.version(),
            &rows,
            phone != &self.me,
        )
        .await?;
        tx.commit().await?;
        if phone == &self.me
            && let Some(highest) = list.list().devices.iter().map(|(id, _)| id.get()).max()
        {
            store::note_device_id(pool, highest).await?;
        }
        Ok(Checked {
            phone: phone.clone(),
            key: key.clone(),
            fingerprint,
            version: list.version(),
            devices: bundles.iter().map(|b| b.device.device_id.get()).collect(),
            bundles,
            refused,
        })
    }

    /// This account's other devices as remembered, without a `lookup`,
    /// when there are some and each has a session to send in: sync copies
    /// then go out under the remembered list version, and a list changed
    /// since (by another device) comes back as `stale_devices`. With no
    /// other device remembered there would be nothing to send and so no
    /// such answer: `None`, and the caller looks the account up.
    pub(in crate::client) async fn remembered_own(
        &self,
        own: DeviceId,
    ) -> Result<Option<Checked>, ClientError> {
        let pool = self.client.home.pool();
        let key = self.identity.public_key();
        let fingerprint = key.fingerprint();
        let me = self.me.as_str();
        let Some(version) = store::list_version(pool, me, &fingerprint.to_hex()).await? else {
            return Ok(None);
        };
        let mut devices = store::peer_device_ids(pool, me).await?;
        devices.retain(|d| *d != own.get());
        if devices.is_empty() {
            return Ok(None);
        }
        for &d in &devices {
            if store::sending_session(pool, me, d).await?.is_none() {
                return Ok(None);
            }
        }
        Ok(Some(Checked {
            phone: self.me.clone(),
            key,
            fingerprint,
            version,
            devices,
            bundles: Vec::new(),
            refused: Vec::new(),
        }))
    }

    /// Device `id` of `phone`, checked: from what this home remembers under
    /// the key pinned now, else from a fresh `lookup`. `None` when the
    /// account does not list it (never, or removed).
    pub(in crate::client) async fn peer_device(
        &self,
        phone: &PhoneNumber,
        id: DeviceId,
    ) -> Result<Option<(VerifiedDevice, Fingerprint)>, ClientError> {
        let pinned = if phone == &self.me {
            Some(self.identity.fingerprint())
        } else {
            self.contacts().pinned(phone).await?.map(|(_, fp)| fp)
        };
        let pool = self.client.home.pool();
        let remembered = store::peer_device(pool, phone.as_str(), id.get()).await?;
        let row = match (remembered, pinned) {
            (Some(row), Some(fp)) if row.account_fingerprint == fp.to_hex() => Some(row),
            _ => {
                self.devices_of(phone).await?;
                store::peer_device(pool, phone.as_str(), id.get()).await?
            }
        };
        let Some(row) = row else {
            return Ok(None);
        };
        let fp = Fingerprint::parse(&row.account_fingerprint)
            .ok_or_else(|| ClientError::Protocol("a stored fingerprint is damaged".into()))?;
        let device = VerifiedDevice::from_trusted_storage(
            phone.clone(),
            id,
            PublicPoint::from_bytes(&row.device_key)?,
            row.name,
            row.created_at as u64,
        );
        Ok(Some((device, fp)))
    }
}
