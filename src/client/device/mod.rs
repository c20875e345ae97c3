//! Protocol v2 on the client: this device (`setup`: made at `register` or
//! `link`, logged in with `device_login`, its prekeys kept topped up), the
//! checked devices of contacts (`peers`), sending with fan-out and
//! retry on a stale device list (`outbox`), a send cut short after its
//! message went out, told as such (`partly`), opening what arrives
//! (`inbox`), managing the account's devices (`manage`), and the sealed
//! store behind them all (`store`, `vault`).
//!
//! Architecture invariant: every secret value is committed to the store,
//! sealed, before the envelope it produced leaves or the message it opened
//! is acknowledged; a client killed at any point neither loses a message
//! nor uses a chain key twice.

pub(super) mod inbox;
pub(super) mod manage;
pub(super) mod outbox;
pub(super) mod partly;
pub(super) mod peers;
pub(super) mod setup;
pub(super) mod store;
pub(super) mod vault;

use super::ClientError;
use super::home::Home;
use crate::crypto::v2::{DeviceId, LocalDevice, PrekeyStore};
use vault::Vault;

/// Labels under which values are sealed (the row they belong to).
const LOCAL_LABEL: &str = "device";
const PREKEYS_LABEL: &str = "prekeys";
const SESSION_LABEL: &str = "session";

/// This home's device, loaded for one command.
pub struct Device {
    pub local: LocalDevice,
    vault: Vault,
}

impl Device {
    /// This home's device, if it has one (a home registered before
    /// protocol v2 has none).
    pub async fn load(home: &Home, passphrase: Option<&str>) -> Result<Option<Self>, ClientError> {
        let Some(row) = store::device(home.pool()).await? else {
            return Ok(None);
        };
        let vault = Vault::load(home.dir(), passphrase)?;
        let local = LocalDevice::from_bytes(&vault.open(LOCAL_LABEL, &row.local)?)?;
        Ok(Some(Self { local, vault }))
    }

    pub fn id(&self) -> DeviceId {
        self.local.device_id
    }

    /// The prekey store as last saved.
    pub async fn prekeys(&self, home: &Home) -> Result<PrekeyStore, ClientError> {
        let row = store::device(home.pool())
            .await?
            .ok_or_else(|| ClientError::Protocol("the device's row is gone".into()))?;
        Ok(PrekeyStore::from_bytes(
            &self.vault.open(PREKEYS_LABEL, &row.prekeys)?,
        )?)
    }

    pub fn seal_prekeys(&self, prekeys: &PrekeyStore) -> Vec<u8> {
        self.vault.seal(PREKEYS_LABEL, &prekeys.to_bytes())
    }

    pub fn seal_session(&self, session: &crate::crypto::v2::Session) -> Vec<u8> {
        self.vault.seal(SESSION_LABEL, &session.to_bytes())
    }

    pub fn open_session(&self, sealed: &[u8]) -> Result<crate::crypto::v2::Session, ClientError> {
        Ok(crate::crypto::v2::Session::from_bytes(
            &self.vault.open(SESSION_LABEL, sealed)?,
        )?)
    }
}

impl crate::client::Client {
    /// This home's device id, if it has a device.
    pub async fn device_id(&self) -> Result<Option<u32>, ClientError> {
        Ok(store::device(self.home.pool())
            .await?
            .map(|d| d.device_id as u32))
    }
}

impl crate::client::Session<'_> {
    /// Devices contacts added under their pinned keys since last asked,
    /// as (phone, device id, name: empty while unknown), each told once.
    /// Looks up every contact whose devices this home has checked, to
    /// learn of new ones.
    pub async fn device_notices(&self) -> Result<Vec<(String, i64, String)>, ClientError> {
        if self.device.is_none() {
            return Ok(Vec::new());
        }
        for phone in store::listed_phones(self.client.home.pool()).await? {
            let Ok(phone) = crate::domain::PhoneNumber::from_canonical(&phone) else {
                continue;
            };
            if phone == self.me {
                continue;
            }
            if let Err(e) = self.devices_of(&phone).await {
                tracing::warn!(%phone, error = %e, "the devices of a contact were not refreshed");
            }
        }
        store::take_device_notices(self.client.home.pool()).await
    }

    /// The safety number of this account and `phone`'s (docs/PROTOCOL.md
    /// §17), from the key pinned for `phone` (pinned now on first contact;
    /// refused after a key change until `trust`).
    pub async fn safety_number(&self, phone: &str) -> Result<String, ClientError> {
        let phone = crate::domain::PhoneNumber::parse(phone)
            .map_err(|e| ClientError::Input(e.to_string()))?;
        let key = if phone == self.me {
            self.identity.public_key()
        } else {
            self.contact_key(&phone).await?.0
        };
        Ok(crate::crypto::v2::safety_number(
            &self.me,
            &self.identity.public_key(),
            &phone,
            &key,
        ))
    }
}

/// Milliseconds since the Unix epoch, for prekeys and sessions.
pub(super) fn now_ms(clock: &crate::clock::Clock) -> u64 {
    clock.now_ms().max(0) as u64
}
