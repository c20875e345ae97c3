//! Who is registered here: an in-memory copy of the `users` table, loaded at
//! start and updated on registration, so a `send` costs no user query.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use sqlx::SqlitePool;

use crate::db::{self, DbError, users::UserRow};
use crate::domain::PhoneNumber;
use crate::protocol::{B64, KeyType, UserInfo};

/// The registered users, keyed by phone.
#[derive(Default)]
pub struct Directory {
    users: RwLock<HashMap<String, Arc<UserInfo>>>,
}

impl Directory {
    /// Loads every user from the database.
    pub async fn load(pool: &SqlitePool) -> Result<Self, DbError> {
        let mut users = HashMap::new();
        for row in db::users::all(pool).await? {
            let info = to_info(row)?;
            users.insert(info.phone.clone(), Arc::new(info));
        }
        Ok(Self { users: RwLock::new(users) })
    }

    pub fn contains(&self, phone: &PhoneNumber) -> bool {
        self.read().contains_key(phone.as_str())
    }

    pub fn get(&self, phone: &PhoneNumber) -> Option<Arc<UserInfo>> {
        self.read().get(phone.as_str()).cloned()
    }

    /// Records a new or re-keyed user after registration committed.
    pub fn upsert(&self, info: UserInfo) {
        let mut users = self.users.write().unwrap_or_else(|p| p.into_inner());
        users.insert(info.phone.clone(), Arc::new(info));
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<UserInfo>>> {
        // A std lock: nothing awaits while it is held.
        self.users.read().unwrap_or_else(|p| p.into_inner())
    }
}

fn to_info(row: UserRow) -> Result<UserInfo, DbError> {
    let key_type = KeyType::parse(&row.key_type)
        .ok_or_else(|| DbError::Corrupt(format!("unknown key type for {}", row.phone)))?;
    Ok(UserInfo {
        phone: row.phone,
        key_type,
        public_key: B64(row.public_key),
        fingerprint: row.fingerprint,
        registered_at: row.registered_at,
    })
}
