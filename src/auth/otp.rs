//! The one-time-code life cycle: issue (rate-limited), deliver, and redeem
//! (an HMAC compared in constant time, a bounded number of wrong tries,
//! expiry). Counters live in the database so a restart resets nothing; a
//! new code never resets the count of wrong tries.
//!
//! Codes, tries and code counts belong to a (phone, key) pair: anyone may
//! ask for a code for any phone, so a stranger's `register` must neither
//! replace the code pending for the owner's key nor spend its tries (which
//! would lock the owner out). A stranger who guesses gains nothing from
//! the owner's code either: a code registers only the key it was issued
//! for. What bounds how many keys one client can try is the rate of
//! `register` per address, checked before anything else.
//!
//! A phone's codes are also counted per client address (an IPv4 address or
//! IPv6 /64) and in all. The count per address keeps a stranger from
//! spending the phone's whole allowance: from one address it can take only
//! a share, and the owner, asking from another, still gets codes. The count
//! in all bounds what the phone can be made to receive (SMS cost) and the
//! guesses made at its codes; it is set above what one address may take, so
//! only someone asking from several addresses can reach it.
//!
//! Codes are stored as HMAC-SHA256 under the server's [`CodeKey`], not as
//! argon2 hashes: a code is useless without the private key of the key it
//! registers (`verify` must prove it), so a slow hash protected nothing
//! worth its cost, while hashing before the limits were checked let a flood
//! of `register` occupy the server. An HMAC costs microseconds.

use zeroize::Zeroizing;

use super::code_key::CodeKey;
use super::code_sink::CodeSink;
use crate::clock::Clock;
use crate::db::otp::{Cap, Limits, OtpLimits, PendingCode, Refused};
use crate::db::users::UserRow;
use crate::db::{DbError, Store};
use crate::domain::{ClientPrefix, Fingerprint, PhoneNumber};
use crate::protocol::{ErrorCode, KeyType};

/// How many keys' worth of codes (`max_codes` each) one client address may
/// have a phone sent per window, by default: a few people behind one
/// address, or one person trying again with a new key, still get theirs.
pub const KEYS_PER_ADDRESS: u32 = 4;

/// How many addresses' worth of codes a phone may be sent per window in
/// all, by default. Above one, so one address alone never reaches it; three
/// keeps the guesses at one phone's codes where they were when the phone
/// was counted alone at four keys' worth (12 keys of 5 tries an hour).
pub const ADDRESSES_PER_PHONE: u32 = 3;

/// Limits applied to one-time codes.
#[derive(Debug, Clone, Copy)]
pub struct OtpPolicy {
    /// How long a code stays valid.
    pub ttl_ms: i64,
    /// Wrong tries allowed before the code (and new ones, until the window
    /// ends) are dead.
    pub max_tries: u32,
    /// Codes a phone may be sent per window for one key.
    pub max_codes: u32,
    /// Codes a phone may be sent per window at the request of one client
    /// address, for all keys.
    pub max_codes_per_address: u32,
    /// Codes a phone may be sent per window in all; more than
    /// `max_codes_per_address`, so no one address can take them all.
    pub max_codes_per_phone: u32,
    /// The rate-limit window.
    pub window_ms: i64,
}

impl OtpPolicy {
    /// The default counts per address and per phone for `max_codes` codes
    /// per key: [`KEYS_PER_ADDRESS`] keys' worth, and
    /// [`ADDRESSES_PER_PHONE`] addresses' worth of that.
    pub fn default_caps(max_codes: u32) -> (u32, u32) {
        let per_address = max_codes.saturating_mul(KEYS_PER_ADDRESS);
        (per_address, per_address.saturating_mul(ADDRESSES_PER_PHONE))
    }
}

impl Default for OtpPolicy {
    fn default() -> Self {
        let max_codes = 3;
        let (max_codes_per_address, max_codes_per_phone) = Self::default_caps(max_codes);
        Self {
            ttl_ms: 5 * 60_000,
            max_tries: 5,
            max_codes,
            max_codes_per_address,
            max_codes_per_phone,
            window_ms: 60 * 60_000,
        }
    }
}

/// Why a code was not issued or not accepted.
#[derive(Debug, thiserror::Error)]
pub enum OtpError {
    #[error(
        "too many codes requested for this phone; try again in {retry_in_s} {}",
        seconds(*retry_in_s)
    )]
    RateLimited { retry_in_s: i64 },
    #[error(
        "too many codes requested for this phone from your address; \
         try again in {retry_in_s} {}",
        seconds(*retry_in_s)
    )]
    AddressLimited { retry_in_s: i64 },
    #[error(
        "this phone has been sent as many codes as it may be for now; \
         try again in {retry_in_s} {}",
        seconds(*retry_in_s)
    )]
    PhoneLimited { retry_in_s: i64 },
    #[error("no code is pending for this phone: register first")]
    NoPendingCode,
    #[error("the code has expired: register again to get a new one")]
    Expired,
    /// A wrong code with tries still left for it (never 0: see `Spent`).
    #[error("wrong code; {remaining} {} left", tries(*remaining))]
    Wrong { remaining: u32 },
    /// A wrong code that spent the last try: the code is ended, and no
    /// new one is issued for the key until the window ends, so the answer
    /// says when registering again can work.
    #[error(
        "wrong code; no tries left; register again in {retry_in_s} {}",
        seconds(*retry_in_s)
    )]
    Spent { retry_in_s: i64 },
    /// The key's tries are spent for this window, so neither `verify` nor
    /// `register` can do anything for it until the window ends.
    #[error(
        "too many wrong codes; try again in {retry_in_s} {}",
        seconds(*retry_in_s)
    )]
    Dead { retry_in_s: i64 },
    #[error("a code is 6 digits")]
    Malformed,
    #[error("the code could not be delivered: {0}")]
    Delivery(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl OtpError {
    /// The stable code a client is told. A failure inside the server is
    /// `internal`: the client learns no more, the log gets the cause.
    pub fn code(&self) -> ErrorCode {
        match self {
            OtpError::RateLimited { .. }
            | OtpError::AddressLimited { .. }
            | OtpError::PhoneLimited { .. } => ErrorCode::RateLimited,
            OtpError::NoPendingCode => ErrorCode::NoPendingCode,
            OtpError::Expired => ErrorCode::CodeExpired,
            OtpError::Wrong { .. } | OtpError::Spent { .. } | OtpError::Malformed => {
                ErrorCode::WrongCode
            }
            OtpError::Dead { .. } => ErrorCode::CodeDead,
            OtpError::Delivery(_) => ErrorCode::Internal,
            OtpError::Db(e) => e.code(),
        }
    }

    /// When a refusal holds only for now: in how many milliseconds to retry
    /// (for `Spent` and `Dead`, to `register` again), so a client can say
    /// when without reading the message.
    pub fn retry_after_ms(&self) -> Option<u64> {
        match self {
            OtpError::RateLimited { retry_in_s }
            | OtpError::AddressLimited { retry_in_s }
            | OtpError::PhoneLimited { retry_in_s }
            | OtpError::Spent { retry_in_s }
            | OtpError::Dead { retry_in_s } => Some(u64::try_from(*retry_in_s).unwrap_or(0) * 1000),
            _ => None,
        }
    }

    /// For a wrong code that spent a try: how many the code has left, so a
    /// client can stop asking for it at 0 without reading the message.
    pub fn tries_left(&self) -> Option<u32> {
        match self {
            OtpError::Wrong { remaining } => Some(*remaining),
            OtpError::Spent { .. } => Some(0),
            _ => None,
        }
    }
}

/// "try" or "tries", as `n` takes.
fn tries(n: u32) -> &'static str {
    if n == 1 { "try" } else { "tries" }
}

/// "second" or "seconds", as `n` takes: a wait rounded up can be 1 second.
fn seconds(n: i64) -> &'static str {
    if n == 1 { "second" } else { "seconds" }
}

/// The key a pending code will register.
#[derive(Debug, Clone)]
pub struct PendingKey {
    pub key_type: KeyType,
    pub spki: Vec<u8>,
}

/// Issues and redeems one-time codes.
pub struct Otp {
    store: Store,
    policy: OtpPolicy,
    clock: Clock,
    /// Replaceable while running, so a reloaded delivery applies to the
    /// next code.
    sink: std::sync::RwLock<CodeSink>,
    key: CodeKey,
}

impl Otp {
    pub fn new(
        store: Store,
        policy: OtpPolicy,
        clock: Clock,
        sink: CodeSink,
        key: CodeKey,
    ) -> Self {
        Self {
            store,
            policy,
            clock,
            sink: std::sync::RwLock::new(sink),
            key,
        }
    }

    /// Delivers the codes issued from now on through `sink`.
    pub fn set_sink(&self, sink: CodeSink) {
        *self.sink.write().unwrap_or_else(|p| p.into_inner()) = sink;
    }

    /// The window and limits as storage checks them at `now`.
    fn limits(&self, now: i64) -> OtpLimits {
        OtpLimits {
            now,
            window_ms: self.policy.window_ms,
            max_codes: i64::from(self.policy.max_codes),
            max_tries: i64::from(self.policy.max_tries),
            max_codes_per_address: i64::from(self.policy.max_codes_per_address),
            max_codes_per_phone: i64::from(self.policy.max_codes_per_phone),
        }
    }

    /// Seconds until the window that `limits` count in ends.
    fn retry_in_s(&self, limits: &Limits, now: i64) -> i64 {
        (limits.window_start + self.policy.window_ms - now).max(0) / 1000 + 1
    }

    /// Why a pair with these counters gets no new code now, if it does not.
    fn refusal(&self, limits: &Limits, now: i64) -> Option<OtpError> {
        if now - limits.window_start >= self.policy.window_ms {
            return None;
        }
        let retry_in_s = self.retry_in_s(limits, now);
        if limits.wrong_tries >= i64::from(self.policy.max_tries) {
            Some(OtpError::Dead { retry_in_s })
        } else if limits.codes_issued >= i64::from(self.policy.max_codes) {
            Some(OtpError::RateLimited { retry_in_s })
        } else {
            None
        }
    }

    /// Why the count `refused` names refuses a code at `now`.
    fn refused(&self, refused: &Refused, now: i64) -> OtpError {
        let retry_in_s = self.retry_in_s(&refused.limits, now);
        match refused.by {
            Cap::Key => self
                .refusal(&refused.limits, now)
                .unwrap_or(OtpError::RateLimited { retry_in_s }),
            Cap::Address => OtpError::AddressLimited { retry_in_s },
            Cap::Phone => OtpError::PhoneLimited { retry_in_s },
        }
    }

    /// The answer to a wrong code whose try is counted in `spent`: after
    /// the last try, when `register` will issue a code again, since this
    /// one can no longer register.
    fn wrong(&self, phone: &PhoneNumber, spent: &Limits, now: i64) -> OtpError {
        let remaining = i64::from(self.policy.max_tries) - spent.wrong_tries;
        tracing::info!(%phone, remaining, "wrong one-time code");
        match u32::try_from(remaining) {
            Ok(remaining) if remaining > 0 => OtpError::Wrong { remaining },
            _ => OtpError::Spent {
                retry_in_s: self.retry_in_s(spent, now),
            },
        }
    }

    /// Ends a code whose last try `spent` counted when its window ends, so
    /// a window that passes cannot give it fresh tries (its life may be
    /// longer than the window): a later `verify` is told `code_dead`, then
    /// `code_expired`. Not sooner: a code that has expired is dropped when
    /// anyone asks for a code for the phone, and its owner would then be
    /// told the proof matches no key instead of `code_dead`. A failure is
    /// logged, not answered: the guess was still wrong, and the spent
    /// tries keep the code dead for the window.
    async fn end_code(&self, phone: &PhoneNumber, spki: &[u8], code_hash: &str, spent: &Limits) {
        let window_end = spent.window_start + self.policy.window_ms;
        if let Err(e) = self
            .store
            .otp_expire_code(phone, spki, code_hash, window_end)
            .await
        {
            tracing::error!(%phone, error = %e, "could not end a code whose tries are spent");
        }
    }

    /// `Dead`, with the rest of the window, if the tries of (`phone`,
    /// `spki`) are spent in the window that holds at `now`.
    async fn dead(
        &self,
        phone: &PhoneNumber,
        spki: &[u8],
        now: i64,
    ) -> Result<Option<OtpError>, OtpError> {
        Ok(self
            .store
            .otp_limits(phone, spki)
            .await?
            .filter(|l| {
                now - l.window_start < self.policy.window_ms
                    && l.wrong_tries >= i64::from(self.policy.max_tries)
            })
            .map(|l| OtpError::Dead {
                retry_in_s: self.retry_in_s(&l, now),
            }))
    }

    /// Makes a code for `phone` bound to the key it will register, stores its
    /// hash and sends it; `from` is the address that asked, whose share of
    /// the phone's codes it takes. Returns how long it stays valid, in
    /// milliseconds.
    pub async fn issue(
        &self,
        phone: &PhoneNumber,
        key_type: KeyType,
        spki: &[u8],
        from: ClientPrefix,
    ) -> Result<i64, OtpError> {
        let now = self.clock.now_ms();
        // Refused before any work; the statement that stores the code checks
        // the limits again, atomically, for requests racing this one.
        if let Some(limits) = self.store.otp_limits(phone, spki).await?
            && let Some(refused) = self.refusal(&limits, now)
        {
            return Err(refused);
        }
        let code = random_code();
        let hash = self.key.hash(phone, spki, &code);
        let pending = PendingCode {
            phone: phone.to_string(),
            code_hash: hash,
            key_type: key_type.as_str().into(),
            public_key: spki.to_vec(),
            issued_at: now,
            expires_at: now + self.policy.ttl_ms,
            address: from.to_string(),
        };
        if let Err(refused) = self.store.otp_issue(&pending, self.limits(now)).await? {
            if refused.by != Cap::Key {
                tracing::debug!(%phone, address = %from, by = ?refused.by, "code refused");
            }
            return Err(self.refused(&refused, now));
        }
        let sink = self.sink.read().unwrap_or_else(|p| p.into_inner()).clone();
        sink.deliver(phone, &code)
            .await
            .map_err(OtpError::Delivery)?;
        tracing::info!(%phone, "one-time code issued");
        Ok(self.policy.ttl_ms)
    }

    /// The keys the codes pending for `phone` would register, newest first,
    /// so the caller can find the one whose possession a proof shows before
    /// a try is spent.
    pub async fn pending_keys(&self, phone: &PhoneNumber) -> Result<Vec<PendingKey>, OtpError> {
        let pending = self.store.otp_pending(phone).await?;
        if pending.is_empty() {
            return Err(OtpError::NoPendingCode);
        }
        pending.iter().map(to_pending_key).collect()
    }

    /// Checks `code`; on success registers the pending key for `phone`
    /// (replacing an older key) and returns whether a key was replaced and
    /// the registration time recorded.
    /// `expected_spki` is the key whose possession the caller verified; its
    /// own code and tries are the ones used.
    ///
    /// A try is spent before the code is compared, in one statement that
    /// also checks that one is left: parallel guesses (on this server or
    /// another sharing the database) get no more tries than one at a time.
    pub async fn redeem(
        &self,
        phone: &PhoneNumber,
        code: &str,
        expected_spki: &[u8],
    ) -> Result<(bool, i64), OtpError> {
        if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(OtpError::Malformed);
        }
        let now = self.clock.now_ms();
        let limits = self.limits(now);
        if let Some(dead) = self.dead(phone, expected_spki, now).await? {
            return Err(dead);
        }
        let pending = self
            .store
            .otp_pending_for(phone, expected_spki)
            .await?
            .ok_or(OtpError::NoPendingCode)?;
        if now >= pending.expires_at {
            return Err(OtpError::Expired);
        }
        let Some(spent) = self
            .store
            .otp_take_try(phone, expected_spki, limits)
            .await?
        else {
            // A parallel guess took the last try: the wait is what is left
            // of the window it was counted in, as that guess was told. No
            // spent tries left to find means that guess was right and
            // consumed the code (registering clears the counters).
            let dead = self.dead(phone, expected_spki, now).await?;
            return Err(dead.unwrap_or(OtpError::NoPendingCode));
        };
        if !self
            .key
            .matches(&pending.code_hash, phone, &pending.public_key, code)
        {
            let wrong = self.wrong(phone, &spent, now);
            if let OtpError::Spent { .. } = wrong {
                self.end_code(phone, expected_spki, &pending.code_hash, &spent)
                    .await;
            }
            return Err(wrong);
        }
        let key = to_pending_key(&pending)?;
        let row = UserRow {
            phone: phone.to_string(),
            key_type: key.key_type.as_str().into(),
            public_key: key.spki.clone(),
            fingerprint: Fingerprint::of_spki(&key.spki).to_hex(),
            registered_at: now,
        };
        let replaced = self
            .store
            .otp_register(&row)
            .await?
            .ok_or(OtpError::NoPendingCode)?;
        Ok((replaced, now))
    }
}

fn to_pending_key(p: &PendingCode) -> Result<PendingKey, OtpError> {
    let key_type = KeyType::parse(&p.key_type).ok_or_else(|| {
        DbError::Corrupt(format!("unknown key type in otp_codes for {}", p.phone))
    })?;
    Ok(PendingKey {
        key_type,
        spki: p.public_key.clone(),
    })
}

/// A uniformly random 6-digit code from the OS generator (rejection sampling
/// keeps every code equally likely).
fn random_code() -> Zeroizing<String> {
    use rand::TryRng;
    const LIMIT: u32 = u32::MAX - (u32::MAX % 1_000_000);
    loop {
        let n = rand::rngs::SysRng
            .try_next_u32()
            .expect("the operating system's random generator failed");
        if n < LIMIT {
            return Zeroizing::new(format!("{:06}", n % 1_000_000));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrong_code_says_how_many_tries_are_left() {
        let cases = [
            (
                OtpError::Wrong { remaining: 4 },
                "wrong code; 4 tries left",
                Some(4),
            ),
            (
                OtpError::Wrong { remaining: 1 },
                "wrong code; 1 try left",
                Some(1),
            ),
            (
                OtpError::Spent { retry_in_s: 3501 },
                "wrong code; no tries left; register again in 3501 seconds",
                Some(0),
            ),
            (
                OtpError::Spent { retry_in_s: 1 },
                "wrong code; no tries left; register again in 1 second",
                Some(0),
            ),
            (OtpError::Malformed, "a code is 6 digits", None),
        ];
        for (e, message, tries_left) in cases {
            assert_eq!(e.code(), ErrorCode::WrongCode, "{e}");
            assert_eq!(e.to_string(), message);
            assert_eq!(e.tries_left(), tries_left, "{e}");
        }
    }

    #[test]
    fn a_wait_says_second_or_seconds_and_is_sent_in_ms() {
        let cases = [
            (
                OtpError::Spent { retry_in_s: 2 },
                "wrong code; no tries left; register again in 2 seconds",
                Some(2000),
            ),
            (
                OtpError::Dead { retry_in_s: 1 },
                "too many wrong codes; try again in 1 second",
                Some(1000),
            ),
            (
                OtpError::Dead { retry_in_s: 3600 },
                "too many wrong codes; try again in 3600 seconds",
                Some(3_600_000),
            ),
            (
                OtpError::RateLimited { retry_in_s: 1 },
                "too many codes requested for this phone; try again in 1 second",
                Some(1000),
            ),
            (
                OtpError::AddressLimited { retry_in_s: 1 },
                "too many codes requested for this phone from your address; \
                 try again in 1 second",
                Some(1000),
            ),
            (
                OtpError::PhoneLimited { retry_in_s: 61 },
                "this phone has been sent as many codes as it may be for now; \
                 try again in 61 seconds",
                Some(61_000),
            ),
            (
                OtpError::Wrong { remaining: 2 },
                "wrong code; 2 tries left",
                None,
            ),
            (
                OtpError::NoPendingCode,
                "no code is pending for this phone: register first",
                None,
            ),
        ];
        for (e, message, retry_after_ms) in cases {
            assert_eq!(e.to_string(), message);
            assert_eq!(e.retry_after_ms(), retry_after_ms, "{e}");
        }
    }

    #[test]
    fn codes_are_six_digits() {
        for _ in 0..100 {
            let c = random_code();
            assert_eq!(c.len(), 6);
            assert!(c.bytes().all(|b| b.is_ascii_digit()));
        }
    }
}
