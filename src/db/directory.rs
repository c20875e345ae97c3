//! The `directory` table: every user of the neighbourhood as vouched for by
//! their home server, with the route to that server; and the
//! `directory_withdrawals` table: the users their home server withdrew.

use super::backend::{Conn, on_backend};
use super::cluster::{Event, notify_in};
use super::{DbError, Millis, Store};
use crate::domain::PhoneNumber;

/// A directory row.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DirectoryRow {
    pub phone: String,
    pub key_type: String,
    pub public_key: Vec<u8>,
    pub home_key: Vec<u8>,
    pub home_name: String,
    pub registered_at: Millis,
    pub signature: Vec<u8>,
    /// The neighbour leading to the home server; `None` for our own users.
    pub via: Option<String>,
    pub hops: i64,
}

/// A withdrawal row: the registration of `phone` at `registered_at` on the
/// home server whose key is `home_key` is gone. Empty `home_key` and
/// `signature`: one of our own, not signed yet.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct WithdrawalRow {
    pub phone: String,
    pub registered_at: Millis,
    pub withdrawn_at: Millis,
    pub home_key: Vec<u8>,
    pub signature: Vec<u8>,
}

impl Store {
    /// Every withdrawal held, oldest first.
    pub async fn directory_withdrawals(&self) -> Result<Vec<WithdrawalRow>, DbError> {
        let all = on_backend!(&self.pool, p => sqlx::query_as::<_, WithdrawalRow>(
            "SELECT phone, registered_at, withdrawn_at, home_key, signature
             FROM directory_withdrawals ORDER BY withdrawn_at, phone",
        )
        .fetch_all(p)
        .await);
        self.read(all)
    }

    /// The withdrawal held for `phone`, if any.
    pub async fn directory_withdrawal(
        &self,
        phone: &str,
    ) -> Result<Option<WithdrawalRow>, DbError> {
        let row = on_backend!(&self.pool, p => sqlx::query_as::<_, WithdrawalRow>(
            "SELECT phone, registered_at, withdrawn_at, home_key, signature
             FROM directory_withdrawals WHERE phone = $1",
        )
        .bind(phone)
        .fetch_optional(p)
        .await);
        self.read(row)
    }

    /// Records a withdrawal (replacing an older one of the same phone) and,
    /// with `remove_entry`, the directory entry of the phone (which the
    /// caller found outranked by it).
    pub async fn store_withdrawal(
        &self,
        row: &WithdrawalRow,
        remove_entry: bool,
    ) -> Result<(), DbError> {
        let done = on_backend!(&self.pool, p => sqlx::query(
            "INSERT INTO directory_withdrawals (phone, registered_at, withdrawn_at, home_key,
                 signature)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (phone) DO UPDATE SET registered_at = excluded.registered_at,
                 withdrawn_at = excluded.withdrawn_at, home_key = excluded.home_key,
                 signature = excluded.signature",
        )
        .bind(&row.phone)
        .bind(row.registered_at)
        .bind(row.withdrawn_at)
        .bind(&row.home_key)
        .bind(&row.signature)
        .execute(p)
        .await
        .map(|done| done.rows_affected()));
        self.wrote(done)?;
        if !remove_entry {
            return Ok(());
        }
        let done = on_backend!(&self.pool, p => sqlx::query(
            "DELETE FROM directory WHERE phone = $1",
        )
        .bind(&row.phone)
        .execute(p)
        .await
        .map(|done| done.rows_affected()));
        self.wrote(done).map(drop)
    }

    /// Forgets the withdrawal of `phone` (a later registration outranks it).
    pub async fn delete_withdrawal(&self, phone: &str) -> Result<(), DbError> {
        let done = on_backend!(&self.pool, p => sqlx::query(
            "DELETE FROM directory_withdrawals WHERE phone = $1",
        )
        .bind(phone)
        .execute(p)
        .await
        .map(|done| done.rows_affected()));
        self.wrote(done).map(drop)
    }

    /// Forgets withdrawals made before `before`; returns how many.
    pub async fn expire_withdrawals(&self, before: Millis) -> Result<u64, DbError> {
        let done = on_backend!(&self.pool, p => sqlx::query(
            "DELETE FROM directory_withdrawals WHERE withdrawn_at < $1",
        )
        .bind(before)
        .execute(p)
        .await
        .map(|done| done.rows_affected()));
        self.wrote(done)
    }

    pub async fn directory(&self) -> Result<Vec<DirectoryRow>, DbError> {
        let all = on_backend!(&self.pool, p => sqlx::query_as::<_, DirectoryRow>(
            "SELECT phone, key_type, public_key, home_key, home_name, registered_at, signature,
                 via, hops
             FROM directory ORDER BY phone",
        )
        .fetch_all(p)
        .await);
        self.read(all)
    }

    /// One user's entry, if the directory has one.
    pub async fn directory_entry(&self, phone: &str) -> Result<Option<DirectoryRow>, DbError> {
        let row = on_backend!(&self.pool, p => sqlx::query_as::<_, DirectoryRow>(
            "SELECT phone, key_type, public_key, home_key, home_name, registered_at, signature,
                 via, hops
             FROM directory WHERE phone = $1",
        )
        .bind(phone)
        .fetch_optional(p)
        .await);
        self.read(row)
    }

    /// Stores (or replaces) one directory row.
    pub async fn store_directory_entry(&self, row: &DirectoryRow) -> Result<(), DbError> {
        self.store_directory_entries(std::slice::from_ref(row))
            .await
    }

    /// Stores directory rows in one transaction, with a notification to
    /// the other members of a cluster for each: a neighbour's directory
    /// arrives hundreds of entries a frame, and one commit each would cost
    /// a disk flush each.
    pub async fn store_directory_entries(&self, rows: &[DirectoryRow]) -> Result<(), DbError> {
        let mut pooled = self.pool.acquire().await?;
        let mut tx = pooled.conn();
        let work = match tx.begin().await {
            Ok(()) => self.store_rows_in(&mut tx, rows).await,
            Err(e) => Err(e),
        };
        let (stored, fit) = tx.end(work).await;
        pooled.release(fit);
        self.wrote(stored)
    }

    async fn store_rows_in(
        &self,
        conn: &mut Conn<'_>,
        rows: &[DirectoryRow],
    ) -> Result<(), DbError> {
        for row in rows {
            upsert_in(conn, row).await?;
        }
        let events: Vec<Event> = rows
            .iter()
            .filter_map(|r| PhoneNumber::from_canonical(&r.phone).ok())
            .map(Event::Directory)
            .collect();
        notify_in(conn, &self.membership, &events).await
    }
}

async fn upsert_in(conn: &mut Conn<'_>, row: &DirectoryRow) -> Result<(), DbError> {
    on_backend!(conn.reborrow(), c => sqlx::query(
        "INSERT INTO directory (phone, key_type, public_key, home_key, home_name,
             registered_at, signature, via, hops)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (phone) DO UPDATE SET key_type = excluded.key_type,
             public_key = excluded.public_key, home_key = excluded.home_key,
             home_name = excluded.home_name, registered_at = excluded.registered_at,
             signature = excluded.signature, via = excluded.via, hops = excluded.hops",
    )
    .bind(&row.phone)
    .bind(&row.key_type)
    .bind(&row.public_key)
    .bind(&row.home_key)
    .bind(&row.home_name)
    .bind(row.registered_at)
    .bind(&row.signature)
    .bind(&row.via)
    .bind(row.hops)
    .execute(c)
    .await
    .map(drop))?;
    Ok(())
}
