//! Storage: the [`Store`], on SQLite (the embedded default, a file in the
//! data directory) or PostgreSQL (`[database] url`), migrated at start.
//! Functions here move opaque bytes; nothing in this module can open an
//! envelope or holds a private key.
//!
//! The rest of the server calls `Store` methods and never names a backend.
//! Behind it is one closed enum of the two backends ([`backend`]); each
//! table family (`users.rs`, `otp.rs`, `directory.rs`, `queue.rs`,
//! `outbound.rs`, and for protocol v2 `devices.rs` and `prekeys.rs`)
//! writes its statements once, in SQL both backends read
//! alike, and [`sqlite`] and [`postgres`] hold what differs.
//!
//! Writes to the queues go through one [`writer`] task per server that
//! groups concurrent senders' inserts into one transaction of multi-row
//! statements (group commit); a sender is answered after that commit.
//! Other tables are small and written directly. [`health`] turns a full
//! disk or a lost database into a few clear log lines, and
//! [`DbError::code`] into `storage_full` or `storage_unavailable`.
//! [`copy`] moves a whole store into an empty one (`carrier-server
//! migrate`).

pub mod admin;
mod backend;
pub mod cluster;
mod columns;
pub mod copy;
pub mod devices;
pub mod directory;
pub mod enqueue;
mod error;
mod health;
pub mod lock;
mod migrate;
pub mod otp;
pub mod outbound;
mod postgres;
pub mod prekeys;
pub mod queue;
pub mod quota;
pub mod remote_devices;
pub mod rendezvous;
pub mod scratch;
mod sqlite;
pub mod users;
pub mod writer;

use std::sync::Arc;

use backend::{Backend, Pool};
pub use backend::{DATABASE_FILE, Location};
pub use error::DbError;
use health::Health;
use quota::Quotas;
use tokio::sync::mpsc;
use writer::{Committed, QueueWriter};

/// Milliseconds since the Unix epoch, the unit of every stored time.
pub type Millis = i64;

/// The server's storage. Clones share one pool and one queue writer.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    writer: QueueWriter,
    health: Arc<Health>,
    location: Arc<Location>,
    /// How to open connections of one's own (advisory locks); PostgreSQL only.
    pg_options: Option<sqlx::postgres::PgConnectOptions>,
    membership: Arc<cluster::Membership>,
}

impl Store {
    /// Opens the database at `location` (creating an SQLite file if
    /// needed), refuses a schema newer than this binary, applies the
    /// migrations it lacks and starts the queue writer. Messages the writer
    /// commits are announced on the returned receiver, in commit order.
    pub async fn open(
        location: &Location,
        quotas: Quotas,
    ) -> Result<(Self, mpsc::UnboundedReceiver<Committed>), DbError> {
        let (pool, options) = match location {
            Location::Sqlite(path) => {
                let (pool, options) = sqlite::open(path).await?;
                (Backend::Sqlite(pool), Backend::Sqlite(options))
            }
            Location::Postgres(url) => {
                let (pool, options) = postgres::open(url).await?;
                (Backend::Postgres(pool), Backend::Postgres(options))
            }
        };
        let pg_options = match &options {
            Backend::Sqlite(_) => None,
            Backend::Postgres(o) => Some(o.clone()),
        };
        let membership = Arc::new(match &pool {
            Backend::Sqlite(_) => cluster::Membership::alone(),
            Backend::Postgres(p) => cluster::Membership::on(p).await?,
        });
        let health = Arc::new(Health::new(pg_options.clone()));
        let (committed_tx, committed) = mpsc::unbounded_channel();
        let writer = QueueWriter::start(
            options,
            quotas,
            committed_tx,
            health.clone(),
            membership.clone(),
        )
        .await?;
        let store = Self {
            pool,
            writer,
            health,
            location: Arc::new(location.clone()),
            pg_options,
            membership,
        };
        Ok((store, committed))
    }

    /// Where the database is (a password in its URL hidden when shown).
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// Commits every write submitted before the call, stops the writer and
    /// closes the pool. Clones that live on get `WriterGone` for writes.
    pub async fn close(self) {
        self.writer.close().await;
        backend::on_backend!(&self.pool, p => p.close().await);
    }

    /// Passes a read's result on, noting whether the database answered.
    fn read<T, E: Into<DbError>>(&self, result: Result<T, E>) -> Result<T, DbError> {
        let result = result.map_err(Into::into);
        self.health.observe_read(&result);
        result
    }

    /// Passes the result of a write outside the queue writer on, noting
    /// how it ended.
    fn wrote<T, E: Into<DbError>>(&self, result: Result<T, E>) -> Result<T, DbError> {
        let result = result.map_err(Into::into);
        self.health.observe_write(&result);
        result
    }
}
