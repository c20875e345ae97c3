//! A device's life on this home: made when the account is registered (or
//! linked, `manage`), logged in with its own key, its prekeys published
//! and kept topped up.

use super::store::{self, DeviceRow};
use super::vault::Vault;
use super::{Device, LOCAL_LABEL, now_ms};
use crate::client::home::Home;
use crate::client::{ClientError, Connection, Session, unexpected};
use crate::crypto::Identity;
use crate::crypto::v2::{
    DeviceCertificate, DeviceId, DeviceKey, DeviceList, LocalDevice, PrekeyStore, PublicPrekey,
};
use crate::domain::PhoneNumber;
use crate::protocol::{B64, ErrorCode, Request, Response};

/// Most prekeys one `publish_prekeys` takes.
const PUBLISH_BATCH: usize = 200;

/// What a new account's first device publishes: a list of version
/// `version` holding only `id`, and its certificate.
pub(in crate::client) struct FirstDevice {
    pub key: DeviceKey,
    pub id: DeviceId,
    pub name: String,
}

/// Makes this home's device for a freshly registered account key, logged
/// in on `conn` with that key: signs and publishes a list holding only the
/// new device (removing any devices of an earlier registration), then saves
/// the device. Its prekeys are published at its first device login.
pub(in crate::client) async fn register_device(
    home: &Home,
    conn: &Connection,
    identity: &Identity,
    me: &PhoneNumber,
    passphrase: Option<&str>,
    now: u64,
) -> Result<Device, ClientError> {
    let (version, highest) = current_list(conn).await?;
    let id = DeviceId::new(highest + 1)?;
    let device = FirstDevice {
        key: DeviceKey::generate(),
        id,
        name: format!("device {id}"),
    };
    let cert = DeviceCertificate::issue(
        identity,
        me,
        device.id,
        &device.key.public(),
        &device.name,
        now,
    )?;
    let list = DeviceList::issue(
        identity,
        me,
        version + 1,
        now,
        vec![(device.id, device.key.public())],
    )?;
    publish_list(conn, &list, &[cert]).await?;
    save_device(home, me, device, passphrase, now).await
}

/// The version and highest device id of the account's current list, or 0
/// and 0 when it has none.
async fn current_list(conn: &Connection) -> Result<(u64, u32), ClientError> {
    match conn.call(Request::Devices).await {
        Ok(Response::Devices { device_list, .. }) => {
            let list = DeviceList::parse(&device_list.0)?;
            let highest = list.devices.iter().map(|(id, _)| id.get()).max();
            Ok((list.version, highest.unwrap_or(0)))
        }
        Ok(other) => Err(unexpected(other)),
        Err(ClientError::Server {
            code: ErrorCode::UnknownDevice,
            ..
        }) => Ok((0, 0)),
        Err(e) => Err(e),
    }
}

/// `publish_devices`.
pub(in crate::client) async fn publish_list(
    conn: &Connection,
    list: &DeviceList,
    certificates: &[DeviceCertificate],
) -> Result<u64, ClientError> {
    match conn
        .call(Request::PublishDevices {
            list: B64(list.to_bytes()),
            certificates: certificates.iter().map(|c| B64(c.to_bytes())).collect(),
        })
        .await?
    {
        Response::DevicesPublished { version } => Ok(version),
        other => Err(unexpected(other)),
    }
}

/// Saves a new device (and a new state key) in the home, replacing any
/// earlier device and forgetting its sessions.
pub(in crate::client) async fn save_device(
    home: &Home,
    me: &PhoneNumber,
    device: FirstDevice,
    passphrase: Option<&str>,
    now: u64,
) -> Result<Device, ClientError> {
    let vault = Vault::create(home.dir(), passphrase)?;
    let local = LocalDevice::new(me.clone(), device.id, device.key);
    let prekeys = PrekeyStore::new();
    let row = DeviceRow {
        device_id: device.id.get() as i64,
        name: device.name.clone(),
        local: vault.seal(LOCAL_LABEL, &local.to_bytes()),
        prekeys: vault.seal(super::PREKEYS_LABEL, &prekeys.to_bytes()),
        highest_id: device.id.get() as i64,
    };
    let mut tx = crate::client::home::write_tx(home.pool()).await?;
    store::replace_device(&mut tx, &row, now as i64).await?;
    tx.commit().await?;
    Ok(Device { local, vault })
}

/// `challenge`, then `device_login` as `device`.
pub(in crate::client) async fn log_in(
    conn: &Connection,
    device: &Device,
) -> Result<(), ClientError> {
    let Response::Challenge { nonce } = conn.call(Request::Challenge).await? else {
        return Err(ClientError::Protocol("expected a challenge".into()));
    };
    let nonce: [u8; 32] = nonce
        .0
        .try_into()
        .map_err(|_| ClientError::Protocol("the challenge is not 32 bytes".into()))?;
    let signature = device.local.sign_login(conn.exporter(), &nonce);
    match conn
        .call(Request::DeviceLogin {
            phone: device.local.phone.to_string(),
            device: device.id().get(),
            signature: B64(signature.to_vec()),
        })
        .await?
    {
        Response::LoggedIn { .. } => Ok(()),
        other => Err(unexpected(other)),
    }
}

impl Session<'_> {
    /// Rotates the signed prekeys when due and tops up the one-time ones,
    /// both as this device holds them and as the server still has them to
    /// hand out (others may have claimed them without writing yet). The
    /// store is saved before anything is published.
    pub(in crate::client) async fn maintain_prekeys(&self) -> Result<(), ClientError> {
        let Some(device) = &self.device else {
            return Ok(());
        };
        let home = &self.client.home;
        let _ratchets = home.lock_ratchets().await;
        let now = now_ms(&self.client.clock);
        let mut prekeys = device.prekeys(home).await?;
        let mut due = prekeys.maintain(device.local.key(), now);
        let (one_time, kem_one_time) = if due.is_empty() {
            self.publish_prekeys(&[]).await?
        } else {
            (usize::MAX, usize::MAX)
        };
        due.extend(prekeys.replenish(device.local.key(), now, one_time, kem_one_time));
        if due.is_empty() {
            return Ok(());
        }
        store::save_prekeys(home.pool(), &device.seal_prekeys(&prekeys)).await?;
        for batch in due.chunks(PUBLISH_BATCH) {
            self.publish_prekeys(batch).await?;
        }
        Ok(())
    }

    /// `publish_prekeys`; the server's one-time pool sizes after it.
    async fn publish_prekeys(
        &self,
        prekeys: &[PublicPrekey],
    ) -> Result<(usize, usize), ClientError> {
        match self
            .conn
            .call(Request::PublishPrekeys {
                prekeys: prekeys.iter().map(|p| B64(p.to_bytes())).collect(),
            })
            .await?
        {
            Response::PrekeysPublished {
                one_time,
                kem_one_time,
            } => Ok((one_time as usize, kem_one_time as usize)),
            other => Err(unexpected(other)),
        }
    }
}
