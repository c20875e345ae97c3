//! Protocol v2's devices across the neighbourhood: every user's signed
//! device list and bundles travel with the directory, hop by hop, so that
//! `lookup` on any server serves a remote user's devices.
//!
//! Each hop checks what it is given before it keeps or passes on anything:
//! the list must verify under the account key of the phone's directory
//! entry, and each bundle against that list (certificate, prekey
//! signatures, prekeys not too old). What a hop holds only grows newer
//! ([`Held::merge`] is the one rule): a list of a higher version (or under
//! a new account key) replaces the list, and per device the bundle whose
//! signed prekeys were made later wins. A hop floods only what changed what
//! it holds, so a copy that comes back, or an older one, stops there.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use super::{Router, link_frame};
use crate::crypto::PublicKey;
use crate::crypto::v2::{DeviceList, PrekeyBundle, PublicPoint, VerifiedDeviceList};
use crate::db::remote_devices::RemoteDevicesRow;
use crate::db::{DbError, Store};
use crate::domain::{Fingerprint, PhoneNumber};
use crate::protocol::link::{DeviceEntry, LinkMessage};
use crate::protocol::{B64, CurrentDevices};

/// Device entries per link frame: eight bundles of about 4 KiB each make
/// an entry at most ~45 KiB in base64, well under the link frame limit.
const DEVICES_CHUNK: usize = 32;
/// Most bundles one entry may carry (one per listed device).
const MAX_BUNDLES: usize = crate::crypto::v2::MAX_LIST_DEVICES;

/// One device's bundle as held: its bytes and when its two prekeys were
/// made (signed by the device, so a hop cannot make a bundle look newer).
#[derive(Debug, Clone, PartialEq, Eq)]
struct HeldBundle {
    bytes: Vec<u8>,
    made: (u64, u64),
}

/// A remote user's devices: the newest list known and, per listed device,
/// the newest bundle.
#[derive(Debug, Clone)]
pub(super) struct Held {
    /// The account key's fingerprint, as the list names it.
    account: Fingerprint,
    pub version: u64,
    list: Vec<u8>,
    devices: Vec<(u32, PublicPoint)>,
    bundles: BTreeMap<u32, HeldBundle>,
}

impl Held {
    fn new(list: &VerifiedDeviceList, bytes: Vec<u8>) -> Self {
        let parsed = list.list();
        Self {
            account: parsed.account,
            version: parsed.version,
            list: bytes,
            devices: parsed
                .devices
                .iter()
                .map(|(id, key)| (id.get(), key.clone()))
                .collect(),
            bundles: BTreeMap::new(),
        }
    }

    /// The ids the list names.
    pub fn device_ids(&self) -> Vec<u32> {
        self.devices.iter().map(|(id, _)| *id).collect()
    }

    pub fn key_of(&self, device: u32) -> Option<&PublicPoint> {
        self.devices
            .iter()
            .find(|(id, _)| *id == device)
            .map(|(_, key)| key)
    }

    /// The newer of what is held and what came: returns the merged
    /// holding, or `None` when `incoming` adds nothing. Bundles are kept
    /// only for devices of the resulting list with the same key.
    fn merge(held: Option<&Held>, incoming: Held) -> Option<Held> {
        let Some(held) = held.filter(|h| h.account == incoming.account) else {
            return Some(incoming);
        };
        let (mut merged, other) = if incoming.version > held.version {
            (incoming, held.clone())
        } else {
            (held.clone(), incoming)
        };
        for (device, bundle) in other.bundles {
            let same_key =
                other_key(&other.devices, device).is_some_and(|k| merged.key_of(device) == Some(k));
            if !same_key {
                continue;
            }
            let newer = merged
                .bundles
                .get(&device)
                .is_none_or(|kept| kept.made < bundle.made);
            if newer {
                merged.bundles.insert(device, bundle);
            }
        }
        let changed = merged.version != held.version
            || merged.list != held.list
            || merged.bundles != held.bundles;
        changed.then_some(merged)
    }

    fn to_entry(&self, phone: &PhoneNumber) -> DeviceEntry {
        DeviceEntry {
            phone: phone.as_str().to_owned(),
            device_list: B64(self.list.clone()),
            bundles: self
                .bundles
                .values()
                .map(|b| B64(b.bytes.clone()))
                .collect(),
        }
    }

    pub fn current(&self) -> CurrentDevices {
        CurrentDevices {
            device_list: B64(self.list.clone()),
            bundles: self
                .bundles
                .values()
                .map(|b| B64(b.bytes.clone()))
                .collect(),
        }
    }

    fn to_row(&self, phone: &PhoneNumber) -> RemoteDevicesRow {
        let mut bundles = Vec::new();
        for b in self.bundles.values() {
            bundles.extend_from_slice(&(b.bytes.len() as u16).to_be_bytes());
            bundles.extend_from_slice(&b.bytes);
        }
        RemoteDevicesRow {
            phone: phone.clone(),
            list: self.list.clone(),
            bundles,
        }
    }
}

fn other_key(devices: &[(u32, PublicPoint)], device: u32) -> Option<&PublicPoint> {
    devices.iter().find(|(id, _)| *id == device).map(|(_, k)| k)
}

/// Splits stored bundles (each preceded by its `u16` length).
fn split_bundles(mut bytes: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let len = usize::from(u16::from_be_bytes(bytes.get(..2)?.try_into().ok()?));
        out.push(bytes.get(2..2 + len)?.to_vec());
        bytes = &bytes[2 + len..];
    }
    Some(out)
}

/// Why a device entry from a neighbour was not taken.
#[derive(Debug, thiserror::Error)]
pub(super) enum EntryRefused {
    #[error("bad phone number")]
    Phone,
    #[error("the phone has no directory entry here (yet)")]
    NotInDirectory,
    #[error("the phone's home is this server")]
    Ours,
    #[error("the account key in the directory is unusable")]
    Key,
    #[error("the device list: {0}")]
    List(crate::crypto::v2::Error),
    #[error("{0} bundles for at most {max} devices", max = MAX_BUNDLES)]
    TooManyBundles(usize),
}

/// Remote users' devices by phone. A std mutex: nothing awaits while it is
/// held.
#[derive(Default)]
pub(super) struct RemoteLists {
    held: Mutex<HashMap<PhoneNumber, Arc<Held>>>,
}

impl RemoteLists {
    /// Reads what the store holds; entries are checked again against the
    /// directory when they are served.
    pub async fn load(store: &Store) -> Result<Self, DbError> {
        let mut held = HashMap::new();
        for row in store.remote_devices().await? {
            match parse_row(&row) {
                Some(h) => {
                    held.insert(row.phone, Arc::new(h));
                }
                None => tracing::error!(phone = %row.phone, "stored remote device list unreadable"),
            }
        }
        Ok(Self {
            held: Mutex::new(held),
        })
    }

    fn get(&self, phone: &PhoneNumber) -> Option<Arc<Held>> {
        self.lock().get(phone).cloned()
    }

    fn all(&self) -> Vec<(PhoneNumber, Arc<Held>)> {
        self.lock()
            .iter()
            .map(|(p, h)| (p.clone(), h.clone()))
            .collect()
    }

    /// Merges `incoming`; returns the new holding if it changed.
    fn merge(&self, phone: &PhoneNumber, incoming: Held) -> Option<Arc<Held>> {
        let mut held = self.lock();
        let merged = Arc::new(Held::merge(held.get(phone).map(|h| &**h), incoming)?);
        held.insert(phone.clone(), merged.clone());
        Some(merged)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PhoneNumber, Arc<Held>>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A stored holding, trusted as far as its layout: it was checked before
/// it was stored.
fn parse_row(row: &RemoteDevicesRow) -> Option<Held> {
    let list = DeviceList::parse(&row.list).ok()?;
    let mut held = Held {
        account: list.account,
        version: list.version,
        list: row.list.clone(),
        devices: list
            .devices
            .iter()
            .map(|(id, key)| (id.get(), key.clone()))
            .collect(),
        bundles: BTreeMap::new(),
    };
    for bytes in split_bundles(&row.bundles)? {
        let bundle = PrekeyBundle::parse(&bytes).ok()?;
        let made = (
            bundle.signed_prekey.created_at_ms,
            bundle.kem_prekey.created_at_ms,
        );
        held.bundles.insert(
            bundle.certificate.device_id.get(),
            HeldBundle { bytes, made },
        );
    }
    Some(held)
}

impl Router {
    /// A remote user's devices as known here, if signed by the account key
    /// their directory entry names now.
    pub(super) fn remote_devices(&self, phone: &PhoneNumber) -> Option<Arc<Held>> {
        let held = self.remote.get(phone)?;
        let entry = self.directory.get(phone)?;
        (entry.via.is_some() && entry.info.fingerprint == held.account.to_hex()).then_some(held)
    }

    /// [`Router::remote_devices`], after reading the store again when it
    /// is shared: another member of a cluster may run the link that
    /// brought a newer list.
    pub(super) async fn fresh_remote_devices(&self, phone: &PhoneNumber) -> Option<Arc<Held>> {
        let remote = self.directory.get(phone).is_some_and(|e| e.via.is_some());
        if remote && self.store.is_shared() {
            match self.store.remote_devices_of(phone).await {
                Ok(Some(row)) => {
                    if let Some(stored) = parse_row(&row) {
                        self.remote.merge(phone, stored);
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(%phone, error = %e, "cannot read a remote device list"),
            }
        }
        self.remote_devices(phone)
    }

    /// Takes device entries from neighbour `from`: each is checked, merged
    /// with what is held, stored, and passed on to the other neighbours if
    /// it changed anything.
    pub async fn devices_in(&self, from: Fingerprint, entries: Vec<DeviceEntry>) {
        let mut changed = Vec::new();
        for entry in entries {
            let phone = entry.phone.chars().take(20).collect::<String>();
            let checked = match self.check_entry(entry) {
                Ok(checked) => checked,
                Err(EntryRefused::Ours | EntryRefused::NotInDirectory) => continue,
                Err(e) => {
                    tracing::warn!(%phone, error = %e, "refusing a neighbour's device list");
                    continue;
                }
            };
            let (phone, incoming) = checked;
            let Some(merged) = self.remote.merge(&phone, incoming) else {
                continue;
            };
            if let Err(e) = self
                .store
                .put_remote_devices(&merged.to_row(&phone), self.clock.now_ms())
                .await
            {
                tracing::error!(%phone, error = %e, "could not store a remote device list");
            }
            changed.push(merged.to_entry(&phone));
        }
        if !changed.is_empty() {
            // Relayed messages from a device of theirs may be waiting.
            self.waiting_senders.list_arrived();
            tracing::debug!(
                entries = changed.len(),
                "device lists changed; passing them on"
            );
            self.flood_devices(Some(from), changed);
        }
    }

    /// Checks one entry against the directory: the list under the phone's
    /// account key, each bundle against the list. A bad bundle is left out
    /// (the rest of the entry still counts).
    fn check_entry(&self, entry: DeviceEntry) -> Result<(PhoneNumber, Held), EntryRefused> {
        let phone = PhoneNumber::from_canonical(&entry.phone).map_err(|_| EntryRefused::Phone)?;
        let dir = self
            .directory
            .get(&phone)
            .ok_or(EntryRefused::NotInDirectory)?;
        if dir.via.is_none() {
            return Err(EntryRefused::Ours);
        }
        if entry.bundles.len() > MAX_BUNDLES {
            return Err(EntryRefused::TooManyBundles(entry.bundles.len()));
        }
        let key = PublicKey::from_spki_der_typed(dir.info.key_type, &dir.info.public_key.0)
            .map_err(|_| EntryRefused::Key)?;
        let verified = DeviceList::parse(&entry.device_list.0)
            .and_then(|l| l.verify(&key, &phone))
            .map_err(EntryRefused::List)?;
        let mut held = Held::new(&verified, entry.device_list.0);
        let now = self.clock.now_ms().max(0) as u64;
        for B64(bytes) in entry.bundles {
            let bundle = match PrekeyBundle::parse(&bytes) {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(%phone, error = %e, "a neighbour's bundle is malformed; left out");
                    continue;
                }
            };
            if let Err(e) = bundle.verify(&verified, now) {
                tracing::warn!(%phone, error = %e, "a neighbour's bundle does not verify; left out");
                continue;
            }
            let made = (
                bundle.signed_prekey.created_at_ms,
                bundle.kem_prekey.created_at_ms,
            );
            held.bundles.insert(
                bundle.certificate.device_id.get(),
                HeldBundle { bytes, made },
            );
        }
        Ok((phone, held))
    }

    /// Sends device entries to every linked neighbour but `except`.
    fn flood_devices(&self, except: Option<Fingerprint>, entries: Vec<DeviceEntry>) {
        for chunk in entries.chunks(DEVICES_CHUNK) {
            let frame = link_frame(&LinkMessage::Devices {
                entries: chunk.to_vec(),
            });
            self.neighbours.send_all_except(except, &frame);
        }
    }

    /// Sends a local user's current devices to every neighbour, after a
    /// publish here (or by another member of a cluster).
    pub(super) async fn announce_devices(&self, phone: &PhoneNumber) {
        match self.local_device_entry(phone).await {
            Ok(Some(entry)) => self.flood_devices(None, vec![entry]),
            Ok(None) => {}
            Err(e) => tracing::warn!(%phone, error = %e, "could not read devices to announce"),
        }
    }

    async fn local_device_entry(
        &self,
        phone: &PhoneNumber,
    ) -> Result<Option<DeviceEntry>, super::RouteError> {
        let Some(current) = self.local_current_devices(phone).await? else {
            return Ok(None);
        };
        Ok(Some(DeviceEntry {
            phone: phone.as_str().to_owned(),
            device_list: current.device_list,
            bundles: current.bundles,
        }))
    }

    /// Every device entry this server holds, for a neighbour that just
    /// linked: its own users' (read from the store) and the remote ones.
    pub async fn device_frames(&self) -> Vec<Vec<u8>> {
        let mut entries = Vec::new();
        for phone in self.devices.phones() {
            match self.local_device_entry(&phone).await {
                Ok(Some(entry)) => entries.push(entry),
                Ok(None) => {}
                Err(e) => tracing::warn!(%phone, error = %e, "could not read devices to send"),
            }
        }
        for (phone, held) in self.remote.all() {
            if self.remote_devices(&phone).is_some() {
                entries.push(held.to_entry(&phone));
            }
        }
        entries
            .chunks(DEVICES_CHUNK)
            .map(|chunk| {
                link_frame(&LinkMessage::Devices {
                    entries: chunk.to_vec(),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(version: u64, bundles: &[(u32, (u64, u64))]) -> Held {
        let key = PublicPoint::from_bytes(&p256_point()).expect("point");
        Held {
            account: Fingerprint::parse(&"ab".repeat(32)).expect("fingerprint"),
            version,
            list: version.to_be_bytes().to_vec(),
            devices: vec![(1, key.clone()), (2, key)],
            bundles: bundles
                .iter()
                .map(|(d, made)| {
                    let bytes = vec![*d as u8, made.0 as u8, made.1 as u8];
                    (*d, HeldBundle { bytes, made: *made })
                })
                .collect(),
        }
    }

    fn p256_point() -> Vec<u8> {
        // The P-256 generator, uncompressed.
        let hex = "046b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296\
                   4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5";
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
            .collect()
    }

    #[test]
    fn newer_list_wins_and_keeps_newer_bundles() {
        let old = held(1, &[(1, (5, 5)), (2, (9, 9))]);
        let new = held(2, &[(1, (6, 6)), (2, (3, 3))]);
        let merged = Held::merge(Some(&old), new).expect("changed");
        assert_eq!(merged.version, 2);
        assert_eq!(merged.bundles[&1].made, (6, 6));
        assert_eq!(
            merged.bundles[&2].made,
            (9, 9),
            "the held newer bundle stays"
        );
    }

    #[test]
    fn older_or_same_changes_nothing() {
        let held_now = held(2, &[(1, (6, 6))]);
        assert!(Held::merge(Some(&held_now), held(1, &[(1, (5, 5))])).is_none());
        assert!(Held::merge(Some(&held_now), held(2, &[(1, (6, 6))])).is_none());
        let merged = Held::merge(Some(&held_now), held(1, &[(2, (7, 7))])).expect("changed");
        assert_eq!(
            merged.version, 2,
            "an older list only lends its newer bundles"
        );
        assert_eq!(merged.bundles.len(), 2);
    }

    #[test]
    fn stored_bundles_split_back() {
        let joined = [&[0u8, 2, 7, 8][..], &[0, 1, 9]].concat();
        assert_eq!(split_bundles(&joined), Some(vec![vec![7, 8], vec![9]]));
        assert_eq!(split_bundles(&[0, 5, 1]), None);
    }
}
