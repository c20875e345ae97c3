//! Every user of the neighbourhood, as vouched for by their home server, with
//! the route to that server: an in-memory map (so a `send` costs no query)
//! backed by the `directory` table.
//!
//! Conflicts: an entry is identified by its phone; the entry with the later
//! `registered_at` wins everywhere (ties broken by the home server's
//! fingerprint), so a phone registered on two servers ends up homed on the
//! one where it registered last, and a key change replaces the old key.
//! [`Version`] is that rule, the only place it is written.
//!
//! Within one version, a statement is its signed bytes, never its signature
//! bytes: signatures are not unique (a P-256 signature has a high-S twin,
//! and a signer may use a fresh nonce), so a copy under another signature
//! is the same statement and changes nothing but, by fewer hops, the route.
//! [`Directory::judge`] is that rule.
//!
//! The [`Router`] side of this file takes entries from neighbours, records
//! and floods our own users' entries, and sends the whole directory to a
//! neighbour that just linked.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use super::{FUTURE_LIMIT_MS, Router, ServerInfo, link_frame};
use crate::crypto::PublicKey;
use crate::db::directory::DirectoryRow;
use crate::db::{DbError, Store};
use crate::domain::{Fingerprint, PhoneNumber};
use crate::protocol::link::{DirectoryEntry, LinkMessage, MAX_SERVER_NAME};
use crate::protocol::{B64, KeyType, UserInfo, signed};
use withdrawal::Tombstone;

/// Directory entries per link frame.
const DIRECTORY_CHUNK: usize = 500;

/// Which of two registrations of a phone wins: the later `registered_at`,
/// ties broken by the home server's fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    registered_at: i64,
    home: Fingerprint,
}

impl Version {
    pub fn new(registered_at: i64, home: Fingerprint) -> Self {
        Self {
            registered_at,
            home,
        }
    }
}

/// A user and the way to their home server.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The user's phone; `info.phone` is its wire form.
    pub phone: PhoneNumber,
    pub info: UserInfo,
    pub home: Fingerprint,
    pub home_key: Vec<u8>,
    pub home_name: String,
    pub signature: Vec<u8>,
    /// The neighbour leading home; `None` when we are the home.
    pub via: Option<Fingerprint>,
    pub hops: u32,
}

impl Entry {
    /// The wire form, as forwarded to neighbours.
    pub fn to_wire(&self) -> DirectoryEntry {
        DirectoryEntry {
            phone: self.info.phone.clone(),
            key_type: self.info.key_type,
            public_key: self.info.public_key.clone(),
            home_key: B64(self.home_key.clone()),
            home_name: self.home_name.clone(),
            registered_at: self.info.registered_at,
            signature: B64(self.signature.clone()),
            hops: self.hops,
        }
    }

    pub fn version(&self) -> Version {
        Version::new(self.info.registered_at, self.home)
    }

    fn to_row(&self) -> DirectoryRow {
        DirectoryRow {
            phone: self.info.phone.clone(),
            key_type: self.info.key_type.as_str().into(),
            public_key: self.info.public_key.0.clone(),
            home_key: self.home_key.clone(),
            home_name: self.home_name.clone(),
            registered_at: self.info.registered_at,
            signature: self.signature.clone(),
            via: self.via.map(|v| v.to_hex()),
            hops: i64::from(self.hops),
        }
    }
}

/// Why an entry from a neighbour was refused.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    #[error("bad phone number {0}")]
    Phone(String),
    #[error("bad key: {0}")]
    Key(String),
    #[error("the home server's signature does not verify")]
    Signature,
}

/// Turns a signed entry received from `via` into an [`Entry`], without
/// checking its signature: call [`verify_signature`] before trusting it.
pub fn parse_entry(e: &DirectoryEntry, via: Fingerprint) -> Result<Entry, EntryError> {
    let phone = PhoneNumber::from_canonical(&e.phone)
        .map_err(|_| EntryError::Phone(e.phone.chars().take(20).collect()))?;
    let key = PublicKey::from_spki_der_typed(e.key_type, &e.public_key.0)
        .map_err(|x| EntryError::Key(x.to_string()))?;
    let home_key = PublicKey::from_spki_der_typed(KeyType::P256, &e.home_key.0)
        .map_err(|x| EntryError::Key(format!("home server key: {x}")))?;
    if e.home_name.len() > MAX_SERVER_NAME {
        return Err(EntryError::Key("home name too long".into()));
    }
    Ok(Entry {
        phone,
        info: UserInfo {
            phone: e.phone.clone(),
            key_type: e.key_type,
            public_key: e.public_key.clone(),
            fingerprint: key.fingerprint().to_hex(),
            registered_at: e.registered_at,
            devices: None,
        },
        home: home_key.fingerprint(),
        home_key: e.home_key.0.clone(),
        home_name: e.home_name.clone(),
        signature: e.signature.0.clone(),
        via: Some(via),
        hops: e.hops.saturating_add(1),
    })
}

/// The bytes a home server signs for `entry`.
pub fn signed_bytes(entry: &Entry) -> Vec<u8> {
    signed::directory_entry_bytes(
        &entry.info.phone,
        entry.info.key_type.as_str(),
        &entry.info.public_key.0,
        entry.info.registered_at,
        &entry.home_key,
        &entry.home_name,
    )
}

/// Checks the home server's signature on an entry.
pub fn verify_signature(entry: &Entry) -> Result<(), EntryError> {
    let home = PublicKey::from_spki_der_typed(KeyType::P256, &entry.home_key)
        .map_err(|_| EntryError::Signature)?;
    home.verify(&signed_bytes(entry), &entry.signature)
        .map_err(|_| EntryError::Signature)
}

/// What an entry from a neighbour changes.
#[derive(Debug)]
pub enum Applied {
    /// Nothing: we hold the same or a newer version, by as short a route,
    /// or a restatement came by a longer route than the one we follow.
    Unchanged,
    /// A statement we do not hold: a new user, a newer version, or the
    /// home's restatement of the version we hold (e.g. under a new name)
    /// from the neighbour we route through or by fewer hops. Its signature
    /// must be checked before it is stored and forwarded.
    Updated,
    /// The statement we hold, by fewer hops: this is our copy (whose
    /// signature was checked) with the new route, to store and forward.
    Rerouted(Box<Entry>),
}
/// The users of the neighbourhood, keyed by phone, and the registrations
/// their home servers withdrew ([`withdrawal`]).
pub struct Directory {
    pub(super) users: RwLock<HashMap<PhoneNumber, Arc<Entry>>>,
    withdrawn: RwLock<HashMap<PhoneNumber, Arc<Tombstone>>>,
    /// When expired tombstones were last forgotten (ms; 0: not yet).
    tombstones_expired_at: std::sync::atomic::AtomicI64,
}

impl Directory {
    /// Loads the directory table. An entry whose signature does not verify
    /// (stored under an older rule, such as a high-S signature from before
    /// those were refused, which may be a neighbour's forged route) is not
    /// held: nothing outranks or reroutes a statement it would otherwise
    /// shadow. A neighbour's statement is judged anew when it comes again;
    /// for our own users, start-up signs a new one.
    pub async fn load(store: &Store) -> Result<Self, DbError> {
        let mut users = HashMap::new();
        for row in store.directory().await? {
            let entry = from_row(row)?;
            if verify_signature(&entry).is_err() {
                tracing::warn!(phone = %entry.phone, "a stored directory entry's signature no longer verifies; it is not held");
                continue;
            }
            users.insert(entry.phone.clone(), Arc::new(entry));
        }
        let withdrawn = withdrawal::from_rows(store.directory_withdrawals().await?)
            .into_iter()
            .map(|t| (t.phone.clone(), Arc::new(t)))
            .collect();
        Ok(Self::holding(users, withdrawn))
    }

    fn holding(
        users: HashMap<PhoneNumber, Arc<Entry>>,
        withdrawn: HashMap<PhoneNumber, Arc<Tombstone>>,
    ) -> Self {
        Self {
            users: RwLock::new(users),
            withdrawn: RwLock::new(withdrawn),
            tombstones_expired_at: std::sync::atomic::AtomicI64::new(0),
        }
    }

    pub fn get(&self, phone: &PhoneNumber) -> Option<Arc<Entry>> {
        self.read().get(phone).cloned()
    }

    /// Every entry, sorted by phone.
    pub fn all(&self) -> Vec<Arc<Entry>> {
        let mut all: Vec<_> = self.read().values().cloned().collect();
        all.sort_by(|a, b| a.phone.cmp(&b.phone));
        all
    }

    /// At most `limit` entries whose phone sorts after `after`, in phone
    /// order, and whether more follow them. One pass over the directory
    /// and a sort of the page alone, so walking a large directory page by
    /// page costs linear time per page, not a sort of everything.
    pub fn page(&self, after: Option<&PhoneNumber>, limit: usize) -> (Vec<Arc<Entry>>, bool) {
        let users = self.read();
        let mut page: Vec<&Arc<Entry>> = users
            .values()
            .filter(|e| after.is_none_or(|a| e.phone > *a))
            .collect();
        let more = page.len() > limit;
        if more {
            page.select_nth_unstable_by(limit, |a, b| a.phone.cmp(&b.phone));
            page.truncate(limit);
        }
        page.sort_unstable_by(|a, b| a.phone.cmp(&b.phone));
        (page.into_iter().cloned().collect(), more)
    }

    /// Of `phones`, those whose entry is homed at `home`, sorted and each
    /// once; `None` when no entry at all is homed at `home` (a server
    /// nobody knows of). One read of the directory for the whole list.
    pub fn homed_at(&self, home: &Fingerprint, phones: Vec<String>) -> Option<Vec<String>> {
        let users = self.read();
        let is_home = |p: &String| {
            PhoneNumber::from_canonical(p)
                .ok()
                .and_then(|p| users.get(&p))
                .is_some_and(|e| e.home == *home)
        };
        let mut homed: Vec<String> = phones.into_iter().filter(is_home).collect();
        homed.sort_unstable();
        homed.dedup();
        let known = !homed.is_empty() || users.values().any(|e| e.home == *home);
        known.then_some(homed)
    }

    /// Whether the entry held for one of our own users, registered at
    /// `registered_at`, needs no new signature: a newer registration
    /// elsewhere outranks it, or it is ours already under our current name.
    fn holds_current(&self, phone: &PhoneNumber, registered_at: i64, me: &ServerInfo) -> bool {
        self.get(phone).is_some_and(|e| {
            e.version() > Version::new(registered_at, me.fingerprint)
                || (e.via.is_none()
                    && e.info.registered_at == registered_at
                    && e.home_name == me.name)
        })
    }

    /// Decides what a candidate entry changes, without changing anything.
    /// The caller verifies the signature of `Updated` candidates, then calls
    /// [`Directory::store`]. A route changes only for fewer hops, and a copy
    /// of the statement we hold under other signature bytes is not news.
    pub fn judge(&self, candidate: &Entry) -> Applied {
        if self.withdrawn_at_or_after(&candidate.phone, candidate.version()) {
            return Applied::Unchanged;
        }
        let users = self.read();
        let Some(current) = users.get(&candidate.phone) else {
            return Applied::Updated;
        };
        match candidate.version().cmp(&current.version()) {
            std::cmp::Ordering::Greater => return Applied::Updated,
            std::cmp::Ordering::Less => return Applied::Unchanged,
            std::cmp::Ordering::Equal if current.via.is_none() => return Applied::Unchanged,
            std::cmp::Ordering::Equal => {}
        }
        let shorter = candidate.hops < current.hops;
        if signed_bytes(candidate) == signed_bytes(current) {
            if !shorter {
                return Applied::Unchanged;
            }
            return Applied::Rerouted(Box::new(Entry {
                via: candidate.via,
                hops: candidate.hops,
                ..Entry::clone(current)
            }));
        }
        // The home re-signed this registration with other contents. Which
        // of two such statements is later cannot be told from them, so it
        // is taken only from the route we follow (which passes on what the
        // home floods) or by a shorter one: a neighbour replaying an older
        // restatement cannot make the neighbourhood flip between the two.
        if shorter || candidate.via == current.via {
            Applied::Updated
        } else {
            Applied::Unchanged
        }
    }

    /// Records an entry in memory and in the database (other members read
    /// it), forgetting the tombstone of an earlier registration.
    pub async fn store(&self, store: &Store, entry: Entry) -> Result<Arc<Entry>, DbError> {
        let mut stored = self.store_all(store, vec![entry]).await?;
        Ok(stored.pop().expect("one entry stored"))
    }

    /// [`Directory::store`] for entries of distinct phones, in one
    /// transaction.
    pub async fn store_all(
        &self,
        store: &Store,
        entries: Vec<Entry>,
    ) -> Result<Vec<Arc<Entry>>, DbError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<DirectoryRow> = entries.iter().map(Entry::to_row).collect();
        store.store_directory_entries(&rows).await?;
        let mut stored = Vec::with_capacity(entries.len());
        for entry in entries {
            if self
                .withdrawal(&entry.phone)
                .is_some_and(|t| t.version() < entry.version())
            {
                self.forget_withdrawal(store, &entry.phone).await?;
            }
            let entry = Arc::new(entry);
            let mut users = self.users.write().unwrap_or_else(|p| p.into_inner());
            users.insert(entry.phone.clone(), entry.clone());
            stored.push(entry);
        }
        Ok(stored)
    }

    /// Holds what `fresh`, a copy loaded from the database, holds: its
    /// entries and its tombstones. A member that may have missed other
    /// members' changes takes both, or a registration withdrawn meanwhile
    /// would lose its tombstone here and a stale copy could bring it back.
    pub(super) fn take_over(&self, fresh: Directory) {
        let Directory {
            users, withdrawn, ..
        } = fresh;
        *self.users.write().unwrap_or_else(|p| p.into_inner()) =
            users.into_inner().unwrap_or_else(|p| p.into_inner());
        *self.tombstones_mut() = withdrawn.into_inner().unwrap_or_else(|p| p.into_inner());
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<PhoneNumber, Arc<Entry>>> {
        // A std lock: nothing awaits while it is held.
        self.users.read().unwrap_or_else(|p| p.into_inner())
    }

    fn tombstones(&self) -> std::sync::RwLockReadGuard<'_, HashMap<PhoneNumber, Arc<Tombstone>>> {
        self.withdrawn.read().unwrap_or_else(|p| p.into_inner())
    }

    fn tombstones_mut(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, HashMap<PhoneNumber, Arc<Tombstone>>> {
        self.withdrawn.write().unwrap_or_else(|p| p.into_inner())
    }
}

impl Router {
    /// Whether our own user `phone`, registered at `registered_at`, already
    /// has a current entry (so start-up need not sign a new one).
    pub fn local_entry_is_current(&self, phone: &PhoneNumber, registered_at: i64) -> bool {
        self.directory.holds_current(phone, registered_at, &self.me)
    }

    /// Records and announces one of our own users (after registration).
    pub async fn publish_local(&self, entry: Entry) -> Result<(), DbError> {
        let entry = self.directory.store(&self.store, entry).await?;
        self.flood_directory(None, vec![entry.to_wire()]);
        Ok(())
    }

    /// Applies directory entries from neighbour `from`; forwards what changed.
    pub async fn directory_in(
        &self,
        from: Fingerprint,
        entries: Vec<DirectoryEntry>,
    ) -> Result<(), DbError> {
        let mut changed = Vec::new();
        let mut batch: Vec<Entry> = Vec::new();
        let mut batched = HashSet::new();
        let mut refused = Refused::default();
        for wire in entries {
            let entry = match parse_entry(&wire, from) {
                Ok(e) => e,
                Err(e) => {
                    refused.note(&wire.phone, e.to_string());
                    continue;
                }
            };
            if entry.home == self.me.fingerprint {
                continue;
            }
            // A registration dated in the future would outrank every real
            // one, the rightful home's included, for as long as it lasts.
            if entry.info.registered_at > self.clock.now_ms() + FUTURE_LIMIT_MS {
                refused.note(&entry.info.phone, "dated in the future".into());
                continue;
            }
            // A phone twice in one frame is judged against the first.
            if !batched.insert(entry.phone.clone()) {
                batched = HashSet::from([entry.phone.clone()]);
                let stored = self
                    .directory
                    .store_all(&self.store, std::mem::take(&mut batch));
                changed.extend(stored.await?.iter().map(|e| e.to_wire()));
            }
            let entry = match self.directory.judge(&entry) {
                Applied::Unchanged => continue,
                Applied::Rerouted(ours) => *ours,
                Applied::Updated if verify_signature(&entry).is_err() => {
                    refused.note(&entry.info.phone, "its signature does not verify".into());
                    continue;
                }
                Applied::Updated => entry,
            };
            batch.push(entry);
        }
        let stored = self.directory.store_all(&self.store, batch).await?;
        changed.extend(stored.iter().map(|e| e.to_wire()));
        if !changed.is_empty() {
            self.flood_directory(Some(from), changed);
        }
        refused.log(from);
        Ok(())
    }

    /// The whole directory as link frames, for a neighbour that just
    /// linked: every entry, then every withdrawal.
    pub fn directory_frames(&self) -> Vec<Vec<u8>> {
        let entries: Vec<DirectoryEntry> =
            self.directory.all().iter().map(|e| e.to_wire()).collect();
        let mut frames: Vec<Vec<u8>> = entries
            .chunks(DIRECTORY_CHUNK)
            .map(directory_frame)
            .collect();
        frames.extend(self.withdrawal_frames());
        frames
    }

    pub(super) fn flood_directory(
        &self,
        except: Option<Fingerprint>,
        entries: Vec<DirectoryEntry>,
    ) {
        for chunk in entries.chunks(DIRECTORY_CHUNK) {
            self.neighbours
                .send_all_except(except, &directory_frame(chunk));
        }
    }
}

/// The entries of one `directory` frame that were refused, logged as one
/// line: a neighbour sending hundreds of bad entries must not write hundreds
/// of lines.
#[derive(Default)]
struct Refused {
    count: usize,
    first: Option<(String, String)>,
}

impl Refused {
    fn note(&mut self, phone: &str, why: String) {
        self.count += 1;
        self.first
            .get_or_insert_with(|| (phone.chars().take(20).collect(), why));
    }

    fn log(self, neighbour: Fingerprint) {
        if let Some((phone, why)) = self.first {
            tracing::warn!(%neighbour, refused = self.count, first_phone = ?phone, first_error = %why, "directory entries refused");
        }
    }
}

fn directory_frame(entries: &[DirectoryEntry]) -> Vec<u8> {
    link_frame(&LinkMessage::Directory {
        entries: entries.to_vec(),
    })
}

pub(super) fn from_row(row: DirectoryRow) -> Result<Entry, DbError> {
    let corrupt = |what: &str| DbError::Corrupt(format!("directory row for {}: {what}", row.phone));
    let phone = PhoneNumber::from_canonical(&row.phone).map_err(|_| corrupt("phone"))?;
    let key_type = KeyType::parse(&row.key_type).ok_or_else(|| corrupt("key type"))?;
    let via = match &row.via {
        Some(v) => Some(Fingerprint::parse(v).ok_or_else(|| corrupt("via"))?),
        None => None,
    };
    Ok(Entry {
        phone,
        info: UserInfo {
            phone: row.phone.clone(),
            key_type,
            fingerprint: Fingerprint::of_spki(&row.public_key).to_hex(),
            public_key: B64(row.public_key),
            registered_at: row.registered_at,
            devices: None,
        },
        home: Fingerprint::of_spki(&row.home_key),
        home_key: row.home_key,
        home_name: row.home_name,
        signature: row.signature,
        via,
        hops: row.hops.clamp(0, i64::from(u32::MAX)) as u32,
    })
}

#[cfg(test)]
mod tests;
pub mod withdrawal;
