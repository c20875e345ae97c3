//! The client's home directory: the identity key (`identity.pem`, mode
//! 0600), the account (`account.json`), and `client.db` holding pinned
//! server keys, pinned contact keys, per-contact counters and the history.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::ClientError;
use crate::domain::Fingerprint;
use crate::protocol::KeyType;

const IDENTITY_FILE: &str = "identity.pem";
const ACCOUNT_FILE: &str = "account.json";
const STORE_FILE: &str = "client.db";

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS servers (addr TEXT PRIMARY KEY, fingerprint TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS contacts (phone TEXT PRIMARY KEY, key_type TEXT NOT NULL,
        public_key BLOB NOT NULL, fingerprint TEXT NOT NULL, pinned_at BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS counters (peer TEXT PRIMARY KEY, next BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS history (id TEXT NOT NULL, direction TEXT NOT NULL,
        peer TEXT NOT NULL, peer_fingerprint TEXT NOT NULL, counter BIGINT NOT NULL,
        text TEXT NOT NULL, sent_at BIGINT NOT NULL, stored_at BIGINT NOT NULL,
        PRIMARY KEY (id, direction))",
    "CREATE UNIQUE INDEX IF NOT EXISTS history_counter ON history (direction, peer_fingerprint, counter)",
];

/// Who this home belongs to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Account {
    pub phone: String,
    pub key_type: KeyType,
    pub fingerprint: String,
}

/// A pinned contact key.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Contact {
    pub phone: String,
    pub key_type: String,
    pub public_key: Vec<u8>,
    pub fingerprint: String,
}

/// One stored message, sent or received.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct HistoryEntry {
    pub id: String,
    pub direction: String,
    pub peer: String,
    pub text: String,
    pub sent_at: i64,
}

/// An opened home directory.
pub struct Home {
    dir: PathBuf,
    pool: SqlitePool,
}

impl Home {
    /// Opens (creating, mode 0700) the home directory and its store.
    pub async fn open(dir: &Path) -> Result<Self, ClientError> {
        crate::private_files::create_dir(dir).map_err(|source| ClientError::Io {
            context: format!("cannot create {}", dir.display()),
            source,
        })?;
        let store = dir.join(STORE_FILE);
        crate::private_files::create_file(&store).map_err(|source| ClientError::Io {
            context: format!("cannot create {}", store.display()),
            source,
        })?;
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", store.display()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(std::time::Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await?;
        for statement in SCHEMA {
            sqlx::query(sqlx::AssertSqlSafe(*statement))
                .execute(&pool)
                .await?;
        }
        Ok(Self {
            dir: dir.to_owned(),
            pool,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn identity_path(&self) -> PathBuf {
        self.dir.join(IDENTITY_FILE)
    }

    pub fn account(&self) -> Result<Option<Account>, ClientError> {
        let path = self.dir.join(ACCOUNT_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| ClientError::Io {
                    context: format!("{} is damaged", path.display()),
                    source: std::io::Error::other(e),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(ClientError::Io {
                context: format!("cannot read {}", path.display()),
                source,
            }),
        }
    }

    pub fn save_account(&self, account: &Account) -> Result<(), ClientError> {
        let path = self.dir.join(ACCOUNT_FILE);
        let json = serde_json::to_vec_pretty(account).expect("an account always serialises");
        crate::private_files::write_atomic(&path, &json).map_err(|source| ClientError::Io {
            context: format!("cannot write {}", path.display()),
            source,
        })
    }

    pub async fn server_pin(&self, addr: &str) -> Result<Option<Fingerprint>, ClientError> {
        let fp: Option<String> =
            sqlx::query_scalar("SELECT fingerprint FROM servers WHERE addr = $1")
                .bind(addr)
                .fetch_optional(&self.pool)
                .await?;
        Ok(fp.and_then(|f| Fingerprint::parse(&f)))
    }

    pub async fn pin_server(&self, addr: &str, fp: Fingerprint) -> Result<(), ClientError> {
        sqlx::query(
            "INSERT INTO servers (addr, fingerprint) VALUES ($1, $2)
             ON CONFLICT (addr) DO UPDATE SET fingerprint = excluded.fingerprint",
        )
        .bind(addr)
        .bind(fp.to_hex())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn contact(&self, phone: &str) -> Result<Option<Contact>, ClientError> {
        Ok(sqlx::query_as::<_, Contact>(
            "SELECT phone, key_type, public_key, fingerprint FROM contacts WHERE phone = $1",
        )
        .bind(phone)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn pin_contact(&self, c: &Contact, now: i64) -> Result<(), ClientError> {
        sqlx::query(
            "INSERT INTO contacts (phone, key_type, public_key, fingerprint, pinned_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (phone) DO UPDATE SET key_type = excluded.key_type,
                 public_key = excluded.public_key, fingerprint = excluded.fingerprint,
                 pinned_at = excluded.pinned_at",
        )
        .bind(&c.phone)
        .bind(&c.key_type)
        .bind(&c.public_key)
        .bind(&c.fingerprint)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The next counter for messages to `peer` (1, 2, 3, …), reserved durably.
    pub async fn next_counter(&self, peer: &str) -> Result<u64, ClientError> {
        let n: i64 = sqlx::query_scalar(
            "INSERT INTO counters (peer, next) VALUES ($1, 2)
             ON CONFLICT (peer) DO UPDATE SET next = next + 1 RETURNING next - 1",
        )
        .bind(peer)
        .fetch_one(&self.pool)
        .await?;
        Ok(n as u64)
    }

    /// Whether a received message with this id is stored (a message to
    /// oneself is stored twice: once sent, once received).
    pub async fn has_received(&self, id: &str) -> Result<bool, ClientError> {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM history WHERE id = $1 AND direction = 'in'")
                .bind(id)
                .fetch_one(&self.pool)
                .await?;
        Ok(n > 0)
    }

    /// Stores a message; returns false if its id or (sender key, counter)
    /// was stored before: a replay or duplicate.
    #[allow(clippy::too_many_arguments)]
    pub async fn record(
        &self,
        id: &str,
        direction: &str,
        peer: &str,
        peer_fingerprint: &str,
        counter: u64,
        text: &str,
        sent_at: i64,
        now: i64,
    ) -> Result<bool, ClientError> {
        let done = sqlx::query(
            "INSERT INTO history (id, direction, peer, peer_fingerprint, counter, text, sent_at, stored_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
        )
        .bind(id)
        .bind(direction)
        .bind(peer)
        .bind(peer_fingerprint)
        .bind(counter as i64)
        .bind(text)
        .bind(sent_at)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The stored conversation, oldest first.
    pub async fn history(&self) -> Result<Vec<HistoryEntry>, ClientError> {
        Ok(sqlx::query_as::<_, HistoryEntry>(
            "SELECT id, direction, peer, text, sent_at FROM history ORDER BY stored_at, sent_at",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn close(self) {
        self.pool.close().await;
    }
}
