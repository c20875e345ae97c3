//! The `prekeys` table: the public prekeys each device published, as it
//! signed them. Kinds 1 and 3 (the signed prekey and the last-resort ML-KEM
//! prekey) have one current row per device, which `lookup` serves in the
//! device's bundle; kinds 2 and 4 are pools of one-time prekeys, from which
//! `claim` hands out each key once: the row is deleted by the statement
//! that returns it.

use super::backend::{Backend, Conn, on_backend};
use super::{DbError, Millis, Store};
use crate::domain::PhoneNumber;

/// The kinds, as stored (docs/PROTOCOL.md §9.8).
pub const SIGNED: u8 = 1;
pub const ONE_TIME: u8 = 2;
pub const KEM_LAST_RESORT: u8 = 3;
pub const KEM_ONE_TIME: u8 = 4;

/// One prekey to store, already checked against its device's key.
#[derive(Debug, Clone)]
pub struct NewPrekey {
    pub kind: u8,
    pub id: u32,
    /// The prekey as published (kind ‖ id ‖ time ‖ key ‖ signature).
    pub bytes: Vec<u8>,
}

/// How many one-time prekeys a device has left, of each kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolSizes {
    pub one_time: u64,
    pub kem_one_time: u64,
}

/// The most one-time prekeys kept per device; beyond, the oldest go.
#[derive(Debug, Clone, Copy)]
pub struct PoolLimits {
    pub one_time: u32,
    pub kem_one_time: u32,
}

/// A device's current signed and last-resort prekeys, as `lookup` serves
/// them in its bundle.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BundlePrekeys {
    pub signed: Option<Vec<u8>>,
    pub kem_last_resort: Option<Vec<u8>>,
}

impl Store {
    /// Stores prekeys of one listed device: a signed or last-resort one
    /// replaces the current one of its kind, one-time ones join their pool
    /// (trimmed to `limits`, the oldest going first). Returns the pool
    /// sizes, or `None` (storing nothing) when the device is not listed.
    pub async fn publish_prekeys(
        &self,
        phone: &PhoneNumber,
        device: u32,
        prekeys: &[NewPrekey],
        limits: PoolLimits,
        now: Millis,
    ) -> Result<Option<PoolSizes>, DbError> {
        let mut pooled = self.pool.acquire().await?;
        let mut tx = pooled.conn();
        let work = match tx.begin().await {
            Ok(()) => publish_in(&mut tx, phone, i64::from(device), prekeys, limits, now).await,
            Err(e) => Err(e),
        };
        let (published, fit) = tx.end(work).await;
        pooled.release(fit);
        self.wrote(published)
    }

    /// The current signed and last-resort prekeys of each of `phone`'s
    /// devices, by device id.
    pub async fn bundle_prekeys(
        &self,
        phone: &PhoneNumber,
    ) -> Result<Vec<(u32, BundlePrekeys)>, DbError> {
        let rows: Result<Vec<(i64, i64, Vec<u8>)>, _> = on_backend!(&self.pool, p => sqlx::query_as(
                "SELECT device, kind, prekey FROM prekeys
                 WHERE phone = $1 AND kind IN (1, 3) ORDER BY device",
            )
            .bind(phone)
            .fetch_all(p)
            .await);
        let mut out: Vec<(u32, BundlePrekeys)> = Vec::new();
        for (device, kind, bytes) in self.read(rows)? {
            let device = device as u32;
            if out.last().is_none_or(|(d, _)| *d != device) {
                out.push((device, BundlePrekeys::default()));
            }
            let (_, bundle) = out.last_mut().expect("pushed above");
            match kind as u8 {
                SIGNED => bundle.signed = Some(bytes),
                _ => bundle.kem_last_resort = Some(bytes),
            }
        }
        Ok(out)
    }

    /// Hands out one one-time prekey of `kind` of a device, the oldest
    /// first, deleting it in the same statement, so no key is given twice
    /// however many claims run at once. `None` when the pool is empty.
    pub async fn claim_prekey(
        &self,
        phone: &PhoneNumber,
        device: u32,
        kind: u8,
    ) -> Result<Option<Vec<u8>>, DbError> {
        let device = i64::from(device);
        let kind = i64::from(kind);
        // PostgreSQL skips a row another claim has locked and takes the next
        // one; SQLite runs one writer at a time, so the oldest row is free.
        let claimed = match &self.pool {
            Backend::Sqlite(p) => {
                sqlx::query_scalar(
                    "DELETE FROM prekeys WHERE phone = $1 AND device = $2 AND kind = $3
                       AND prekey_id = (SELECT min(prekey_id) FROM prekeys
                           WHERE phone = $1 AND device = $2 AND kind = $3)
                     RETURNING prekey",
                )
                .bind(phone)
                .bind(device)
                .bind(kind)
                .fetch_optional(p)
                .await
            }
            Backend::Postgres(p) => {
                sqlx::query_scalar(
                    "DELETE FROM prekeys WHERE phone = $1 AND device = $2 AND kind = $3
                       AND prekey_id = (SELECT prekey_id FROM prekeys
                           WHERE phone = $1 AND device = $2 AND kind = $3
                           ORDER BY prekey_id LIMIT 1 FOR UPDATE SKIP LOCKED)
                     RETURNING prekey",
                )
                .bind(phone)
                .bind(device)
                .bind(kind)
                .fetch_optional(p)
                .await
            }
        };
        self.wrote(claimed)
    }

    /// How many one-time prekeys of each kind a device has left.
    pub async fn prekey_pools(
        &self,
        phone: &PhoneNumber,
        device: u32,
    ) -> Result<PoolSizes, DbError> {
        let mut conn = self.pool.acquire().await?;
        let sizes = pool_sizes(&mut conn.conn(), phone, i64::from(device)).await;
        self.read(sizes)
    }
}

async fn publish_in(
    conn: &mut Conn<'_>,
    phone: &PhoneNumber,
    device: i64,
    prekeys: &[NewPrekey],
    limits: PoolLimits,
    now: Millis,
) -> Result<Option<PoolSizes>, DbError> {
    let listed: Option<i64> = on_backend!(conn.reborrow(), c => sqlx::query_scalar(
        "SELECT device FROM devices WHERE phone = $1 AND device = $2",
    )
    .bind(phone)
    .bind(device)
    .fetch_optional(c)
    .await)?;
    if listed.is_none() {
        return Ok(None);
    }
    for prekey in prekeys {
        let kind = i64::from(prekey.kind);
        if matches!(prekey.kind, SIGNED | KEM_LAST_RESORT) {
            on_backend!(conn.reborrow(), c => sqlx::query(
                "DELETE FROM prekeys WHERE phone = $1 AND device = $2 AND kind = $3",
            )
            .bind(phone)
            .bind(device)
            .bind(kind)
            .execute(c)
            .await
            .map(drop))?;
        }
        on_backend!(conn.reborrow(), c => sqlx::query(
            "INSERT INTO prekeys (phone, device, kind, prekey_id, prekey, stored_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (phone, device, kind, prekey_id) DO NOTHING",
        )
        .bind(phone)
        .bind(device)
        .bind(kind)
        .bind(i64::from(prekey.id))
        .bind(&prekey.bytes)
        .bind(now)
        .execute(c)
        .await
        .map(drop))?;
    }
    for (kind, keep) in [
        (ONE_TIME, limits.one_time),
        (KEM_ONE_TIME, limits.kem_one_time),
    ] {
        on_backend!(conn.reborrow(), c => sqlx::query(
            "DELETE FROM prekeys WHERE phone = $1 AND device = $2 AND kind = $3
               AND prekey_id NOT IN (SELECT prekey_id FROM prekeys
                   WHERE phone = $1 AND device = $2 AND kind = $3
                   ORDER BY prekey_id DESC LIMIT $4)",
        )
        .bind(phone)
        .bind(device)
        .bind(i64::from(kind))
        .bind(i64::from(keep))
        .execute(c)
        .await
        .map(drop))?;
    }
    Ok(Some(pool_sizes(conn, phone, device).await?))
}

async fn pool_sizes(
    conn: &mut Conn<'_>,
    phone: &PhoneNumber,
    device: i64,
) -> Result<PoolSizes, DbError> {
    let rows: Vec<(i64, i64)> = on_backend!(conn.reborrow(), c => sqlx::query_as(
        "SELECT kind, count(*) FROM prekeys
         WHERE phone = $1 AND device = $2 AND kind IN (2, 4) GROUP BY kind",
    )
    .bind(phone)
    .bind(device)
    .fetch_all(c)
    .await)?;
    let mut sizes = PoolSizes::default();
    for (kind, n) in rows {
        match kind as u8 {
            ONE_TIME => sizes.one_time = n as u64,
            _ => sizes.kem_one_time = n as u64,
        }
    }
    Ok(sizes)
}
