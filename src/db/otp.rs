//! The `otp_codes` and `otp_limits` tables. The rules (expiry, tries, rate
//! limits) live in `auth::otp`, which passes its limits in; each counter
//! changes in one statement that checks the limit and counts together, so
//! parallel requests (on one server or several sharing a database) can
//! never all pass a check that only some of them should.

use super::backend::{Conn, on_backend};
use super::devices;
use super::users::{self, UserRow};
use super::{DbError, Millis, Store};
use crate::domain::PhoneNumber;

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct Limits {
    pub window_start: Millis,
    pub codes_issued: i64,
    pub wrong_tries: i64,
}

/// The rate-limit window and the limits counted in it.
#[derive(Debug, Clone, Copy)]
pub struct OtpLimits {
    pub now: Millis,
    pub window_ms: i64,
    pub max_codes: i64,
    pub max_tries: i64,
}

impl Store {
    pub async fn otp_pending(&self, phone: &PhoneNumber) -> Result<Option<PendingCode>, DbError> {
        let found = on_backend!(&self.pool, p => sqlx::query_as::<_, PendingCode>(
            "SELECT phone, code_hash, key_type, public_key, issued_at, expires_at
             FROM otp_codes WHERE phone = $1",
        )
        .bind(phone)
        .fetch_optional(p)
        .await);
        self.read(found)
    }

    /// The phone's counters as stored (a window may have passed since).
    pub async fn otp_limits(&self, phone: &PhoneNumber) -> Result<Option<Limits>, DbError> {
        let found = on_backend!(&self.pool, p => sqlx::query_as::<_, Limits>(
            "SELECT window_start, codes_issued, wrong_tries FROM otp_limits WHERE phone = $1",
        )
        .bind(phone)
        .fetch_optional(p)
        .await);
        self.read(found)
    }

    /// Counts a new code for `code.phone` and makes it the pending one,
    /// unless the phone has had `max_codes` codes or `max_tries` wrong tries
    /// in the current window (a passed window starts afresh). Returns the
    /// counters after the code was counted, or as they stand if it was not.
    pub async fn otp_issue(
        &self,
        code: &PendingCode,
        limits: OtpLimits,
    ) -> Result<Result<Limits, Limits>, DbError> {
        let mut pooled = self.pool.acquire().await?;
        let mut tx = pooled.conn();
        let work = match tx.begin().await {
            Ok(()) => issue_in(&mut tx, code, limits).await,
            Err(e) => Err(e),
        };
        let (issued, fit) = tx.end(work).await;
        pooled.release(fit);
        self.wrote(issued)
    }

    /// Spends one of the phone's tries, before its code is compared, unless
    /// `max_tries` are spent in the current window. Returns the counters
    /// after, or `None` if no try was left. A right code clears them
    /// ([`Store::otp_register`]); a wrong one leaves its try spent.
    pub async fn otp_take_try(
        &self,
        phone: &PhoneNumber,
        limits: OtpLimits,
    ) -> Result<Option<Limits>, DbError> {
        let taken = on_backend!(&self.pool, p => sqlx::query_as::<_, Limits>(
            "INSERT INTO otp_limits (phone, window_start, codes_issued, wrong_tries)
             VALUES ($1, $2, 0, 1)
             ON CONFLICT (phone) DO UPDATE SET
                 window_start = CASE WHEN $2 - otp_limits.window_start >= $3
                     THEN $2 ELSE otp_limits.window_start END,
                 codes_issued = CASE WHEN $2 - otp_limits.window_start >= $3
                     THEN 0 ELSE otp_limits.codes_issued END,
                 wrong_tries = CASE WHEN $2 - otp_limits.window_start >= $3
                     THEN 1 ELSE otp_limits.wrong_tries + 1 END
             WHERE $2 - otp_limits.window_start >= $3 OR otp_limits.wrong_tries < $4
             RETURNING window_start, codes_issued, wrong_tries",
        )
        .bind(phone)
        .bind(limits.now)
        .bind(limits.window_ms)
        .bind(limits.max_tries)
        .fetch_optional(p)
        .await);
        self.wrote(taken)
    }

    /// Consumes the pending code for `user.phone`, clears its counters and
    /// registers the user's key, in one transaction; a replaced key takes
    /// the account's devices with it. Returns whether an
    /// existing, different key was replaced, or `None` (and changes
    /// nothing) if the pending code is no longer the one for this key.
    pub async fn otp_register(&self, user: &UserRow) -> Result<Option<bool>, DbError> {
        let mut pooled = self.pool.acquire().await?;
        let mut tx = pooled.conn();
        let work = match tx.begin().await {
            Ok(()) => register_in(&mut tx, user).await,
            Err(e) => Err(e),
        };
        let (registered, fit) = tx.end(work).await;
        pooled.release(fit);
        let registered = self.wrote(registered)?;
        if registered == Some(true)
            && let Ok(phone) = PhoneNumber::from_canonical(&user.phone)
        {
            // The old key's device queues went with it.
            self.recount(phone).await?;
        }
        Ok(registered)
    }
}

async fn issue_in(
    conn: &mut Conn<'_>,
    code: &PendingCode,
    limits: OtpLimits,
) -> Result<Result<Limits, Limits>, DbError> {
    let counted = count_code(conn, &code.phone, limits).await?;
    match counted {
        Some(l) => {
            store_pending(conn, code).await?;
            Ok(Ok(l))
        }
        None => Ok(Err(limits_in(conn, &code.phone).await?)),
    }
}

async fn register_in(conn: &mut Conn<'_>, user: &UserRow) -> Result<Option<bool>, DbError> {
    let consumed = on_backend!(conn.reborrow(), c => sqlx::query(
        "DELETE FROM otp_codes WHERE phone = $1 AND public_key = $2",
    )
    .bind(&user.phone)
    .bind(&user.public_key)
    .execute(c)
    .await
    .map(|done| done.rows_affected()))?;
    if consumed == 0 {
        return Ok(None);
    }
    on_backend!(conn.reborrow(), c => sqlx::query("DELETE FROM otp_limits WHERE phone = $1")
        .bind(&user.phone)
        .execute(c)
        .await
        .map(drop))?;
    let replaced = users::upsert(conn, user).await?;
    if replaced {
        devices::forget_all(conn, &user.phone).await?;
    }
    Ok(Some(replaced))
}

/// Counts a code in one statement that also checks the limits; `None` if
/// they refused it.
async fn count_code(
    conn: &mut Conn<'_>,
    phone: &str,
    l: OtpLimits,
) -> Result<Option<Limits>, DbError> {
    Ok(
        on_backend!(conn.reborrow(), c => sqlx::query_as::<_, Limits>(
        "INSERT INTO otp_limits (phone, window_start, codes_issued, wrong_tries)
         VALUES ($1, $2, 1, 0)
         ON CONFLICT (phone) DO UPDATE SET
             window_start = CASE WHEN $2 - otp_limits.window_start >= $3
                 THEN $2 ELSE otp_limits.window_start END,
             codes_issued = CASE WHEN $2 - otp_limits.window_start >= $3
                 THEN 1 ELSE otp_limits.codes_issued + 1 END,
             wrong_tries = CASE WHEN $2 - otp_limits.window_start >= $3
                 THEN 0 ELSE otp_limits.wrong_tries END
         WHERE $2 - otp_limits.window_start >= $3
             OR (otp_limits.codes_issued < $4 AND otp_limits.wrong_tries < $5)
         RETURNING window_start, codes_issued, wrong_tries",
    )
    .bind(phone)
    .bind(l.now)
    .bind(l.window_ms)
    .bind(l.max_codes)
    .bind(l.max_tries)
    .fetch_optional(c)
    .await)?,
    )
}

async fn limits_in(conn: &mut Conn<'_>, phone: &str) -> Result<Limits, DbError> {
    Ok(
        on_backend!(conn.reborrow(), c => sqlx::query_as::<_, Limits>(
        "SELECT window_start, codes_issued, wrong_tries FROM otp_limits WHERE phone = $1",
    )
    .bind(phone)
    .fetch_one(c)
    .await)?,
    )
}

async fn store_pending(conn: &mut Conn<'_>, code: &PendingCode) -> Result<(), DbError> {
    on_backend!(conn.reborrow(), c => sqlx::query(
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
    .execute(c)
    .await
    .map(|done| done.rows_affected()))?;
    Ok(())
}
