//! Every user of the neighbourhood, as vouched for by their home server, with
//! the route to that server: an in-memory map (so a `send` costs no query)
//! backed by the `directory` table.
//!
//! Conflicts: an entry is identified by its phone; the entry with the later
//! `registered_at` wins everywhere (ties broken by the home server's
//! fingerprint), so a phone registered on two servers ends up homed on the
//! one where it registered last, and a key change replaces the old key.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::crypto::PublicKey;
use crate::db::directory::DirectoryRow;
use crate::db::{DbError, Store};
use crate::domain::{Fingerprint, PhoneNumber};
use crate::protocol::link::DirectoryEntry;
use crate::protocol::{B64, KeyType, UserInfo, signed};

/// A user and the way to their home server.
#[derive(Debug, Clone)]
pub struct Entry {
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

    fn version(&self) -> (i64, [u8; 32]) {
        (self.info.registered_at, *self.home.as_bytes())
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

/// Checks a signed entry received from `via` and turns it into an [`Entry`].
/// Returns the parsed entry without checking the signature; call
/// [`verify_signature`] before trusting a new version.
pub fn parse_entry(e: &DirectoryEntry, via: Fingerprint) -> Result<Entry, EntryError> {
    PhoneNumber::from_canonical(&e.phone)
        .map_err(|_| EntryError::Phone(e.phone.chars().take(20).collect()))?;
    let key = PublicKey::from_spki_der_typed(e.key_type, &e.public_key.0)
        .map_err(|x| EntryError::Key(x.to_string()))?;
    let home_key = PublicKey::from_spki_der_typed(KeyType::P256, &e.home_key.0)
        .map_err(|x| EntryError::Key(format!("home server key: {x}")))?;
    if e.home_name.len() > 255 {
        return Err(EntryError::Key("home name too long".into()));
    }
    Ok(Entry {
        info: UserInfo {
            phone: e.phone.clone(),
            key_type: e.key_type,
            public_key: e.public_key.clone(),
            fingerprint: key.fingerprint().to_hex(),
            registered_at: e.registered_at,
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

/// What applying an entry changed.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    /// Nothing: we hold the same or a newer version, by as short a route.
    Unchanged,
    /// A new user or a newer version: forward it.
    Updated,
    /// Same version by a shorter route: forward it too (others may benefit).
    Rerouted,
}

/// The users of the neighbourhood, keyed by phone.
pub struct Directory {
    me: Fingerprint,
    users: RwLock<HashMap<String, Arc<Entry>>>,
}

impl Directory {
    /// Loads the directory table.
    pub async fn load(store: &Store, me: Fingerprint) -> Result<Self, DbError> {
        let mut users = HashMap::new();
        for row in store.directory().await? {
            let entry = from_row(row)?;
            users.insert(entry.info.phone.clone(), Arc::new(entry));
        }
        Ok(Self {
            me,
            users: RwLock::new(users),
        })
    }

    pub fn me(&self) -> Fingerprint {
        self.me
    }

    pub fn contains(&self, phone: &PhoneNumber) -> bool {
        self.read().contains_key(phone.as_str())
    }

    pub fn get(&self, phone: &PhoneNumber) -> Option<Arc<Entry>> {
        self.read().get(phone.as_str()).cloned()
    }

    /// Every entry, sorted by phone.
    pub fn all(&self) -> Vec<Arc<Entry>> {
        let mut all: Vec<_> = self.read().values().cloned().collect();
        all.sort_by(|a, b| a.info.phone.cmp(&b.info.phone));
        all
    }

    /// Decides what a candidate entry changes, without changing anything.
    /// The caller verifies the signature of `Updated` candidates, then calls
    /// [`Directory::store`].
    pub fn judge(&self, candidate: &Entry) -> Applied {
        let users = self.read();
        let Some(current) = users.get(&candidate.info.phone) else {
            return Applied::Updated;
        };
        if candidate.version() > current.version() {
            return Applied::Updated;
        }
        if candidate.version() < current.version() || current.via.is_none() {
            return Applied::Unchanged;
        }
        if candidate.signature != current.signature
            || signed_bytes(candidate) != signed_bytes(current)
        {
            // Same registration re-signed by its home (e.g. a new address),
            // or a copy whose signed fields differ: either way the signature
            // must be checked before anything is taken from it.
            return Applied::Updated;
        }
        if candidate.hops < current.hops {
            Applied::Rerouted
        } else {
            Applied::Unchanged
        }
    }

    /// Records an entry in memory and in the database.
    pub async fn store(&self, store: &Store, entry: Entry) -> Result<Arc<Entry>, DbError> {
        store.store_directory_entry(&entry.to_row()).await?;
        let entry = Arc::new(entry);
        let mut users = self.users.write().unwrap_or_else(|p| p.into_inner());
        users.insert(entry.info.phone.clone(), entry.clone());
        Ok(entry)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Entry>>> {
        // A std lock: nothing awaits while it is held.
        self.users.read().unwrap_or_else(|p| p.into_inner())
    }
}

fn from_row(row: DirectoryRow) -> Result<Entry, DbError> {
    let corrupt = |what: &str| DbError::Corrupt(format!("directory row for {}: {what}", row.phone));
    let key_type = KeyType::parse(&row.key_type).ok_or_else(|| corrupt("key type"))?;
    let via = match &row.via {
        Some(v) => Some(Fingerprint::parse(v).ok_or_else(|| corrupt("via"))?),
        None => None,
    };
    Ok(Entry {
        info: UserInfo {
            phone: row.phone.clone(),
            key_type,
            fingerprint: Fingerprint::of_spki(&row.public_key).to_hex(),
            public_key: B64(row.public_key),
            registered_at: row.registered_at,
        },
        home: Fingerprint::of_spki(&row.home_key),
        home_key: row.home_key,
        home_name: row.home_name,
        signature: row.signature,
        via,
        hops: row.hops.clamp(0, i64::from(u32::MAX)) as u32,
    })
}
