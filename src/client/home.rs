//! The client's home directory: the identity key (`identity.pem`, mode
//! 0600), the account (`account.json`), and `client.db` holding pinned
//! server keys, pinned contact keys, per-contact counters and the history.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Serialize;
use sqlx::SqlitePool;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::ClientError;
use super::account::{self, Account};
use crate::domain::{Fingerprint, MessageId, PhoneNumber};

const IDENTITY_FILE: &str = "identity.pem";
const STORE_FILE: &str = "client.db";

/// The store's schema, one migration per change. They live in
/// `migrations/client/`, a directory the server's migrator does not read.
static MIGRATOR: Migrator = sqlx::migrate!("./migrations/client");

/// A pinned contact key.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Contact {
    pub phone: String,
    pub key_type: String,
    pub public_key: Vec<u8>,
    pub fingerprint: String,
}

/// Which way a stored message went; stored and shown as `in` or `out`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(rename_all = "lowercase")]
pub enum Direction {
    /// Received from the peer.
    In,
    /// Sent to the peer.
    Out,
}

/// A message to store in the history.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    pub id: MessageId,
    pub direction: Direction,
    /// The sender of a received message, the recipient of a sent one.
    pub peer: &'a PhoneNumber,
    /// The peer's key the message was opened or sealed with.
    pub peer_fingerprint: Fingerprint,
    /// The envelope's counter: each direction, peer key and counter is
    /// stored once, so a replay is refused.
    pub counter: u64,
    pub text: &'a str,
    /// The sender's clock, milliseconds since the Unix epoch.
    pub sent_at: i64,
    /// This client's clock when it stored the message.
    pub stored_at: i64,
}

/// One stored message, sent or received.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct HistoryEntry {
    pub id: String,
    pub direction: Direction,
    pub peer: String,
    pub text: String,
    pub sent_at: i64,
}

/// An opened home directory.
pub struct Home {
    dir: PathBuf,
    pool: SqlitePool,
    /// Held while a ratchet session is read, used and saved: one session
    /// seals and opens, and two sessions of this home (one sending while
    /// another receives) would otherwise each save their own copy and lose
    /// the other's step, reusing or dropping message keys.
    ratchets: tokio::sync::Mutex<()>,
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
        migrate(&pool).await?;
        Ok(Self {
            dir: dir.to_owned(),
            pool,
            ratchets: tokio::sync::Mutex::new(()),
        })
    }

    /// Taken around every read, use and save of ratchet sessions.
    pub(in crate::client) async fn lock_ratchets(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.ratchets.lock().await
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The store, for the v2 tables (`device::store`), whose callers group
    /// statements into transactions of their own.
    pub(in crate::client) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    pub fn identity_path(&self) -> PathBuf {
        self.dir.join(IDENTITY_FILE)
    }

    pub fn account(&self) -> Result<Option<Account>, ClientError> {
        account::load(&self.dir)
    }

    pub fn save_account(&self, account: &Account) -> Result<(), ClientError> {
        account::save(&self.dir, account)
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

    /// The phones of every pinned contact, in order.
    pub async fn contact_phones(&self) -> Result<Vec<String>, ClientError> {
        Ok(
            sqlx::query_scalar("SELECT phone FROM contacts ORDER BY phone")
                .fetch_all(&self.pool)
                .await?,
        )
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

    /// Whether a message from `sender` with this id was received here. A
    /// message is known by its sender's account and its id (docs/PROTOCOL.md
    /// §14.4 step 0): another account's message under the same id is a
    /// different message, kept as well.
    pub async fn has_received(
        &self,
        sender: &PhoneNumber,
        id: MessageId,
    ) -> Result<bool, ClientError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM history WHERE direction = $1 AND peer = $2 AND id = $3",
        )
        .bind(Direction::In)
        .bind(sender.as_str())
        .bind(id.to_hex())
        .fetch_one(&self.pool)
        .await?;
        Ok(n > 0)
    }

    /// Whether this account sent a message with this id (from this device,
    /// or told here by a sync copy from another of its devices).
    pub async fn has_sent(&self, id: MessageId) -> Result<bool, ClientError> {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM history WHERE direction = $1 AND id = $2")
                .bind(Direction::Out)
                .bind(id.to_hex())
                .fetch_one(&self.pool)
                .await?;
        Ok(n > 0)
    }

    /// Stores a message; returns false if it was stored before (a received
    /// one by its sender and id, a sent one by its id) or its (peer key,
    /// counter) was stored before in the same direction: a replay or
    /// duplicate.
    pub async fn record(&self, r: &Record<'_>) -> Result<bool, ClientError> {
        record_in(&self.pool, r).await
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

/// A sender's clock as stored and shown: the payload's `sent at` is a
/// `u64` (docs/PROTOCOL.md §13) and is not checked, but the history keeps
/// it in a signed column, so a time past `i64::MAX` milliseconds (some 292
/// million years from 1970) is kept as `i64::MAX`, never wrapped negative.
pub(in crate::client) fn sent_at_ms(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// A transaction that takes the home's write lock at once. Two sessions of
/// one home (a `chat` sending while it receives, or two commands at once)
/// write device state concurrently; a deferred transaction that reads and
/// then writes after the other committed fails with `SQLITE_BUSY_SNAPSHOT`,
/// which no busy timeout can wait out, whereas this one waits for the lock.
pub(in crate::client) async fn write_tx(
    pool: &SqlitePool,
) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, ClientError> {
    Ok(pool.begin_with("BEGIN IMMEDIATE").await?)
}

/// Stores a message (see [`Home::record`]) through `ex`, so it can share a
/// transaction with the session state that opened it.
pub(in crate::client) async fn record_in(
    ex: impl sqlx::SqliteExecutor<'_>,
    r: &Record<'_>,
) -> Result<bool, ClientError> {
    let done = sqlx::query(
        "INSERT INTO history (id, direction, peer, peer_fingerprint, counter, text, sent_at, stored_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
    )
    .bind(r.id.to_hex())
    .bind(r.direction)
    .bind(r.peer.as_str())
    .bind(r.peer_fingerprint.to_hex())
    .bind(r.counter as i64)
    .bind(r.text)
    .bind(r.sent_at)
    .bind(r.stored_at)
    .execute(ex)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Brings the store's schema up to date. sqlx's migrator takes no lock on
/// SQLite, so two commands opening a new home at once would both apply the
/// first migration and one would fail. The store's write lock serves
/// instead: every migration runs inside one `BEGIN IMMEDIATE` transaction
/// (each in a savepoint of its own), and a second command waits for it to
/// commit, then finds them applied.
async fn migrate(pool: &SqlitePool) -> Result<(), ClientError> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    MIGRATOR.run(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The statements the client ran on every start before its store had
    /// migrations: the schema of every home made until then.
    const PRE_MIGRATION_SCHEMA: &[&str] = &[
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

    const BOB: &str = "+12025550102";

    fn bob() -> PhoneNumber {
        PhoneNumber::from_canonical(BOB).unwrap()
    }

    /// Makes `client.db` in `dir` as the client did before migrations, with
    /// one row in each table.
    async fn pre_migration_home(dir: &Path, id: MessageId, fp: Fingerprint) {
        let options = SqliteConnectOptions::new()
            .filename(dir.join(STORE_FILE))
            .create_if_missing(true);
        let pool = SqlitePoolOptions::new()
            .connect_with(options)
            .await
            .unwrap();
        for statement in PRE_MIGRATION_SCHEMA {
            sqlx::query(sqlx::AssertSqlSafe(*statement))
                .execute(&pool)
                .await
                .unwrap();
        }
        for statement in [
            format!(
                "INSERT INTO servers VALUES ('127.0.0.1:5000', '{}')",
                fp.to_hex()
            ),
            format!(
                "INSERT INTO contacts VALUES ('{BOB}', 'p256', x'00', '{}', 1)",
                fp.to_hex()
            ),
            format!("INSERT INTO counters VALUES ('{BOB}', 5)"),
            format!(
                "INSERT INTO history VALUES ('{}', 'in', '{BOB}', '{}', 3, 'hello', 10, 11)",
                id.to_hex(),
                fp.to_hex()
            ),
        ] {
            sqlx::query(sqlx::AssertSqlSafe(statement))
                .execute(&pool)
                .await
                .unwrap();
        }
        pool.close().await;
    }

    async fn applied_versions(home: &Home) -> Vec<i64> {
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(&home.pool)
            .await
            .unwrap()
    }

    fn all_versions() -> Vec<i64> {
        MIGRATOR.iter().map(|m| m.version).collect()
    }

    #[tokio::test]
    async fn a_home_made_before_migrations_keeps_its_pins_counters_and_history() {
        let dir = tempfile::tempdir().unwrap();
        let (id, fp) = (MessageId::random(), Fingerprint::of_spki(b"bob's key"));
        pre_migration_home(dir.path(), id, fp).await;

        for _ in 0..2 {
            let home = Home::open(dir.path()).await.unwrap();
            assert_eq!(applied_versions(&home).await, all_versions());
            assert_eq!(home.server_pin("127.0.0.1:5000").await.unwrap(), Some(fp));
            let contact = home.contact(BOB).await.unwrap().expect("the pin survives");
            assert_eq!(contact.fingerprint, fp.to_hex());
            assert!(home.has_received(&bob(), id).await.unwrap());
            let history = home.history().await.unwrap();
            assert_eq!(history.len(), 1);
            assert_eq!(history[0].direction, Direction::In);
            assert_eq!(history[0].text, "hello");
            home.close().await;
        }
        let home = Home::open(dir.path()).await.unwrap();
        assert_eq!(home.next_counter(BOB).await.unwrap(), 5);
        let replay = Record {
            id: MessageId::random(),
            direction: Direction::In,
            peer: &bob(),
            peer_fingerprint: fp,
            counter: 3,
            text: "hello again",
            sent_at: 12,
            stored_at: 13,
        };
        assert!(
            !home.record(&replay).await.unwrap(),
            "the old rows still guard against replays"
        );
    }

    /// The last migration before messages were known by sender and id.
    const BEFORE_BY_SENDER: i64 = 2;

    /// Makes `client.db` in `dir` with the schema up to
    /// [`BEFORE_BY_SENDER`], holding a message received from Bob under `id`
    /// and one sent to him under `sent`.
    async fn home_keyed_by_id(dir: &Path, id: MessageId, sent: MessageId, fp: Fingerprint) {
        let options = SqliteConnectOptions::new()
            .filename(dir.join(STORE_FILE))
            .create_if_missing(true);
        let pool = SqlitePoolOptions::new()
            .connect_with(options)
            .await
            .unwrap();
        MIGRATOR.run_to(BEFORE_BY_SENDER, &pool).await.unwrap();
        for (id, direction, text, stored_at) in
            [(id, "in", "hello", 11), (sent, "out", "hi Bob", 12)]
        {
            sqlx::query("INSERT INTO history VALUES ($1, $2, $3, $4, 0, $5, 10, $6)")
                .bind(id.to_hex())
                .bind(direction)
                .bind(BOB)
                .bind(fp.to_hex())
                .bind(text)
                .bind(stored_at)
                .execute(&pool)
                .await
                .unwrap();
        }
        pool.close().await;
    }

    #[tokio::test]
    async fn a_home_keyed_by_id_keeps_its_history_and_then_tells_senders_apart() {
        let dir = tempfile::tempdir().unwrap();
        let (id, sent) = (MessageId::random(), MessageId::random());
        let fp = Fingerprint::of_spki(b"bob's key");
        home_keyed_by_id(dir.path(), id, sent, fp).await;

        let home = Home::open(dir.path()).await.unwrap();
        assert_eq!(applied_versions(&home).await, all_versions());
        let kept: Vec<_> = (home.history().await.unwrap().into_iter())
            .map(|e| (e.id, e.direction, e.text))
            .collect();
        assert_eq!(
            kept,
            [
                (id.to_hex(), Direction::In, "hello".to_owned()),
                (sent.to_hex(), Direction::Out, "hi Bob".to_owned()),
            ]
        );
        assert!(home.has_received(&bob(), id).await.unwrap());
        assert!(home.has_sent(sent).await.unwrap());

        let carol = PhoneNumber::from_canonical("+12025550103").unwrap();
        let again = Record {
            id,
            direction: Direction::In,
            peer: &bob(),
            peer_fingerprint: fp,
            counter: 0,
            text: "hello",
            sent_at: 10,
            stored_at: 13,
        };
        assert!(!home.record(&again).await.unwrap(), "Bob's, stored once");
        assert!(!home.has_received(&carol, id).await.unwrap());
        let from_carol = Record {
            peer: &carol,
            text: "Carol under Bob's id",
            ..again
        };
        assert!(home.record(&from_carol).await.unwrap(), "another sender");
        assert!(!home.record(&from_carol).await.unwrap(), "stored once");
        let sync_copy = Record {
            direction: Direction::Out,
            text: "sent under the id Bob used",
            ..again
        };
        assert!(home.record(&sync_copy).await.unwrap(), "sent, not received");
        let resent = Record {
            id: sent,
            ..sync_copy
        };
        assert!(!home.record(&resent).await.unwrap(), "sent once per id");
        assert_eq!(home.history().await.unwrap().len(), 4);
    }

    #[tokio::test]
    async fn a_new_home_gets_every_migration_once() {
        let dir = tempfile::tempdir().unwrap();
        for _ in 0..2 {
            let home = Home::open(dir.path()).await.unwrap();
            assert_eq!(applied_versions(&home).await, all_versions());
            home.close().await;
        }
    }

    /// Two commands opening a home whose store is still empty (the first
    /// has made the file, neither has migrated it) both get a migrated
    /// store. Making the file itself (the switch to WAL, which SQLite
    /// cannot wait for) is not raced here.
    #[tokio::test]
    async fn two_commands_migrating_a_new_home_at_once_both_succeed() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let options = SqliteConnectOptions::new()
                .filename(dir.path().join(STORE_FILE))
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal);
            SqlitePoolOptions::new()
                .connect_with(options)
                .await
                .unwrap()
                .close()
                .await;
            let (a, b) = tokio::join!(Home::open(dir.path()), Home::open(dir.path()));
            let (a, b) = (a.unwrap(), b.unwrap());
            assert_eq!(applied_versions(&a).await, all_versions());
            a.close().await;
            b.close().await;
        }
    }

    #[tokio::test]
    async fn history_keeps_each_direction_apart() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::open(dir.path()).await.unwrap();
        let sent = Record {
            id: MessageId::random(),
            direction: Direction::Out,
            peer: &bob(),
            peer_fingerprint: Fingerprint::of_spki(b"bob's key"),
            counter: 1,
            text: "note to self",
            sent_at: 10,
            stored_at: 11,
        };
        let received = Record {
            direction: Direction::In,
            stored_at: 12,
            ..sent
        };
        assert!(home.record(&sent).await.unwrap());
        assert!(!home.has_received(&bob(), sent.id).await.unwrap());
        assert!(home.record(&received).await.unwrap());
        assert!(!home.record(&received).await.unwrap(), "stored once");
        assert!(home.has_received(&bob(), sent.id).await.unwrap());
        let directions: Vec<_> = home
            .history()
            .await
            .unwrap()
            .iter()
            .map(|e| e.direction)
            .collect();
        assert_eq!(directions, [Direction::Out, Direction::In]);
    }

    #[test]
    fn a_sender_time_past_the_signed_range_is_kept_at_its_end_not_negative() {
        for (sent, kept) in [
            (0, 0),
            (1_765_000_000_000, 1_765_000_000_000),
            ((1 << 63) - 1, i64::MAX),
            ((1 << 63) + 5, i64::MAX),
            (u64::MAX, i64::MAX),
        ] {
            assert_eq!(sent_at_ms(sent), kept, "{sent}");
        }
    }

    #[test]
    fn the_server_migrator_does_not_read_the_client_migrations() {
        let servers = [
            sqlx::migrate!("./migrations/sqlite"),
            sqlx::migrate!("./migrations/postgres"),
        ];
        for (server, client) in servers
            .iter()
            .flat_map(|s| MIGRATOR.iter().map(move |c| (s, c)))
        {
            assert!(
                server.iter().all(|s| s.checksum != client.checksum),
                "the server's migrator picked up the client's {}",
                client.description
            );
        }
    }
}
