//! The `otp_codes` and `otp_limits` tables. The rules (expiry, tries, rate
//! limits) live in `auth::otp`; these functions only read and write rows.

use sqlx::SqliteConnection;

use super::{DbError, Millis};

/// The code pending for a phone.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PendingCode {
    pub phone: String,
    pub code_hash: String,
    pub key_type: String,
    pub public_key: Vec<u8>,
    pub issued_at: Millis,
    pub expires_at: Millis,
}

/// The per-phone counters that survive new codes.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct Limits {
    pub window_start: Millis,
    pub codes_issued: i64,
    pub wrong_tries: i64,
}

pub async fn pending(
    conn: &mut SqliteConnection,
    phone: &str,
) -> Result<Option<PendingCode>, DbError> {
    Ok(sqlx::query_as::<_, PendingCode>(
        "SELECT phone, code_hash, key_type, public_key, issued_at, expires_at
         FROM otp_codes WHERE phone = $1",
    )
    .bind(phone)
    .fetch_optional(conn)
    .await?)
}

pub async fn store_pending(conn: &mut SqliteConnection, code: &PendingCode) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO otp_codes (phone, code_hash, key_type, public_key, issued_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (phone) DO UPDATE SET code_hash = excluded.code_hash,
             key_type = excluded.key_type, public_key = excluded.public_key,
             issued_at = excluded.issued_at, expires_at = excluded.expires_at",
    )
    .bind(&code.phone)
    .bind(&code.code_hash)
    .bind(&code.key_type)
    .bind(&code.public_key)
    .bind(code.issued_at)
    .bind(code.expires_at)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn delete_pending(conn: &mut SqliteConnection, phone: &str) -> Result<(), DbError> {
    sqlx::query("DELETE FROM otp_codes WHERE phone = $1")
        .bind(phone)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn limits(conn: &mut SqliteConnection, phone: &str) -> Result<Option<Limits>, DbError> {
    Ok(sqlx::query_as::<_, Limits>(
        "SELECT window_start, codes_issued, wrong_tries FROM otp_limits WHERE phone = $1",
    )
    .bind(phone)
    .fetch_optional(conn)
    .await?)
}

pub async fn store_limits(
    conn: &mut SqliteConnection,
    phone: &str,
    l: Limits,
) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO otp_limits (phone, window_start, codes_issued, wrong_tries)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (phone) DO UPDATE SET window_start = excluded.window_start,
             codes_issued = excluded.codes_issued, wrong_tries = excluded.wrong_tries",
    )
    .bind(phone)
    .bind(l.window_start)
    .bind(l.codes_issued)
    .bind(l.wrong_tries)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn clear_limits(conn: &mut SqliteConnection, phone: &str) -> Result<(), DbError> {
    sqlx::query("DELETE FROM otp_limits WHERE phone = $1")
        .bind(phone)
        .execute(conn)
        .await?;
    Ok(())
}
