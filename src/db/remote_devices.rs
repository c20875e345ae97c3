//! The `remote_devices` table: the newest signed device list and bundles of
//! each user of another server, as the neighbourhood passed them on. The
//! bytes were checked by routing before they were stored; this file keeps
//! them and gives them back.

use super::backend::on_backend;
use super::{DbError, Millis, Store};
use crate::domain::PhoneNumber;

/// A remote user's devices as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RemoteDevicesRow {
    pub phone: PhoneNumber,
    /// The signed device list.
    pub list: Vec<u8>,
    /// Each bundle preceded by its `u16` length.
    pub bundles: Vec<u8>,
}

impl Store {
    /// Every remote user's devices, for start-up.
    pub async fn remote_devices(&self) -> Result<Vec<RemoteDevicesRow>, DbError> {
        let rows = on_backend!(&self.pool, p => sqlx::query_as::<_, RemoteDevicesRow>(
            "SELECT phone, list, bundles FROM remote_devices",
        )
        .fetch_all(p)
        .await);
        self.read(rows)
    }

    /// One remote user's devices, if held (another member of a cluster
    /// may have stored them).
    pub async fn remote_devices_of(
        &self,
        phone: &PhoneNumber,
    ) -> Result<Option<RemoteDevicesRow>, DbError> {
        let row = on_backend!(&self.pool, p => sqlx::query_as::<_, RemoteDevicesRow>(
            "SELECT phone, list, bundles FROM remote_devices WHERE phone = $1",
        )
        .bind(phone)
        .fetch_optional(p)
        .await);
        self.read(row)
    }

    /// Stores (or replaces) a remote user's devices.
    pub async fn put_remote_devices(
        &self,
        row: &RemoteDevicesRow,
        now: Millis,
    ) -> Result<(), DbError> {
        let done = on_backend!(&self.pool, p => sqlx::query(
            "INSERT INTO remote_devices (phone, list, bundles, updated_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (phone) DO UPDATE SET list = excluded.list,
                 bundles = excluded.bundles, updated_at = excluded.updated_at",
        )
        .bind(&row.phone)
        .bind(&row.list)
        .bind(&row.bundles)
        .bind(now)
        .execute(p)
        .await
        .map(|done| done.rows_affected()));
        self.wrote(done).map(drop)
    }
}
