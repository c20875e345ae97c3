//! The `directory` table: every user of the neighbourhood as vouched for by
//! their home server, with the route to that server.

use super::backend::on_backend;
use super::{DbError, Millis, Store};

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

impl Store {
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

    pub async fn store_directory_entry(&self, row: &DirectoryRow) -> Result<(), DbError> {
        let done = on_backend!(&self.pool, p => sqlx::query(
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
        .execute(p)
        .await
        .map(|done| done.rows_affected()));
        self.wrote(done).map(drop)
    }
}
