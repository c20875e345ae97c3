//! Prekeys (docs/PROTOCOL.md §9.8, §10, §5.2): a device publishes
//! them, each checked against the device key of the current list (a new
//! signed or last-resort one is announced to the neighbourhood); a sender
//! claims one-time ones, each handed out once, at a bounded rate per
//! claiming account, from the home server of a remote user too
//! (`remote_claims`).

use super::registry::SessionLink;
use super::{RouteError, Router};
use crate::crypto::v2::{MAX_LIST_DEVICES, PublicPoint, PublicPrekey};
use crate::db::prekeys::{self, NewPrekey, PoolLimits, PoolSizes};
use crate::domain::{Fingerprint, PhoneNumber};

/// Most prekeys in one `publish_prekeys` (a batch of one-time keys of
/// both kinds, plus the two current ones, fits; the frame limit bounds the
/// bytes).
pub const MAX_PREKEYS_PER_REQUEST: usize = 200;

/// Most one-time prekeys kept per device: P-256, then ML-KEM.
const POOL_LIMITS: PoolLimits = PoolLimits {
    one_time: 200,
    kem_one_time: 100,
};

impl Router {
    /// Checks and stores prekeys of the session's device. Returns the
    /// device's one-time pool sizes after.
    pub async fn publish_prekeys(
        &self,
        session: &SessionLink,
        published: Vec<Vec<u8>>,
    ) -> Result<PoolSizes, RouteError> {
        let phone = session.phone();
        let device = session.device();
        if device == 0 {
            return Err(RouteError::NotADevice);
        }
        if published.len() > MAX_PREKEYS_PER_REQUEST {
            return Err(RouteError::TooMany {
                what: "prekeys",
                max: MAX_PREKEYS_PER_REQUEST,
            });
        }
        let key = self
            .device_key(phone, device)
            .await?
            .ok_or_else(|| RouteError::UnknownDevice(phone.clone(), device))?;
        // Up to 200 signature checks: off the async threads.
        let checked = tokio::task::spawn_blocking(move || check_all(&key, published))
            .await
            .map_err(|_| RouteError::Interrupted("checking prekeys"))??;
        let now = self.clock.now_ms();
        let bundle_changed = checked
            .iter()
            .any(|p| p.kind == prekeys::SIGNED || p.kind == prekeys::KEM_LAST_RESORT);
        let sizes = self
            .store
            .publish_prekeys(phone, device, &checked, POOL_LIMITS, now)
            .await?
            .ok_or_else(|| RouteError::UnknownDevice(phone.clone(), device))?;
        if bundle_changed {
            // The neighbourhood serves this device's new bundle from now on.
            self.announce_devices(phone).await;
        }
        Ok(sizes)
    }

    /// Hands out one one-time P-256 and one one-time ML-KEM prekey of each
    /// named device of a user (either part empty when none is left), as
    /// claim results (§10.3) in the order asked. A remote user's keys are
    /// claimed from their home server across the links.
    pub async fn claim(
        &self,
        session: &SessionLink,
        phone: &PhoneNumber,
        devices: &[u32],
    ) -> Result<Vec<Vec<u8>>, RouteError> {
        if devices.len() > MAX_LIST_DEVICES {
            return Err(RouteError::TooMany {
                what: "devices",
                max: MAX_LIST_DEVICES,
            });
        }
        check_distinct(devices)?;
        let entry = self
            .user(phone)
            .await
            .ok_or_else(|| RouteError::UnknownRecipient(phone.clone()))?;
        if let Some(via) = entry.via {
            self.charge_claims(session.phone(), devices.len())?;
            return self.claim_remote(via, phone, devices).await;
        }
        self.check_listed(phone, devices)?;
        self.charge_claims(session.phone(), devices.len())?;
        for device in devices {
            // Counted against the budget neighbours share; never held back.
            let _ = self.neighbour_claims.device_may(phone, *device);
        }
        self.hand_out(phone, devices).await
    }

    /// A claim for a local user started at server `origin` and asked by
    /// neighbour `from` (the asking server charged its user's rate; we
    /// charge the origin's, the neighbour's and each device's budget, and
    /// past them answer without one-time keys, `remote_claim_limits`).
    pub(super) async fn claim_local(
        &self,
        origin: Fingerprint,
        from: Fingerprint,
        phone: &PhoneNumber,
        devices: &[u32],
    ) -> Result<Vec<Vec<u8>>, RouteError> {
        if self.device_list(phone).is_none() {
            self.fresh_device_list(phone).await?;
        }
        check_distinct(devices)?;
        self.check_listed(phone, devices)?;
        let allowed = self.neighbour_may_claim(origin, from, phone, devices.len());
        let mut claims = Vec::with_capacity(devices.len());
        for &device in devices {
            if allowed && self.neighbour_claims.device_may(phone, device) {
                claims.extend(self.hand_out(phone, &[device]).await?);
            } else {
                claims.push(claim_bytes(device, None, None));
            }
        }
        Ok(claims)
    }

    /// Every device named must be in the local user's current list.
    fn check_listed(&self, phone: &PhoneNumber, devices: &[u32]) -> Result<(), RouteError> {
        let list = self.device_list(phone);
        for device in devices {
            if list.as_ref().and_then(|l| l.key_of(*device)).is_none() {
                return Err(RouteError::UnknownDevice(phone.clone(), *device));
            }
        }
        Ok(())
    }

    /// Takes one of each one-time kind per device out of its pool; the
    /// statement that returns a key deletes it, so none goes out twice.
    async fn hand_out(
        &self,
        phone: &PhoneNumber,
        devices: &[u32],
    ) -> Result<Vec<Vec<u8>>, RouteError> {
        let mut claims = Vec::with_capacity(devices.len());
        for device in devices {
            let ec = self
                .store
                .claim_prekey(phone, *device, prekeys::ONE_TIME)
                .await?;
            let kem = self
                .store
                .claim_prekey(phone, *device, prekeys::KEM_ONE_TIME)
                .await?;
            claims.push(claim_bytes(*device, ec.as_deref(), kem.as_deref()));
        }
        Ok(claims)
    }
}

/// Parses each prekey and checks its signature by the device key; the
/// first bad one refuses them all.
fn check_all(key: &PublicPoint, published: Vec<Vec<u8>>) -> Result<Vec<NewPrekey>, RouteError> {
    let mut checked = Vec::with_capacity(published.len());
    for (index, bytes) in published.into_iter().enumerate() {
        let prekey = PublicPrekey::parse(&bytes)
            .and_then(|p| p.verify(key, p.kind).map(|()| p))
            .map_err(|error| RouteError::BadPrekey { index, error })?;
        checked.push(NewPrekey {
            kind: prekey.kind as u8,
            id: prekey.id,
            bytes,
        });
    }
    Ok(checked)
}

/// A claim result (docs/PROTOCOL.md §10.3): device id, then each prekey
/// preceded by its `u16` length, 0 for none.
fn claim_bytes(device: u32, ec: Option<&[u8]>, kem: Option<&[u8]>) -> Vec<u8> {
    let mut out = device.to_be_bytes().to_vec();
    for part in [ec.unwrap_or_default(), kem.unwrap_or_default()] {
        out.extend_from_slice(&(part.len() as u16).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

/// Each device at most once in a claim: a repeated id would hand out one
/// more one-time prekey per repetition.
fn check_distinct(devices: &[u32]) -> Result<(), RouteError> {
    let mut seen = std::collections::HashSet::with_capacity(devices.len());
    match devices.iter().find(|d| !seen.insert(**d)) {
        Some(&device) => Err(RouteError::RepeatedDevice(device)),
        None => Ok(()),
    }
}
