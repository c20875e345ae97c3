//! The `otp_codes` and `otp_limits` tables. The rules (expiry, tries, rate
//! limits) live in `auth::otp`, which passes its limits in; each counter
//! changes in one statement that checks the limit and counts together, so
//! parallel requests (on one server or several sharing a database) can
//! never all pass a check that only some of them should.
//!
//! Codes and counters belong to a (phone, key) pair, and each statement
//! touches the rows of one pair: a stranger registering a phone with its
//! own key neither replaces the code pending for another key nor spends its
//! tries, and requests for different phones or keys never wait on the same
//! row.

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

/// Most codes pending for one phone that `verify` considers (the newest):
/// each costs a signature check there.
pub const MAX_PENDING_PER_PHONE: i64 = 64;

/// The per-(phone, key) counters that survive new codes.
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
    /// Codes a phone may be sent per window, whatever their keys.
    pub max_codes_per_phone: i64,
}

/// The key of the `otp_limits` row that counts a phone's codes for every
/// key together (no real key is empty).
const EVERY_KEY: &[u8] = &[];

impl Store {
    /// The codes pending for `phone`, one per key, newest first (at most
    /// [`MAX_PENDING_PER_PHONE`]).
    pub async fn otp_pending(&self, phone: &PhoneNumber) -> Result<Vec<PendingCode>, DbError> {
        let found = on_backend!(&self.pool, p => sqlx::query_as::<_, PendingCode>(
            "SELECT phone, code_hash, key_type, public_key, issued_at, expires_at
             FROM otp_codes WHERE phone = $1 ORDER BY issued_at DESC LIMIT $2",
        )
        .bind(phone)
        .bind(MAX_PENDING_PER_PHONE)
        .fetch_all(p)
        .await);
        self.read(found)
    }

    /// The code pending for `phone` and the key `spki`.
    pub async fn otp_pending_for(
        &self,
        phone: &PhoneNumber,
        spki: &[u8],
    ) -> Result<Option<PendingCode>, DbError> {
        let found = on_backend!(&self.pool, p => sqlx::query_as::<_, PendingCode>(
            "SELECT phone, code_hash, key_type, public_key, issued_at, expires_at
             FROM otp_codes WHERE phone = $1 AND public_key = $2",
        )
        .bind(phone)
        .bind(spki)
        .fetch_optional(p)
        .await);
        self.read(found)
    }

    /// The counters of (`phone`, `spki`) as stored (a window may have
    /// passed since).
    pub async fn otp_limits(
        &self,
        phone: &PhoneNumber,
        spki: &[u8],
    ) -> Result<Option<Limits>, DbError> {
        let found = on_backend!(&self.pool, p => sqlx::query_as::<_, Limits>(
            "SELECT window_start, codes_issued, wrong_tries FROM otp_limits
             WHERE phone = $1 AND public_key = $2",
        )
        .bind(phone)
        .bind(spki)
        .fetch_optional(p)
        .await);
        self.read(found)
    }

    /// Counts a new code for `code`'s phone and key and makes it the
    /// pending one of that pair, unless the pair has had `max_codes` codes or
    /// `max_tries` wrong tries in the current window, or the phone
    /// `max_codes_per_phone` codes for all its keys (a passed window starts
    /// afresh; the phone's count is taken first and stays taken). Returns the counters after the code was counted, or as they
    /// stand if it was not. Expired codes and passed counters of the phone's
    /// other keys are dropped on the way.
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

    /// Spends one of the tries of (`phone`, `spki`), before its code is
    /// compared, unless `max_tries` are spent in the current window. Returns
    /// the counters after, or `None` if no try was left. A right code clears
    /// them ([`Store::otp_register`]); a wrong one leaves its try spent.
    pub async fn otp_take_try(
        &self,
        phone: &PhoneNumber,
        spki: &[u8],
        limits: OtpLimits,
    ) -> Result<Option<Limits>, DbError> {
        let taken = on_backend!(&self.pool, p => sqlx::query_as::<_, Limits>(
            "INSERT INTO otp_limits (phone, public_key, window_start, codes_issued, wrong_tries)
             VALUES ($1, $5, $2, 0, 1)
             ON CONFLICT (phone, public_key) DO UPDATE SET
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
        .bind(spki)
        .fetch_optional(p)
        .await);
        self.wrote(taken)
    }

    /// Consumes the pending code for `user.phone` and its key, clears the
    /// counters of that key and the phone's count of codes, and
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
    drop_stale(conn, code, limits).await?;
    let every_key = OtpLimits {
        max_codes: limits.max_codes_per_phone,
        max_tries: i64::MAX,
        ..limits
    };
    if count_code(conn, &code.phone, EVERY_KEY, every_key)
        .await?
        .is_none()
    {
        return Ok(Err(limits_in(conn, &code.phone, EVERY_KEY).await?));
    }
    let key = &code.public_key;
    match count_code(conn, &code.phone, key, limits).await? {
        Some(l) => {
            store_pending(conn, code).await?;
            Ok(Ok(l))
        }
        None => Ok(Err(limits_in(conn, &code.phone, key).await?)),
    }
}

/// Drops what no request can use any more from the phone's other keys:
/// expired codes, and counters whose window has passed. This keeps the rows
/// of one phone bounded by what was issued within a window.
async fn drop_stale(conn: &mut Conn<'_>, code: &PendingCode, l: OtpLimits) -> Result<(), DbError> {
    on_backend!(conn.reborrow(), c => sqlx::query(
        "DELETE FROM otp_codes WHERE phone = $1 AND public_key <> $2 AND expires_at <= $3",
    )
    .bind(&code.phone)
    .bind(&code.public_key)
    .bind(l.now)
    .execute(c)
    .await
    .map(drop))?;
    on_backend!(conn.reborrow(), c => sqlx::query(
        "DELETE FROM otp_limits WHERE phone = $1 AND public_key <> $2 AND $3 - window_start >= $4",
    )
    .bind(&code.phone)
    .bind(&code.public_key)
    .bind(l.now)
    .bind(l.window_ms)
    .execute(c)
    .await
    .map(drop))?;
    Ok(())
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
    on_backend!(conn.reborrow(), c => sqlx::query(
        "DELETE FROM otp_limits WHERE phone = $1 AND public_key IN ($2, $3)",
    )
    .bind(&user.phone)
    .bind(&user.public_key)
    .bind(EVERY_KEY)
    .execute(c)
    .await
    .map(drop))?;
    let replaced = users::upsert(conn, user).await?;
    if replaced {
        devices::forget_all(conn, &user.phone).await?;
    }
    Ok(Some(replaced))
}

/// Counts a code for (`phone`, `key`) in one statement that also checks
/// the limits; `None` if they refused it.
async fn count_code(
    conn: &mut Conn<'_>,
    phone: &str,
    key: &[u8],
    l: OtpLimits,
) -> Result<Option<Limits>, DbError> {
    Ok(
        on_backend!(conn.reborrow(), c => sqlx::query_as::<_, Limits>(
        "INSERT INTO otp_limits (phone, public_key, window_start, codes_issued, wrong_tries)
         VALUES ($1, $6, $2, 1, 0)
         ON CONFLICT (phone, public_key) DO UPDATE SET
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
    .bind(key)
    .fetch_optional(c)
    .await)?,
    )
}

async fn limits_in(conn: &mut Conn<'_>, phone: &str, key: &[u8]) -> Result<Limits, DbError> {
    Ok(
        on_backend!(conn.reborrow(), c => sqlx::query_as::<_, Limits>(
        "SELECT window_start, codes_issued, wrong_tries FROM otp_limits
         WHERE phone = $1 AND public_key = $2",
    )
    .bind(phone)
    .bind(key)
    .fetch_one(c)
    .await)?,
    )
}

async fn store_pending(conn: &mut Conn<'_>, code: &PendingCode) -> Result<(), DbError> {
    on_backend!(conn.reborrow(), c => sqlx::query(
        "INSERT INTO otp_codes (phone, code_hash, key_type, public_key, issued_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (phone, public_key) DO UPDATE SET code_hash = excluded.code_hash,
             key_type = excluded.key_type,
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
