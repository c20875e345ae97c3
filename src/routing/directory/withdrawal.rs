//! Withdrawals: a home server's signed statement that one of its users is
//! gone (`carrier-server admin users delete`), flooded hop by hop like the
//! entries it withdraws.
//!
//! A withdrawal names the registration it ends by its [`Version`] (its
//! `registered_at` and the home server's key), so the one rule that orders
//! entries orders withdrawals too: it removes an entry of the same or an
//! earlier version, and a later registration outranks it. Each server keeps
//! it as a tombstone, so a stale or replayed entry of the withdrawn
//! registration never brings the route back, and a replayed withdrawal never
//! removes a later registration. Only the home server can withdraw its
//! entry: the signature is checked with the key that signs entries.
//!
//! A withdrawal for a phone we hold no entry for is taken only from a home
//! we already know (one that signs an entry or a tombstone we hold): a key
//! anyone can make up would otherwise fill the store with made-up
//! tombstones.
//!
//! Tombstones are bounded: each lives [`LIFETIME_MS`] from its
//! `withdrawn_at`; each home holds at most [`TOMBSTONES_PER_HOME`] (past it
//! that home's oldest go, never another home's), and at most
//! [`MAX_TOMBSTONES`] are held in all (past it the oldest of the home that
//! holds most go). Each server also forgets expired ones at start.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{Directory, Version};
use crate::crypto::PublicKey;
use crate::db::cluster::Event;
use crate::db::directory::WithdrawalRow;
use crate::db::{DbError, Store};
use crate::domain::{Fingerprint, PhoneNumber};
use crate::protocol::link::{LinkMessage, Withdrawal};
use crate::protocol::{B64, KeyType, signed};
use crate::routing::{FUTURE_LIMIT_MS, Router, link_frame};

/// How long a tombstone is kept after the withdrawal: longer than a
/// neighbour is expected to stay away with a stale copy of the entry.
pub const LIFETIME_MS: i64 = 30 * 24 * 3600 * 1000;
/// Most tombstones held in all; past it the oldest of the home holding
/// most are forgotten first.
pub const MAX_TOMBSTONES: usize = 100_000;
/// Most tombstones held for one home: its share of [`MAX_TOMBSTONES`], so
/// that a flood signed by one home evicts only that home's tombstones.
pub const TOMBSTONES_PER_HOME: usize = MAX_TOMBSTONES / 10;
/// Withdrawals per link frame.
const WITHDRAWAL_CHUNK: usize = 500;
/// How often expired tombstones are looked for, when a withdrawal comes.
const EXPIRY_EVERY_MS: i64 = 3600 * 1000;

/// A withdrawn registration, as held and forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tombstone {
    pub phone: PhoneNumber,
    pub registered_at: i64,
    pub withdrawn_at: i64,
    pub home: Fingerprint,
    pub home_key: Vec<u8>,
    pub signature: Vec<u8>,
}

/// Why a withdrawal from a neighbour was refused.
#[derive(Debug, thiserror::Error)]
pub enum WithdrawalError {
    #[error("bad phone number")]
    Phone,
    #[error("bad home server key")]
    Key,
    #[error("dated in the future")]
    Future,
    #[error("the home server's signature does not verify")]
    Signature,
}

impl Tombstone {
    /// The version of the registration withdrawn.
    pub fn version(&self) -> Version {
        Version::new(self.registered_at, self.home)
    }

    /// The bytes the home server signs.
    pub fn signed_bytes(&self) -> Vec<u8> {
        signed::withdrawal_bytes(
            self.phone.as_str(),
            self.registered_at,
            self.withdrawn_at,
            &self.home_key,
        )
    }

    pub fn to_wire(&self) -> Withdrawal {
        Withdrawal {
            phone: self.phone.as_str().to_owned(),
            registered_at: self.registered_at,
            withdrawn_at: self.withdrawn_at,
            home_key: B64(self.home_key.clone()),
            signature: B64(self.signature.clone()),
        }
    }

    /// Parses a withdrawal from a neighbour and checks its signature and
    /// dates (`now` in ms).
    pub fn from_wire(w: &Withdrawal, now: i64) -> Result<Self, WithdrawalError> {
        let phone = PhoneNumber::from_canonical(&w.phone).map_err(|_| WithdrawalError::Phone)?;
        let home = PublicKey::from_spki_der_typed(KeyType::P256, &w.home_key.0)
            .map_err(|_| WithdrawalError::Key)?;
        // Dated ahead, it would outrank every registration until then.
        if w.registered_at.max(w.withdrawn_at) > now + FUTURE_LIMIT_MS {
            return Err(WithdrawalError::Future);
        }
        let t = Self {
            phone,
            registered_at: w.registered_at,
            withdrawn_at: w.withdrawn_at,
            home: home.fingerprint(),
            home_key: w.home_key.0.clone(),
            signature: w.signature.0.clone(),
        };
        home.verify(&t.signed_bytes(), &t.signature)
            .map_err(|_| WithdrawalError::Signature)?;
        Ok(t)
    }

    fn to_row(&self) -> WithdrawalRow {
        WithdrawalRow {
            phone: self.phone.as_str().to_owned(),
            registered_at: self.registered_at,
            withdrawn_at: self.withdrawn_at,
            home_key: self.home_key.clone(),
            signature: self.signature.clone(),
        }
    }
}

/// The signed tombstones among `rows` whose signature verifies (a row
/// that does not is dropped with a warning, as entries are at load).
pub(super) fn from_rows(rows: Vec<WithdrawalRow>) -> Vec<Tombstone> {
    rows.into_iter()
        .filter(|r| !r.signature.is_empty())
        .filter_map(|r| {
            let wire = Withdrawal {
                phone: r.phone,
                registered_at: r.registered_at,
                withdrawn_at: r.withdrawn_at,
                home_key: B64(r.home_key),
                signature: B64(r.signature),
            };
            match Tombstone::from_wire(&wire, i64::MAX - FUTURE_LIMIT_MS) {
                Ok(t) => Some(t),
                Err(e) => {
                    tracing::warn!(phone = %wire.phone, error = %e, "a stored directory withdrawal is not held");
                    None
                }
            }
        })
        .collect()
}

impl Directory {
    /// The tombstone of `phone`, if one is held.
    pub fn withdrawal(&self, phone: &PhoneNumber) -> Option<Arc<Tombstone>> {
        self.tombstones().get(phone).cloned()
    }

    /// Whether a tombstone outranks (or equals) an entry of `version`.
    pub(super) fn withdrawn_at_or_after(&self, phone: &PhoneNumber, version: Version) -> bool {
        self.tombstones()
            .get(phone)
            .is_some_and(|t| t.version() >= version)
    }

    /// Whether `t` is news: no tombstone of its version or later, and no
    /// entry of a later version or signed by another home. Only the home
    /// that signed an entry may withdraw it: another server's withdrawal,
    /// dated later, would otherwise make the user vanish everywhere. For a
    /// phone with no entry held, the home must be one we know (a signer of
    /// an entry or tombstone held): a made-up key's flood of tombstones
    /// would otherwise be stored and sent on. (Our own withdrawals coming
    /// back are dropped by the caller before this.)
    fn judge_withdrawal(&self, t: &Tombstone) -> bool {
        if self.withdrawn_at_or_after(&t.phone, t.version()) {
            return false;
        }
        match self.get(&t.phone) {
            Some(e) => e.home == t.home && e.version() <= t.version(),
            None => self.knows_home(t.home),
        }
    }

    /// Whether some entry or tombstone held is signed by `home`.
    fn knows_home(&self, home: Fingerprint) -> bool {
        let signs_an_entry = self
            .users
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .any(|e| e.home == home);
        signs_an_entry || self.tombstones().values().any(|t| t.home == home)
    }

    /// Records a tombstone and drops the entry it outranks, in memory and
    /// in the database; then forgets what is past the bounds.
    async fn withdraw(&self, store: &Store, t: Tombstone, now: i64) -> Result<(), DbError> {
        let remove = self
            .get(&t.phone)
            .is_some_and(|e| e.version() <= t.version());
        store.store_withdrawal(&t.to_row(), remove).await?;
        // The other members of a cluster drop the entry and take the
        // tombstone too (`Router::member_withdrew`).
        store.notify(&Event::Directory(t.phone.clone())).await?;
        if remove {
            self.users
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&t.phone);
        }
        let home = t.home;
        self.tombstones_mut().insert(t.phone.clone(), Arc::new(t));
        self.bound(store, now, Some(home)).await
    }

    /// Reads the tombstone of `phone` another member of the cluster stored;
    /// returns it if it is news here.
    async fn reread_withdrawal(
        &self,
        store: &Store,
        phone: &PhoneNumber,
    ) -> Result<Option<Arc<Tombstone>>, DbError> {
        let Some(row) = store.directory_withdrawal(phone.as_str()).await? else {
            return Ok(None);
        };
        let Some(t) = from_rows(vec![row]).pop() else {
            return Ok(None);
        };
        if self.withdrawn_at_or_after(phone, t.version()) {
            return Ok(None);
        }
        let t = Arc::new(t);
        self.tombstones_mut().insert(phone.clone(), t.clone());
        Ok(Some(t))
    }

    /// Forgets a tombstone an entry of a later version replaced.
    pub(super) async fn forget_withdrawal(
        &self,
        store: &Store,
        phone: &PhoneNumber,
    ) -> Result<(), DbError> {
        if self.tombstones_mut().remove(phone).is_some() {
            store.delete_withdrawal(phone.as_str()).await?;
        }
        Ok(())
    }

    /// Drops tombstones older than [`LIFETIME_MS`] (at most every
    /// [`EXPIRY_EVERY_MS`]), and past the bounds the oldest ([`evictions`]);
    /// `added` is the home of a tombstone just taken.
    async fn bound(
        &self,
        store: &Store,
        now: i64,
        added: Option<Fingerprint>,
    ) -> Result<(), DbError> {
        let cutoff = now.saturating_sub(LIFETIME_MS);
        let expire = now.saturating_sub(self.tombstones_expired_at.load(Ordering::Relaxed))
            >= EXPIRY_EVERY_MS;
        let evicted: Vec<PhoneNumber> = {
            let mut held = self.tombstones_mut();
            if expire {
                held.retain(|_, t| t.withdrawn_at >= cutoff);
            }
            let evicted = evictions(&held, added, TOMBSTONES_PER_HOME, MAX_TOMBSTONES);
            for phone in &evicted {
                held.remove(phone);
            }
            evicted
        };
        if expire {
            self.tombstones_expired_at.store(now, Ordering::Relaxed);
            store.expire_withdrawals(cutoff).await?;
        }
        for phone in evicted {
            store.delete_withdrawal(phone.as_str()).await?;
        }
        Ok(())
    }
}

impl Router {
    /// Signs and floods our own withdrawals that are recorded but not
    /// signed yet: those of users an operator deleted, running or stopped.
    /// Called at every start.
    /// `sign` is the server key's signature (the router holds no key).
    pub async fn publish_withdrawals(
        &self,
        sign: &(dyn Fn(&[u8]) -> Vec<u8> + Sync),
    ) -> Result<usize, DbError> {
        let pending: Vec<WithdrawalRow> = self
            .store
            .directory_withdrawals()
            .await?
            .into_iter()
            .filter(|r| r.signature.is_empty())
            .collect();
        let mut flooded = Vec::new();
        for row in pending {
            let Ok(phone) = PhoneNumber::from_canonical(&row.phone) else {
                continue;
            };
            let mut t = Tombstone {
                phone,
                registered_at: row.registered_at,
                withdrawn_at: row.withdrawn_at,
                home: self.me.fingerprint,
                home_key: self.me.public_key.clone(),
                signature: Vec::new(),
            };
            t.signature = sign(&t.signed_bytes());
            tracing::info!(phone = %t.phone, "withdrew the user's directory entry from the neighbourhood");
            flooded.push(t.to_wire());
            self.directory
                .withdraw(&self.store, t, self.clock.now_ms())
                .await?;
        }
        let count = flooded.len();
        self.flood_withdrawals(None, flooded);
        // At start (the first call), this also forgets expired tombstones.
        self.directory
            .bound(&self.store, self.clock.now_ms(), None)
            .await?;
        Ok(count)
    }

    /// Another member of the cluster removed the directory entry of
    /// `phone` (it deleted its user, or took a withdrawal): drops this
    /// member's copy, takes the tombstone, and sends it on the links held
    /// here.
    pub(in crate::routing) async fn member_withdrew(
        &self,
        phone: &PhoneNumber,
    ) -> Result<(), DbError> {
        self.directory
            .users
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(phone);
        if let Some(t) = self.directory.reread_withdrawal(&self.store, phone).await? {
            self.flood_withdrawals(None, vec![t.to_wire()]);
        }
        Ok(())
    }

    /// Applies withdrawals from neighbour `from`; forwards what changed.
    pub async fn withdrawals_in(
        &self,
        from: Fingerprint,
        withdrawals: Vec<Withdrawal>,
    ) -> Result<(), DbError> {
        let mut changed = Vec::new();
        for wire in withdrawals {
            let now = self.clock.now_ms();
            let t = match Tombstone::from_wire(&wire, now) {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(neighbour = %from, phone = ?wire.phone.chars().take(20).collect::<String>(), error = %e, "directory withdrawal refused");
                    continue;
                }
            };
            if t.home == self.me.fingerprint || !self.directory.judge_withdrawal(&t) {
                continue;
            }
            tracing::info!(phone = %t.phone, home = %t.home, "a user was withdrawn from the neighbourhood by their home server");
            changed.push(wire);
            self.directory.withdraw(&self.store, t, now).await?;
        }
        self.flood_withdrawals(Some(from), changed);
        Ok(())
    }

    /// Every signed tombstone as link frames, for a neighbour that just
    /// linked.
    pub(super) fn withdrawal_frames(&self) -> Vec<Vec<u8>> {
        let all: Vec<Withdrawal> = self
            .directory
            .tombstones()
            .values()
            .map(|t| t.to_wire())
            .collect();
        all.chunks(WITHDRAWAL_CHUNK).map(withdrawn_frame).collect()
    }

    fn flood_withdrawals(&self, except: Option<Fingerprint>, withdrawals: Vec<Withdrawal>) {
        for chunk in withdrawals.chunks(WITHDRAWAL_CHUNK) {
            self.neighbours
                .send_all_except(except, &withdrawn_frame(chunk));
        }
    }
}

/// The tombstones to forget from `held`: when home `added` holds more
/// than `per_home`, its oldest down to nine tenths of that; then, while
/// more than `total` are held, the oldest of the home holding most, down to
/// nine tenths of its count. Going below the bound means a flood costs one
/// sort per tenth of a share, not one per tombstone; and a home's flood
/// never evicts another home's tombstones.
fn evictions(
    held: &HashMap<PhoneNumber, Arc<Tombstone>>,
    added: Option<Fingerprint>,
    per_home: usize,
    total: usize,
) -> Vec<PhoneNumber> {
    let mut evicted = Vec::new();
    if let Some(home) = added {
        let count = held.values().filter(|t| t.home == home).count();
        if count > per_home {
            evicted.extend(oldest_of(held, home, count - per_home * 9 / 10));
        }
    }
    if held.len() - evicted.len() > total {
        let mut per_home_count: HashMap<Fingerprint, usize> = HashMap::new();
        for t in held.values() {
            *per_home_count.entry(t.home).or_default() += 1;
        }
        if let Some((&home, &count)) = per_home_count.iter().max_by_key(|(_, n)| **n) {
            let over = held.len() - evicted.len() - total;
            let n = over.max(count - count * 9 / 10).min(count);
            let skip: std::collections::HashSet<&PhoneNumber> = evicted.iter().collect();
            let more: Vec<PhoneNumber> = oldest_of(held, home, count)
                .into_iter()
                .filter(|p| !skip.contains(p))
                .take(n)
                .collect();
            evicted.extend(more);
        }
    }
    evicted
}

/// The `n` oldest tombstones of `home` in `held`.
fn oldest_of(
    held: &HashMap<PhoneNumber, Arc<Tombstone>>,
    home: Fingerprint,
    n: usize,
) -> Vec<PhoneNumber> {
    let mut by_age: Vec<(i64, &PhoneNumber)> = held
        .values()
        .filter(|t| t.home == home)
        .map(|t| (t.withdrawn_at, &t.phone))
        .collect();
    by_age.sort();
    by_age.into_iter().take(n).map(|(_, p)| p.clone()).collect()
}

fn withdrawn_frame(withdrawals: &[Withdrawal]) -> Vec<u8> {
    link_frame(&LinkMessage::Withdrawn {
        withdrawals: withdrawals.to_vec(),
    })
}

#[cfg(test)]
mod tests;
