//! What `carrier-server admin` reads and changes: users (delete, disable),
//! pending codes, queues, outbound queues and neighbour pins, and an online
//! SQLite backup. Each change is one statement or one transaction.

use std::path::Path;

use super::backend::{Backend, Conn, on_backend};
use super::queue::QueueRef;
use super::{DbError, Millis, Store};
use crate::domain::{MessageId, PhoneNumber};

/// Messages waiting in one queue (a recipient's, or a neighbour's).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize, serde::Deserialize)]
pub struct QueueDepth {
    /// The recipient's phone, or the neighbour's fingerprint.
    pub owner: String,
    pub messages: i64,
    pub bytes: i64,
    /// When the oldest message arrived (ms since the epoch).
    pub oldest_at: Millis,
}

/// A neighbour key pinned on first contact.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize, serde::Deserialize)]
pub struct Pin {
    pub address: String,
    pub fingerprint: String,
}

/// The tables a user's own rows live in, cleared when the user is deleted.
const USER_TABLES: &[&str] = &[
    "DELETE FROM message_queue WHERE recipient = $1",
    "DELETE FROM device_lists WHERE phone = $1",
    "DELETE FROM devices WHERE phone = $1",
    "DELETE FROM prekeys WHERE phone = $1",
    "DELETE FROM otp_codes WHERE phone = $1",
    "DELETE FROM otp_limits WHERE phone = $1",
    "DELETE FROM otp_address_limits WHERE phone = $1",
    "DELETE FROM disabled_users WHERE phone = $1",
    "DELETE FROM directory WHERE phone = $1 AND via IS NULL",
    "DELETE FROM users WHERE phone = $1",
];

impl Store {
    /// Whether an operator has disabled `phone`.
    pub async fn is_disabled(&self, phone: &PhoneNumber) -> Result<bool, DbError> {
        let found: Result<Option<i64>, _> = on_backend!(&self.pool, p => sqlx::query_scalar(
            "SELECT disabled_at FROM disabled_users WHERE phone = $1",
        )
        .bind(phone)
        .fetch_optional(p)
        .await);
        Ok(self.read(found)?.is_some())
    }

    /// Every disabled phone.
    pub async fn disabled_users(&self) -> Result<Vec<String>, DbError> {
        let all = on_backend!(&self.pool, p => sqlx::query_scalar(
            "SELECT phone FROM disabled_users ORDER BY phone",
        )
        .fetch_all(p)
        .await);
        self.read(all)
    }

    /// Disables (or enables again) `phone`; returns whether that changed
    /// anything.
    pub async fn set_disabled(
        &self,
        phone: &PhoneNumber,
        disabled: bool,
        now: Millis,
    ) -> Result<bool, DbError> {
        let done = if disabled {
            on_backend!(&self.pool, p => sqlx::query(
                "INSERT INTO disabled_users (phone, disabled_at) VALUES ($1, $2)
                 ON CONFLICT (phone) DO NOTHING",
            )
            .bind(phone)
            .bind(now)
            .execute(p)
            .await
            .map(|d| d.rows_affected()))
        } else {
            on_backend!(&self.pool, p => sqlx::query("DELETE FROM disabled_users WHERE phone = $1")
            .bind(phone)
            .execute(p)
            .await
            .map(|d| d.rows_affected()))
        };
        Ok(self.wrote(done)? > 0)
    }

    /// Removes the user, their queues (every device's, through the queue
    /// writer), then their devices, device list, prekeys, pending code,
    /// counters and their own directory entry in one transaction. Returns whether they existed.
    pub async fn delete_user(&self, phone: &PhoneNumber) -> Result<bool, DbError> {
        self.purge_queue(phone).await?;
        let mut pooled = self.pool.acquire().await?;
        let mut tx = pooled.conn();
        let work = match tx.begin().await {
            Ok(()) => delete_in(&mut tx, phone).await,
            Err(e) => Err(e),
        };
        let (deleted, fit) = tx.end(work).await;
        pooled.release(fit);
        self.wrote(deleted)
    }

    /// Forgets the pending code and the code counters of `phone`, so they
    /// may ask for a code at once. Returns the rows removed.
    pub async fn otp_reset(&self, phone: &PhoneNumber) -> Result<u64, DbError> {
        let mut removed = 0;
        for sql in [
            "DELETE FROM otp_codes WHERE phone = $1",
            "DELETE FROM otp_limits WHERE phone = $1",
            "DELETE FROM otp_address_limits WHERE phone = $1",
        ] {
            let done = on_backend!(&self.pool, p => sqlx::query(sql)
                .bind(phone)
                .execute(p)
                .await
                .map(|d| d.rows_affected()));
            removed += self.wrote(done)?;
        }
        Ok(removed)
    }

    /// Every recipient's queue, deepest first.
    pub async fn queue_depths(&self) -> Result<Vec<QueueDepth>, DbError> {
        let rows = on_backend!(&self.pool, p => sqlx::query_as::<_, QueueDepth>(
            "SELECT recipient AS owner, COUNT(*) AS messages,
                    CAST(SUM(LENGTH(envelope)) AS BIGINT) AS bytes,
                    MIN(received_at) AS oldest_at
             FROM message_queue GROUP BY recipient ORDER BY messages DESC, owner",
        )
        .fetch_all(p)
        .await);
        self.read(rows)
    }

    /// Every neighbour's outbound queue, by the neighbour's fingerprint.
    pub async fn outbound_depths(&self) -> Result<Vec<QueueDepth>, DbError> {
        let rows = on_backend!(&self.pool, p => sqlx::query_as::<_, QueueDepth>(
            "SELECT neighbour AS owner, COUNT(*) AS messages,
                    CAST(SUM(LENGTH(envelope)) AS BIGINT) AS bytes,
                    MIN(received_at) AS oldest_at
             FROM outbound_queue GROUP BY neighbour ORDER BY owner",
        )
        .fetch_all(p)
        .await);
        self.read(rows)
    }

    /// Deletes every message waiting for `phone`, on every device; returns
    /// how many. The deletes go through the queue writer, whose quota
    /// counts stay true.
    pub async fn purge_queue(&self, phone: &PhoneNumber) -> Result<u64, DbError> {
        let devices: Result<Vec<i64>, _> = on_backend!(&self.pool, p => sqlx::query_scalar(
            "SELECT DISTINCT device FROM message_queue WHERE recipient = $1 ORDER BY device",
        )
        .bind(phone)
        .fetch_all(p)
        .await);
        let mut purged = 0;
        for device in self.read(devices)? {
            let queue = match u32::try_from(device) {
                Ok(0) | Err(_) => QueueRef::Recipient(phone.clone()),
                Ok(d) => QueueRef::Device(phone.clone(), d),
            };
            purged += self.purge_device(phone, queue, device).await?;
        }
        Ok(purged)
    }

    /// Deletes the messages queued for one `device` of `phone` through the
    /// queue writer, a batch at a time.
    async fn purge_device(
        &self,
        phone: &PhoneNumber,
        queue: QueueRef,
        device: i64,
    ) -> Result<u64, DbError> {
        let mut purged = 0;
        loop {
            let ids: Result<Vec<Vec<u8>>, _> = on_backend!(&self.pool, p => sqlx::query_scalar(
                "SELECT id FROM message_queue WHERE recipient = $1 AND device = $2
                 ORDER BY seq LIMIT 500",
            )
            .bind(phone)
            .bind(device)
            .fetch_all(p)
            .await);
            let ids: Vec<MessageId> = self
                .read(ids)?
                .iter()
                .filter_map(|id| MessageId::from_slice(id))
                .collect();
            if ids.is_empty() {
                return Ok(purged);
            }
            let deleted = self.delete(queue.clone(), ids).await?;
            if deleted == 0 {
                return Ok(purged);
            }
            purged += deleted;
        }
    }

    pub async fn pins(&self) -> Result<Vec<Pin>, DbError> {
        let rows = on_backend!(&self.pool, p => sqlx::query_as::<_, Pin>(
            "SELECT address, fingerprint FROM neighbour_pins ORDER BY address",
        )
        .fetch_all(p)
        .await);
        self.read(rows)
    }

    /// Forgets the key pinned for `address`; the next contact pins anew.
    pub async fn forget_pin(&self, address: &str) -> Result<bool, DbError> {
        let done = on_backend!(&self.pool, p => sqlx::query(
            "DELETE FROM neighbour_pins WHERE address = $1",
        )
        .bind(address)
        .execute(p)
        .await
        .map(|d| d.rows_affected()));
        Ok(self.wrote(done)? > 0)
    }

    /// Whether the database takes a write transaction now (`/readyz`).
    pub async fn probe_write(&self) -> Result<(), DbError> {
        let mut pooled = self.pool.acquire().await?;
        let mut tx = pooled.conn();
        let work = match tx.begin().await {
            Ok(()) => on_backend!(tx.reborrow(), c => sqlx::query(
                "DELETE FROM disabled_users WHERE phone = ''",
            )
            .execute(c)
            .await
            .map(drop))
            .map_err(DbError::from),
            Err(e) => Err(e),
        };
        let (probed, fit) = tx.end(work).await;
        pooled.release(fit);
        self.wrote(probed)
    }

    /// Writes a consistent copy of an SQLite database to `to` while it is
    /// in use (`VACUUM INTO`). Returns `false` on PostgreSQL, which is
    /// backed up with its own tools.
    pub async fn backup_into(&self, to: &Path) -> Result<bool, DbError> {
        let Backend::Sqlite(pool) = &self.pool else {
            return Ok(false);
        };
        let done = sqlx::query("VACUUM INTO $1")
            .bind(to.to_string_lossy().into_owned())
            .execute(pool)
            .await
            .map(drop);
        self.read(done)?;
        Ok(true)
    }
}

async fn delete_in(conn: &mut Conn<'_>, phone: &PhoneNumber) -> Result<bool, DbError> {
    let mut existed = false;
    for &sql in USER_TABLES {
        let done = on_backend!(conn.reborrow(), c => sqlx::query(sql)
            .bind(phone)
            .execute(c)
            .await
            .map(|d| d.rows_affected()))?;
        existed = done > 0;
    }
    Ok(existed)
}
