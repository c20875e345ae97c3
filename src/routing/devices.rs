//! Protocol v2's devices as routing sees them: each local account's current
//! signed device list, kept in memory (loaded at start, replaced on each
//! publish) so a `device_send` checks the sender's view of it without a
//! query; publishing a list (checked against the account key); and what
//! `lookup`, `devices` and a `stale_devices` refusal serve.
//!
//! The server checks signatures so that it stores only what the account
//! key signed, but it never needs to be trusted for them: clients check the
//! same chain themselves (docs/PROTOCOL.md §10.1).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::registry::SessionLink;
use super::{RouteError, Router};
use crate::crypto::PublicKey;
use crate::crypto::v2::{self, DeviceCertificate, DeviceList, PublicPoint};
use crate::db::cluster::Event;
use crate::db::devices::{NewDeviceList, Published};
use crate::db::{DbError, Store};
use crate::domain::PhoneNumber;
use crate::protocol::{B64, CurrentDevices, LastSeen};

/// An account's current list, as parsed when it was stored.
#[derive(Debug)]
pub(super) struct CurrentList {
    pub version: u64,
    /// The signed list as published.
    pub bytes: Vec<u8>,
    /// The account key that signed it, as a hex fingerprint.
    account: String,
    pub devices: Vec<(u32, PublicPoint)>,
}

impl CurrentList {
    fn parse(bytes: Vec<u8>) -> Result<Self, v2::Error> {
        let list = DeviceList::parse(&bytes)?;
        Ok(Self {
            version: list.version,
            account: list.account.to_hex(),
            devices: list
                .devices
                .into_iter()
                .map(|(id, key)| (id.get(), key))
                .collect(),
            bytes,
        })
    }

    pub fn key_of(&self, device: u32) -> Option<&PublicPoint> {
        self.devices
            .iter()
            .find(|(id, _)| *id == device)
            .map(|(_, key)| key)
    }
}

/// Current lists by account. A std mutex: nothing awaits while it is held.
pub(super) struct DeviceLists {
    lists: Mutex<HashMap<PhoneNumber, Arc<CurrentList>>>,
}

impl DeviceLists {
    pub async fn load(store: &Store) -> Result<Self, DbError> {
        let mut lists = HashMap::new();
        for stored in store.device_lists().await? {
            match CurrentList::parse(stored.list) {
                Ok(list) => {
                    lists.insert(stored.phone, Arc::new(list));
                }
                Err(e) => {
                    tracing::error!(phone = %stored.phone, error = %e, "stored device list unreadable")
                }
            }
        }
        Ok(Self {
            lists: Mutex::new(lists),
        })
    }

    fn get(&self, phone: &PhoneNumber) -> Option<Arc<CurrentList>> {
        self.lock().get(phone).cloned()
    }

    /// Every phone a list is held for.
    pub fn phones(&self) -> Vec<PhoneNumber> {
        self.lock().keys().cloned().collect()
    }

    /// Keeps `list` unless a newer one of the same account key is held
    /// already (a new account key starts its versions again).
    fn set(&self, phone: PhoneNumber, list: CurrentList) {
        let mut lists = self.lock();
        let older =
            |held: &Arc<CurrentList>| held.account != list.account || held.version < list.version;
        if lists.get(&phone).is_none_or(older) {
            lists.insert(phone, Arc::new(list));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PhoneNumber, Arc<CurrentList>>> {
        self.lists.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Router {
    /// The current list of a local account, if it has published one under
    /// its current account key (a list signed by a replaced key is gone).
    pub(super) fn device_list(&self, phone: &PhoneNumber) -> Option<Arc<CurrentList>> {
        let list = self.devices.get(phone)?;
        let entry = self.directory.get(phone)?;
        (entry.via.is_none() && entry.info.fingerprint == list.account).then_some(list)
    }

    /// The key of a local account's listed device, for a device login.
    /// A device not found in memory is looked for in the store too.
    pub async fn device_key(
        &self,
        phone: &PhoneNumber,
        device: u32,
    ) -> Result<Option<PublicPoint>, RouteError> {
        let key = |list: Option<Arc<CurrentList>>| list?.key_of(device).cloned();
        if let Some(found) = key(self.device_list(phone)) {
            return Ok(Some(found));
        }
        Ok(key(self.fresh_device_list(phone).await?))
    }

    /// [`Router::device_list`] after reading the stored list again: another
    /// server on the same database (a cluster) may have stored a newer one.
    pub(super) async fn fresh_device_list(
        &self,
        phone: &PhoneNumber,
    ) -> Result<Option<Arc<CurrentList>>, RouteError> {
        if let Some(stored) = self.store.device_list(phone).await? {
            match CurrentList::parse(stored.list) {
                Ok(list) => self.devices.set(phone.clone(), list),
                Err(e) => tracing::error!(%phone, error = %e, "stored device list unreadable"),
            }
        }
        Ok(self.device_list(phone))
    }

    /// Reads the list another member of the cluster stored for `phone`,
    /// and ends the sessions here of devices it no longer names.
    pub(super) async fn reload_devices(&self, phone: &PhoneNumber) -> Result<(), RouteError> {
        if self.close_unlisted(phone).await? {
            // The member holding a link may be this one.
            self.announce_devices(phone).await;
        }
        Ok(())
    }

    /// Reads `phone`'s stored list again and ends the sessions here of
    /// devices it no longer names; whether `phone` has a current list.
    pub(super) async fn close_unlisted(&self, phone: &PhoneNumber) -> Result<bool, RouteError> {
        let Some(list) = self.fresh_device_list(phone).await? else {
            return Ok(false);
        };
        for device in self.registry.devices_of(phone) {
            if device != 0 && list.key_of(device).is_none() {
                self.registry.close_device(phone, device);
            }
        }
        Ok(true)
    }

    /// Checks and stores a device list with a certificate per listed
    /// device, for the session's account; devices no longer listed lose
    /// their queue and prekeys, and their sessions are closed. Returns the
    /// stored version.
    pub async fn publish_devices(
        &self,
        session: &SessionLink,
        list: Vec<u8>,
        certificates: Vec<Vec<u8>>,
    ) -> Result<u64, RouteError> {
        let phone = session.phone();
        let parsed = DeviceList::parse(&list).map_err(|error| RouteError::BadStatement {
            what: "device list",
            error,
        })?;
        let verified = parsed
            .verify(&self.account_key(phone)?, phone)
            .map_err(|error| RouteError::NotCertified {
                what: "device list",
                error,
            })?;
        let listed = verified.list().devices.len();
        let max = self.limits().devices_per_account;
        if listed > max {
            return Err(RouteError::TooManyDevices { listed, max });
        }
        if verified.version() > i64::MAX as u64 {
            return Err(RouteError::BadStatement {
                what: "device list",
                error: v2::Error::Malformed("version above 2^63 - 1"),
            });
        }
        if certificates.len() != listed {
            return Err(RouteError::CertificatesMismatch(
                "the number of certificates differs from the number of devices",
            ));
        }
        let mut certified: Vec<(u32, Vec<u8>)> = Vec::with_capacity(listed);
        for bytes in certificates {
            let cert =
                DeviceCertificate::parse(&bytes).map_err(|error| RouteError::BadStatement {
                    what: "certificate",
                    error,
                })?;
            let device = verified
                .certify(&cert)
                .map_err(|error| RouteError::NotCertified {
                    what: "certificate",
                    error,
                })?;
            let id = device.device_id.get();
            if certified.iter().any(|(seen, _)| *seen == id) {
                return Err(RouteError::CertificatesMismatch(
                    "two certificates name the same device",
                ));
            }
            certified.push((id, bytes));
        }
        let version = verified.version();
        let stored = self
            .store
            .publish_devices(&NewDeviceList {
                phone: phone.clone(),
                version,
                list: list.clone(),
                certificates: certified,
                now: self.clock.now_ms(),
            })
            .await?;
        let removed = match stored {
            Published::Stale { current } => return Err(RouteError::StaleList { current }),
            Published::Stored { removed } => removed,
        };
        let current = CurrentList::parse(list).map_err(|error| RouteError::BadStatement {
            what: "device list",
            error,
        })?;
        self.devices.set(phone.clone(), current);
        for device in removed {
            self.registry.close_device(phone, device);
        }
        self.tell_members(Event::Devices(phone.clone()));
        self.announce_devices(phone).await;
        tracing::info!(%phone, version, devices = listed, "device list published");
        Ok(version)
    }

    /// A user's current devices: the signed list and the bundle of each
    /// listed device that has published its prekeys, for a user of another
    /// server as the neighbourhood passed them on. `None` for a user
    /// without a list (or whose list has not reached us).
    pub async fn current_devices(
        &self,
        phone: &PhoneNumber,
    ) -> Result<Option<CurrentDevices>, RouteError> {
        if let Some(held) = self.fresh_remote_devices(phone).await {
            return Ok(Some(held.current()));
        }
        self.local_current_devices(phone).await
    }

    /// [`Router::current_devices`] of a local user.
    pub(super) async fn local_current_devices(
        &self,
        phone: &PhoneNumber,
    ) -> Result<Option<CurrentDevices>, RouteError> {
        let list = match self.device_list(phone) {
            // Another member of a cluster may have stored one a moment ago.
            None if self.store.is_shared() => self.fresh_device_list(phone).await?,
            held => held,
        };
        let Some(list) = list else {
            return Ok(None);
        };
        let certificates = self.store.devices(phone).await?;
        let prekeys = self.store.bundle_prekeys(phone).await?;
        let mut bundles = Vec::with_capacity(list.devices.len());
        for (device, _) in &list.devices {
            let cert = certificates
                .iter()
                .find(|row| row.device == i64::from(*device));
            let keys = prekeys.iter().find(|(d, _)| d == device).map(|(_, k)| k);
            let (Some(cert), Some(keys)) = (cert, keys) else {
                continue;
            };
            let (Some(signed), Some(kem)) = (&keys.signed, &keys.kem_last_resort) else {
                continue;
            };
            bundles.push(B64(bundle_bytes(&cert.certificate, signed, kem)));
        }
        Ok(Some(CurrentDevices {
            device_list: B64(list.bytes.clone()),
            bundles,
        }))
    }

    /// The session's own account's list, certificates and when each
    /// device was last seen.
    pub async fn own_devices(
        &self,
        session: &SessionLink,
    ) -> Result<Option<(B64, Vec<B64>, Vec<LastSeen>)>, RouteError> {
        let phone = session.phone();
        let Some(list) = self.device_list(phone) else {
            return Ok(None);
        };
        let rows = self.store.devices(phone).await?;
        let last_seen = rows
            .iter()
            .map(|row| LastSeen {
                device: row.device as u32,
                at: row.last_seen,
            })
            .collect();
        let certificates = rows.into_iter().map(|row| B64(row.certificate)).collect();
        Ok(Some((B64(list.bytes.clone()), certificates, last_seen)))
    }

    /// Notes a device's login.
    pub async fn device_seen(&self, phone: &PhoneNumber, device: u32) -> Result<(), RouteError> {
        Ok(self
            .store
            .device_seen(phone, device, self.clock.now_ms())
            .await?)
    }

    /// The registered key of a local account.
    fn account_key(&self, phone: &PhoneNumber) -> Result<PublicKey, RouteError> {
        let entry = self
            .directory
            .get(phone)
            .filter(|e| e.via.is_none())
            .ok_or_else(|| RouteError::UnknownRecipient(phone.clone()))?;
        PublicKey::from_spki_der_typed(entry.info.key_type, &entry.info.public_key.0)
            .map_err(RouteError::UnusableKey)
    }
}

/// A bundle (docs/PROTOCOL.md §10.2): each part preceded by its `u16`
/// length. Every part was bounded when it was published.
fn bundle_bytes(certificate: &[u8], signed: &[u8], kem: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(6 + certificate.len() + signed.len() + kem.len());
    for part in [certificate, signed, kem] {
        out.extend_from_slice(&(part.len() as u16).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}
