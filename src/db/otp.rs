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
//! row. Codes are also counted per (phone, client address), in
//! `otp_address_limits`, and per phone: a code is issued only if all three
//! counts have room, and a refused request counts nowhere.

use super::backend::{Backend, Conn, on_backend};
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
    /// The client address that asked for it, as
    /// [`ClientPrefix`](crate::domain::ClientPrefix) writes it.
    pub address: String,
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
    /// Codes a phone may be sent per window at the request of one client
    /// address, whatever their keys.
    pub max_codes_per_address: i64,
    /// Codes a phone may be sent per window, whatever their keys and
    /// addresses.
    pub max_codes_per_phone: i64,
}

/// Which count refused a code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cap {
    /// The (phone, key) pair's codes or wrong tries.
    Key,
    /// The codes asked for the phone from the requester's address.
    Address,
    /// The phone's codes for every key and address together.
    Phone,
}

/// A code refused: by which count, and that count as it stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub by: Cap,
    pub limits: Limits,
}

/// The key of the `otp_limits` row that counts a phone's codes for every
/// key together (no real key is empty).
const EVERY_KEY: &[u8] = &[];

impl Store {
    /// The codes pending for `phone`, one per key, newest first (at most
    /// [`MAX_PENDING_PER_PHONE`]).
    pub async fn otp_pending(&self, phone: &PhoneNumber) -> Result<Vec<PendingCode>, DbError> {
        let found = on_backend!(&self.pool, p => sqlx::query_as::<_, PendingCode>(
            "SELECT phone, code_hash, key_type, public_key, issued_at, expires_at, address
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
            "SELECT phone, code_hash, key_type, public_key, issued_at, expires_at, address
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

    /// Counts a new code for `code`'s phone, key and address and makes it
    /// the pending one of its (phone, key) pair, unless the pair has had
    /// `max_codes` codes or `max_tries` wrong tries in the current window,
    /// the phone `max_codes_per_address` codes asked from that address, or
    /// `max_codes_per_phone` codes in all (a passed window starts afresh).
    /// Returns the pair's counters after the code was counted, or the count
    /// that refused it as it stands; a refusal takes none of the three
    /// counts. Expired codes and passed counters of the phone's other keys
    /// and addresses are dropped on the way.
    pub async fn otp_issue(
        &self,
        code: &PendingCode,
        limits: OtpLimits,
    ) -> Result<Result<Limits, Refused>, DbError> {
        let mut pooled = self.pool.acquire().await?;
        let mut tx = pooled.conn();
        let work = match tx.begin().await {
            Ok(()) => issue_in(&mut tx, code, limits).await,
            Err(e) => Err(e),
        };
        let (issued, fit) = match work {
            // Counts taken before the refusing one are given back.
            Ok(Err(refused)) => (Ok(Err(refused)), tx.abandon().await),
            work => tx.end(work).await,
        };
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

    /// Ends the code pending for (`phone`, `spki`) at `until` (not later
    /// than it would anyway) if it is still the one hashed as `code_hash`,
    /// once its last try is spent: the count of tries restarts when its
    /// window passes, and a code that outlived the window would otherwise
    /// get them afresh. The row stays rather than going: `verify` finds the
    /// key a proof is for among the pending codes, and without it could not
    /// say `code_dead` to that key for the rest of the window. A newer code
    /// is left alone. Returns whether a code was ended.
    pub async fn otp_expire_code(
        &self,
        phone: &PhoneNumber,
        spki: &[u8],
        code_hash: &str,
        until: Millis,
    ) -> Result<bool, DbError> {
        let ended = on_backend!(&self.pool, p => sqlx::query(
            "UPDATE otp_codes SET expires_at = $4
             WHERE phone = $1 AND public_key = $2 AND code_hash = $3 AND expires_at > $4",
        )
        .bind(phone)
        .bind(spki)
        .bind(code_hash)
        .bind(until)
        .execute(p)
        .await
        .map(|done| done.rows_affected() > 0));
        self.wrote(ended)
    }

    /// Consumes the pending code for `user.phone` and its key, clears the
    /// counters of that key, of the address that asked for the code, and
    /// the phone's count of codes, and
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

/// Takes the three counts, narrowest first, so a refusal names the count
/// that concerns the requester most; the caller rolls back a refusal.
async fn issue_in(
    conn: &mut Conn<'_>,
    code: &PendingCode,
    limits: OtpLimits,
) -> Result<Result<Limits, Refused>, DbError> {
    take_phone(conn, &code.phone).await?;
    drop_stale(conn, code, limits).await?;
    let (phone, key) = (&code.phone, &code.public_key);
    let Some(counted) = count_code(conn, phone, key, limits).await? else {
        let limits = limits_in(conn, phone, key).await?;
        return Ok(Err(Refused {
            by: Cap::Key,
            limits,
        }));
    };
    if count_address(conn, code, limits).await?.is_none() {
        let limits = address_limits_in(conn, code).await?;
        return Ok(Err(Refused {
            by: Cap::Address,
            limits,
        }));
    }
    let every_key = OtpLimits {
        max_codes: limits.max_codes_per_phone,
        max_tries: i64::MAX,
        ..limits
    };
    if count_code(conn, phone, EVERY_KEY, every_key)
        .await?
        .is_none()
    {
        let limits = limits_in(conn, phone, EVERY_KEY).await?;
        return Ok(Err(Refused {
            by: Cap::Phone,
            limits,
        }));
    }
    store_pending(conn, code).await?;
    Ok(Ok(counted))
}

/// Drops what no request can use any more from the phone's other keys and
/// addresses: expired codes, and counters whose window has passed. This
/// keeps the rows of one phone bounded by what was issued within a window.
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
    on_backend!(conn.reborrow(), c => sqlx::query(
        "DELETE FROM otp_address_limits
         WHERE phone = $1 AND address <> $2 AND $3 - window_start >= $4",
    )
    .bind(&code.phone)
    .bind(&code.address)
    .bind(l.now)
    .bind(l.window_ms)
    .execute(c)
    .await
    .map(drop))?;
    Ok(())
}

/// Makes the transactions that change one phone's codes and counts take
/// turns, until this one ends.
///
/// Each of them touches several rows of the phone (its key's counts, its
/// address's, the phone's, and on the way the stale rows of other keys and
/// addresses, which another request may be counting afresh at that
/// moment), in an order that depends on what is stale. Two of them
/// in parallel could each hold a row the other needs next, and PostgreSQL
/// would end one with a deadlock error. A transaction-scoped advisory lock
/// per phone, taken first, lets them run one after the other (requests for
/// other phones do not wait). SQLite runs one write transaction at a time
/// already.
async fn take_phone(conn: &mut Conn<'_>, phone: &str) -> Result<(), DbError> {
    if let Backend::Postgres(c) = conn.reborrow() {
        sqlx::query(
            "SELECT pg_advisory_xact_lock(hashtext('otp ' || current_schema()), hashtext($1))",
        )
        .bind(phone)
        .execute(c)
        .await?;
    }
    Ok(())
}

async fn register_in(conn: &mut Conn<'_>, user: &UserRow) -> Result<Option<bool>, DbError> {
    take_phone(conn, &user.phone).await?;
    let consumed: Option<String> = on_backend!(conn.reborrow(), c => sqlx::query_scalar(
        "DELETE FROM otp_codes WHERE phone = $1 AND public_key = $2 RETURNING address",
    )
    .bind(&user.phone)
    .bind(&user.public_key)
    .fetch_optional(c)
    .await)?;
    let Some(address) = consumed else {
        return Ok(None);
    };
    // The owner's address starts afresh; a stranger's keeps its count.
    on_backend!(conn.reborrow(), c => sqlx::query(
        "DELETE FROM otp_address_limits WHERE phone = $1 AND address = $2",
    )
    .bind(&user.phone)
    .bind(&address)
    .execute(c)
    .await
    .map(drop))?;
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

/// Counts a code for (phone, address) of `code` in one statement that also
/// checks the limit; `None` if it refused it.
async fn count_address(
    conn: &mut Conn<'_>,
    code: &PendingCode,
    l: OtpLimits,
) -> Result<Option<i64>, DbError> {
    Ok(
        on_backend!(conn.reborrow(), c => sqlx::query_scalar::<_, i64>(
        "INSERT INTO otp_address_limits (phone, address, window_start, codes_issued)
         VALUES ($1, $2, $3, 1)
         ON CONFLICT (phone, address) DO UPDATE SET
             window_start = CASE WHEN $3 - otp_address_limits.window_start >= $4
                 THEN $3 ELSE otp_address_limits.window_start END,
             codes_issued = CASE WHEN $3 - otp_address_limits.window_start >= $4
                 THEN 1 ELSE otp_address_limits.codes_issued + 1 END
         WHERE $3 - otp_address_limits.window_start >= $4
             OR otp_address_limits.codes_issued < $5
         RETURNING codes_issued",
    )
    .bind(&code.phone)
    .bind(&code.address)
    .bind(l.now)
    .bind(l.window_ms)
    .bind(l.max_codes_per_address)
    .fetch_optional(c)
    .await)?,
    )
}

async fn address_limits_in(conn: &mut Conn<'_>, code: &PendingCode) -> Result<Limits, DbError> {
    Ok(
        on_backend!(conn.reborrow(), c => sqlx::query_as::<_, Limits>(
        "SELECT window_start, codes_issued, CAST(0 AS BIGINT) AS wrong_tries
         FROM otp_address_limits WHERE phone = $1 AND address = $2",
    )
    .bind(&code.phone)
    .bind(&code.address)
    .fetch_one(c)
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
        "INSERT INTO otp_codes
             (phone, code_hash, key_type, public_key, issued_at, expires_at, address)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (phone, public_key) DO UPDATE SET code_hash = excluded.code_hash,
             key_type = excluded.key_type, issued_at = excluded.issued_at,
             expires_at = excluded.expires_at, address = excluded.address",
    )
    .bind(&code.phone)
    .bind(&code.code_hash)
    .bind(&code.key_type)
    .bind(&code.public_key)
    .bind(code.issued_at)
    .bind(code.expires_at)
    .bind(&code.address)
    .execute(c)
    .await
    .map(|done| done.rows_affected()))?;
    Ok(())
}
