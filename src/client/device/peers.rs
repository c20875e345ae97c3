//! Contacts' devices, checked the only way docs/PROTOCOL.md §10.1
//! allows: the list signed by the pinned account key and no older than one
//! accepted before, each certificate signed by that key and listed, each
//! bundle's prekeys signed by the certified device key. Every device the
//! checked list names is remembered (`peer_devices`) with the key the list
//! gives, whatever became of its bundle: who a device is does not depend on
//! its prekeys, so a server that forges or withholds a bundle can neither
//! have that device's messages dropped nor make it look new again later.
//! Only bundles that check out are written to; every other listed device
//! is left out of a send, with why (`Unserved`). A device added under the
//! pinned key is no key change: it is accepted, and noted for `fetch` to
//! tell once.

use super::now_ms;
use super::store::{self, PeerDeviceRow};
use crate::client::{ClientError, LeftOut, Session};
use crate::crypto::PublicKey;
use crate::crypto::v2::{
    self, DeviceId, DeviceList, PrekeyBundle, PublicPoint, VerifiedBundle, VerifiedDevice,
    VerifiedDeviceList,
};
use crate::domain::{Fingerprint, PhoneNumber};
use crate::protocol::{B64, CurrentDevices};

/// An account's devices as checked now.
pub(in crate::client) struct Checked {
    pub phone: PhoneNumber,
    /// The account key the list was checked against, and its fingerprint.
    pub key: PublicKey,
    pub fingerprint: Fingerprint,
    pub version: u64,
    /// The devices to write to, each once. From a lookup, those whose
    /// bundles checked out: a device whose bundle is refused or missing
    /// gets nothing, also when a session with it exists. From memory
    /// (`remembered_own`), the devices with a session.
    pub devices: Vec<u32>,
    /// The bundles that checked out, at most one per device, for new
    /// sessions.
    pub bundles: Vec<VerifiedBundle>,
    /// The rest: each bundle that did not check out, and each listed
    /// device that came with no bundle whose certificate did.
    pub unserved: Vec<Unserved>,
}

/// A device of a lookup answer that gets nothing, and why: its bundle did
/// not check out, or it came with none. `device` is its id, unknown for a
/// bundle whose certificate did not check out (a server could write any
/// id into one). What the user is told of a device left out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(in crate::client) struct Unserved {
    pub device: Option<u32>,
    pub why: LeftOut,
}

impl Unserved {
    fn refused(device: Option<u32>, reason: v2::Error) -> Self {
        Self {
            device,
            why: LeftOut::Refused(reason),
        }
    }
}

/// The bundles of one answer, checked against its list.
#[derive(Default)]
struct Offered {
    /// The first bundle of each device that checked out, and no other: a
    /// server may offer several for one device, and a device sealed for
    /// twice would be sent the message twice under one id.
    bundles: Vec<VerifiedBundle>,
    /// Those refused, in the order offered, then each listed device with
    /// no bundle whose certificate checked out.
    unserved: Vec<Unserved>,
    /// The devices whose certificate checked out, prekeys or not: the
    /// first certificate of each.
    certified: Vec<VerifiedDevice>,
}

/// Checks each offered bundle against a verified list, and notes the
/// listed devices none was offered for.
fn check_bundles(offered: &[B64], list: &VerifiedDeviceList, now: u64) -> Offered {
    let mut out = Offered::default();
    for bytes in offered {
        let (device, prekeys) = match certify_bundle(&bytes.0, list, now) {
            Ok(checked) => checked,
            Err(reason) => {
                out.unserved.push(Unserved::refused(None, reason));
                continue;
            }
        };
        let id = device.device_id;
        if out.bundles.iter().any(|b| b.device.device_id == id) {
            continue;
        }
        if !out.certified.iter().any(|d| d.device_id == id) {
            out.certified.push(device);
        }
        match prekeys {
            Ok(bundle) => out.bundles.push(bundle),
            Err(reason) => out.unserved.push(Unserved::refused(Some(id.get()), reason)),
        }
    }
    let keyless = without_keys(list, &out.certified);
    out.unserved.extend(keyless);
    out
}

/// The listed devices with no certified bundle: a server leaves a device
/// out of `lookup` until it has published a signed prekey and a last-resort
/// ML-KEM key (docs/PROTOCOL.md §5.2). Told by number, which the signed
/// list vouches for.
fn without_keys(list: &VerifiedDeviceList, certified: &[VerifiedDevice]) -> Vec<Unserved> {
    (list.list().devices.iter())
        .filter(|(id, _)| !certified.iter().any(|d| d.device_id == *id))
        .map(|(id, _)| Unserved {
            device: Some(id.get()),
            why: LeftOut::NoKeys,
        })
        .collect()
}

/// Checks one bundle: `Err` when its certificate does not check out (a
/// server could write any id into such a one), else the device it
/// certifies and what became of its prekeys.
fn certify_bundle(
    bytes: &[u8],
    list: &VerifiedDeviceList,
    now: u64,
) -> Result<(VerifiedDevice, Result<VerifiedBundle, v2::Error>), v2::Error> {
    let bundle = PrekeyBundle::parse(bytes)?;
    let device = list.certify(&bundle.certificate)?;
    let prekeys = bundle.verify_prekeys(device.clone(), now);
    Ok((device, prekeys))
}

/// What is remembered of a checked list: every device it names, with the
/// key the list gives, and the name and time of a certificate that checked
/// out (empty and 0 until one has; kept from before by the store).
fn remembered(
    list: &VerifiedDeviceList,
    certified: &[VerifiedDevice],
    fingerprint: &Fingerprint,
) -> Vec<PeerDeviceRow> {
    list.list()
        .devices
        .iter()
        .map(|(id, key)| {
            let cert = certified.iter().find(|d| d.device_id == *id);
            PeerDeviceRow {
                device_id: i64::from(id.get()),
                account_fingerprint: fingerprint.to_hex(),
                device_key: key.as_bytes().to_vec(),
                name: cert.map(|d| d.name.clone()).unwrap_or_default(),
                created_at: cert.map_or(0, |d| d.created_at_ms as i64),
            }
        })
        .collect()
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
    /// `stale_devices` refusal) and remembers the devices the list names.
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
                 {seen} seen before: a removed device may be coming back",
                list.version()
            )));
        }
        let offered = check_bundles(&current.bundles, &list, now_ms(&self.client.clock));
        let rows = remembered(&list, &offered.certified, &fingerprint);
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
            devices: (offered.bundles.iter())
                .map(|b| b.device.device_id.get())
                .collect(),
            bundles: offered.bundles,
            unserved: offered.unserved,
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
            unserved: Vec::new(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Identity;
    use crate::crypto::v2::{DeviceCertificate, DeviceKey, PrekeyStore};
    use crate::protocol::KeyType;

    const NOW: u64 = 1_700_000_000_000;
    const DAY: u64 = 24 * 3600 * 1000;

    /// An account whose list names devices 1 ..= `n`, each certified as
    /// `device N`.
    struct Account {
        list: VerifiedDeviceList,
        devices: Vec<(DeviceKey, DeviceCertificate)>,
    }

    fn account(n: u32) -> Account {
        let identity = Identity::generate(KeyType::P256);
        let phone = PhoneNumber::parse("+12025550102").unwrap();
        let devices: Vec<(DeviceKey, DeviceCertificate)> = (1..=n)
            .map(|i| {
                let key = DeviceKey::generate();
                let id = DeviceId::new(i).unwrap();
                let name = format!("device {i}");
                let cert =
                    DeviceCertificate::issue(&identity, &phone, id, &key.public(), &name, NOW)
                        .unwrap();
                (key, cert)
            })
            .collect();
        let listed = devices
            .iter()
            .map(|(key, cert)| (cert.device_id, key.public()))
            .collect();
        let list = DeviceList::issue(&identity, &phone, 1, NOW, listed)
            .unwrap()
            .verify(&identity.public_key(), &phone)
            .unwrap();
        Account { list, devices }
    }

    /// A bundle of `cert` with prekeys made at `made_at` and signed by
    /// `signer` (the certified key, or another for a forgery).
    fn bundle(cert: &DeviceCertificate, signer: &DeviceKey, made_at: u64) -> B64 {
        let mut store = PrekeyStore::new();
        store.maintain(signer, made_at);
        let (signed_prekey, kem_prekey) = store.current(signer).unwrap();
        let bundle = PrekeyBundle {
            certificate: cert.clone(),
            signed_prekey,
            kem_prekey,
        };
        B64(bundle.to_bytes())
    }

    fn ids(bundles: &[VerifiedBundle]) -> Vec<u32> {
        bundles.iter().map(|b| b.device.device_id.get()).collect()
    }

    #[test]
    fn a_device_is_written_to_once_however_many_bundles_it_has() {
        let a = account(2);
        let ((k1, c1), (k2, c2)) = (&a.devices[0], &a.devices[1]);
        let first = bundle(c1, k1, NOW);
        let offered = [
            first.clone(),
            bundle(c1, k1, NOW - DAY),
            bundle(c2, k2, NOW),
        ];
        let checked = check_bundles(&offered, &a.list, NOW);
        assert_eq!(ids(&checked.bundles), [1, 2]);
        assert!(checked.unserved.is_empty(), "{:?}", checked.unserved);
        let used = checked.bundles[0].signed.0;
        let expected = PrekeyBundle::parse(&first.0).unwrap().signed_prekey.id;
        assert_eq!(used, expected, "the first that checked out");

        // One out of date, then one that checks out: the second is used.
        // Device 2 has none.
        let offered = [bundle(c1, k1, NOW - 40 * DAY), first];
        let checked = check_bundles(&offered, &a.list, NOW);
        assert_eq!(ids(&checked.bundles), [1]);
        assert_eq!(
            checked.unserved,
            [
                Unserved::refused(Some(1), v2::Error::StalePrekey),
                Unserved {
                    device: Some(2),
                    why: LeftOut::NoKeys
                }
            ]
        );
    }

    #[test]
    fn every_listed_device_is_remembered_whatever_its_bundle() {
        let a = account(4);
        let forger = DeviceKey::generate();
        let [(_, c1), (k2, c2), (k3, c3), _] = &a.devices[..] else {
            unreachable!()
        };
        let offered = [
            bundle(c1, &forger, NOW),
            bundle(c2, k2, NOW - 40 * DAY),
            bundle(c3, k3, NOW),
            B64(b"not a bundle".to_vec()),
        ];
        let checked = check_bundles(&offered, &a.list, NOW);
        assert_eq!(ids(&checked.bundles), [3], "only the one that passed");
        let left_out: Vec<_> = (checked.unserved.iter())
            .map(|r| (r.device, matches!(r.why, LeftOut::NoKeys)))
            .collect();
        assert_eq!(
            left_out,
            [
                (Some(1), false),
                (Some(2), false),
                (None, false),
                (Some(4), true)
            ],
            "device 4, listed without a bundle, is left out for having no keys"
        );

        let fingerprint = a.list.list().account;
        let rows = remembered(&a.list, &checked.certified, &fingerprint);
        let got: Vec<(i64, &str, i64)> = rows
            .iter()
            .map(|r| (r.device_id, r.name.as_str(), r.created_at))
            .collect();
        let now = NOW as i64;
        assert_eq!(
            got,
            [
                (1, "device 1", now),
                (2, "device 2", now),
                (3, "device 3", now),
                (4, "", 0),
            ],
            "device 4 offered no bundle: known by the list alone"
        );
        for (row, (key, _)) in rows.iter().zip(&a.devices) {
            assert_eq!(row.device_key, key.public().as_bytes(), "the listed key");
            assert_eq!(row.account_fingerprint, fingerprint.to_hex());
        }
    }
}
