//! The `users` table: who is registered, with which public key.

use super::backend::{Conn, on_backend};
use super::{DbError, Millis, Store};
use crate::domain::PhoneNumber;

/// A registered user as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct UserRow {
    pub phone: String,
    pub key_type: String,
    pub public_key: Vec<u8>,
    pub fingerprint: String,
    pub registered_at: Millis,
}

impl Store {
    /// The user registered with `phone`, if any.
    pub async fn user(&self, phone: &PhoneNumber) -> Result<Option<UserRow>, DbError> {
        let found = on_backend!(&self.pool, p => sqlx::query_as::<_, UserRow>(
            "SELECT phone, key_type, public_key, fingerprint, registered_at FROM users
             WHERE phone = $1",
        )
        .bind(phone)
        .fetch_optional(p)
        .await);
        self.read(found)
    }

    /// Every registered user, for warming the in-memory directory at start.
    pub async fn users(&self) -> Result<Vec<UserRow>, DbError> {
        let all = on_backend!(&self.pool, p => sqlx::query_as::<_, UserRow>(
            "SELECT phone, key_type, public_key, fingerprint, registered_at FROM users
             ORDER BY phone",
        )
        .fetch_all(p)
        .await);
        self.read(all)
    }
}

/// Inserts or replaces the user's key inside the caller's transaction.
/// Returns whether an existing, different key was replaced.
pub(super) async fn upsert(conn: &mut Conn<'_>, user: &UserRow) -> Result<bool, DbError> {
    let previous: Option<String> = on_backend!(conn.reborrow(), c => sqlx::query_scalar(
        "SELECT fingerprint FROM users WHERE phone = $1",
    )
    .bind(&user.phone)
    .fetch_optional(c)
    .await)?;
    on_backend!(conn.reborrow(), c => sqlx::query(
        "INSERT INTO users (phone, key_type, public_key, fingerprint, registered_at)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (phone) DO UPDATE SET key_type = excluded.key_type,
             public_key = excluded.public_key, fingerprint = excluded.fingerprint,
             registered_at = excluded.registered_at",
    )
    .bind(&user.phone)
    .bind(&user.key_type)
    .bind(&user.public_key)
    .bind(&user.fingerprint)
    .bind(user.registered_at)
    .execute(c)
    .await
    .map(|done| done.rows_affected()))?;
    Ok(previous.is_some_and(|fp| fp != user.fingerprint))
}
