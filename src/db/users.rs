//! The `users` table: who is registered, with which public key.

use sqlx::SqlitePool;

use super::{DbError, Millis};

/// A registered user as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub phone: String,
    pub key_type: String,
    pub public_key: Vec<u8>,
    pub fingerprint: String,
    pub registered_at: Millis,
}

/// The user registered with `phone`, if any.
pub async fn find(pool: &SqlitePool, phone: &str) -> Result<Option<UserRow>, DbError> {
    Ok(sqlx::query_as::<_, UserRow>(
        "SELECT phone, key_type, public_key, fingerprint, registered_at FROM users WHERE phone = $1",
    )
    .bind(phone)
    .fetch_optional(pool)
    .await?)
}

/// Every registered user, for warming the in-memory directory at start.
pub async fn all(pool: &SqlitePool) -> Result<Vec<UserRow>, DbError> {
    Ok(sqlx::query_as::<_, UserRow>(
        "SELECT phone, key_type, public_key, fingerprint, registered_at FROM users ORDER BY phone",
    )
    .fetch_all(pool)
    .await?)
}

/// Inserts or replaces the user's key inside the caller's transaction.
/// Returns whether an existing, different key was replaced.
pub async fn upsert(conn: &mut sqlx::SqliteConnection, user: &UserRow) -> Result<bool, DbError> {
    let previous: Option<String> =
        sqlx::query_scalar("SELECT fingerprint FROM users WHERE phone = $1")
            .bind(&user.phone)
            .fetch_optional(&mut *conn)
            .await?;
    sqlx::query(
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
    .execute(&mut *conn)
    .await?;
    Ok(previous.is_some_and(|fp| fp != user.fingerprint))
}
