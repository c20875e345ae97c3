//! The `device_lists` and `devices` tables: each local account's current
//! device list as its account key signed it, and one row per listed device
//! with its signed certificate and when it was last seen. The bytes are
//! checked by the caller before they come here; this module keeps them and
//! the rule that a list only moves forward.
//!
//! A device taken off the list loses, in the same transaction, its
//! certificate, its prekeys and its queue.

use super::backend::{Conn, on_backend};
use super::{DbError, Millis, Store};
use crate::domain::PhoneNumber;

/// A device list to store, with the certificate of every device it names.
#[derive(Debug, Clone)]
pub struct NewDeviceList {
    pub phone: PhoneNumber,
    pub version: u64,
    /// The signed list as published.
    pub list: Vec<u8>,
    /// (device id, signed certificate) for each listed device.
    pub certificates: Vec<(u32, Vec<u8>)>,
    pub now: Millis,
}

/// An account's current list as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDeviceList {
    pub phone: PhoneNumber,
    pub version: u64,
    pub list: Vec<u8>,
}

/// One listed device as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DeviceRow {
    pub device: i64,
    pub certificate: Vec<u8>,
    pub added_at: Millis,
    /// 0 until the device first logs in.
    pub last_seen: Millis,
}

/// What became of a published list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    /// Stored; these devices were removed (their queues and prekeys with
    /// them).
    Stored { removed: Vec<u32> },
    /// Not stored: the stored list's version is this one, not lower.
    Stale { current: u64 },
}

impl Store {
    /// Every stored device list, for the router's memory at start.
    pub async fn device_lists(&self) -> Result<Vec<StoredDeviceList>, DbError> {
        let rows: Result<Vec<(PhoneNumber, i64, Vec<u8>)>, _> = on_backend!(&self.pool, p => sqlx::query_as(
                "SELECT phone, version, list FROM device_lists ORDER BY phone",
            )
            .fetch_all(p)
            .await);
        Ok(self
            .read(rows)?
            .into_iter()
            .map(|(phone, version, list)| StoredDeviceList {
                phone,
                version: version as u64,
                list,
            })
            .collect())
    }

    /// `phone`'s stored device list, if any.
    pub async fn device_list(
        &self,
        phone: &PhoneNumber,
    ) -> Result<Option<StoredDeviceList>, DbError> {
        let row: Result<Option<(i64, Vec<u8>)>, _> = on_backend!(&self.pool, p => sqlx::query_as(
            "SELECT version, list FROM device_lists WHERE phone = $1",
        )
        .bind(phone)
        .fetch_optional(p)
        .await);
        Ok(self.read(row)?.map(|(version, list)| StoredDeviceList {
            phone: phone.clone(),
            version: version as u64,
            list,
        }))
    }

    /// The devices of `phone`'s current list, by id.
    pub async fn devices(&self, phone: &PhoneNumber) -> Result<Vec<DeviceRow>, DbError> {
        let rows = on_backend!(&self.pool, p => sqlx::query_as::<_, DeviceRow>(
            "SELECT device, certificate, added_at, last_seen FROM devices
             WHERE phone = $1 ORDER BY device",
        )
        .bind(phone)
        .fetch_all(p)
        .await);
        self.read(rows)
    }

    /// Stores a list whose version is higher than the stored one (else
    /// changes nothing), with its certificates; a device no longer listed
    /// loses its certificate, prekeys and queue in the same transaction.
    pub async fn publish_devices(&self, new: &NewDeviceList) -> Result<Published, DbError> {
        let mut pooled = self.pool.acquire().await?;
        let mut tx = pooled.conn();
        let work = match tx.begin().await {
            Ok(()) => publish_in(&mut tx, new).await,
            Err(e) => Err(e),
        };
        let (published, fit) = tx.end(work).await;
        pooled.release(fit);
        let published = self.wrote(published)?;
        if matches!(&published, Published::Stored { removed } if !removed.is_empty()) {
            self.recount(new.phone.clone()).await?;
        }
        Ok(published)
    }

    /// Notes that a device logged in now.
    pub async fn device_seen(
        &self,
        phone: &PhoneNumber,
        device: u32,
        now: Millis,
    ) -> Result<(), DbError> {
        let done = on_backend!(&self.pool, p => sqlx::query(
            "UPDATE devices SET last_seen = $3 WHERE phone = $1 AND device = $2",
        )
        .bind(phone)
        .bind(i64::from(device))
        .bind(now)
        .execute(p)
        .await
        .map(drop));
        self.wrote(done)
    }
}

async fn publish_in(conn: &mut Conn<'_>, new: &NewDeviceList) -> Result<Published, DbError> {
    let stored: Option<i64> = on_backend!(conn.reborrow(), c => sqlx::query_scalar(
        "SELECT version FROM device_lists WHERE phone = $1",
    )
    .bind(&new.phone)
    .fetch_optional(c)
    .await)?;
    let version = i64::try_from(new.version).unwrap_or(i64::MAX);
    if let Some(current) = stored.filter(|v| *v >= version) {
        return Ok(Published::Stale {
            current: current as u64,
        });
    }
    on_backend!(conn.reborrow(), c => sqlx::query(
        "INSERT INTO device_lists (phone, version, list, updated_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (phone) DO UPDATE SET version = excluded.version, list = excluded.list,
             updated_at = excluded.updated_at",
    )
    .bind(&new.phone)
    .bind(version)
    .bind(&new.list)
    .bind(new.now)
    .execute(c)
    .await
    .map(drop))?;
    let before: Vec<i64> = on_backend!(conn.reborrow(), c => sqlx::query_scalar(
        "SELECT device FROM devices WHERE phone = $1",
    )
    .bind(&new.phone)
    .fetch_all(c)
    .await)?;
    let listed = |d: i64| new.certificates.iter().any(|(id, _)| i64::from(*id) == d);
    let mut removed = Vec::new();
    for device in before.into_iter().filter(|d| !listed(*d)) {
        remove_device(conn, &new.phone, device).await?;
        removed.push(device as u32);
    }
    for (device, certificate) in &new.certificates {
        on_backend!(conn.reborrow(), c => sqlx::query(
            "INSERT INTO devices (phone, device, certificate, added_at, last_seen)
             VALUES ($1, $2, $3, $4, 0)
             ON CONFLICT (phone, device) DO UPDATE SET certificate = excluded.certificate",
        )
        .bind(&new.phone)
        .bind(i64::from(*device))
        .bind(certificate)
        .bind(new.now)
        .execute(c)
        .await
        .map(drop))?;
    }
    Ok(Published::Stored { removed })
}

/// Deletes one device with its prekeys and its queue.
async fn remove_device(
    conn: &mut Conn<'_>,
    phone: &PhoneNumber,
    device: i64,
) -> Result<(), DbError> {
    for sql in [
        "DELETE FROM devices WHERE phone = $1 AND device = $2",
        "DELETE FROM prekeys WHERE phone = $1 AND device = $2",
        "DELETE FROM message_queue WHERE recipient = $1 AND device = $2",
    ] {
        on_backend!(conn.reborrow(), c => sqlx::query(sql)
            .bind(phone)
            .bind(device)
            .execute(c)
            .await
            .map(drop))?;
    }
    Ok(())
}

/// Forgets every device of `phone` (its list, certificates, prekeys and
/// device queues), inside the caller's transaction: a new account key
/// starts without devices. The queue rows go outside the queue writer, so
/// once the transaction has committed the caller must have the writer count
/// the phone's queues again ([`Store::recount`]), as `otp_register` does;
/// until then the writer counts the deleted messages against the quota.
pub(super) async fn forget_all(conn: &mut Conn<'_>, phone: &str) -> Result<(), DbError> {
    for sql in [
        "DELETE FROM device_lists WHERE phone = $1",
        "DELETE FROM devices WHERE phone = $1",
        "DELETE FROM prekeys WHERE phone = $1",
        "DELETE FROM message_queue WHERE recipient = $1 AND device > 0",
    ] {
        on_backend!(conn.reborrow(), c => sqlx::query(sql)
            .bind(phone)
            .execute(c)
            .await
            .map(drop))?;
    }
    Ok(())
}
