//! Storage: an SQLite database through sqlx, in WAL mode with
//! `synchronous=FULL`, migrated at start. Functions here move opaque bytes;
//! nothing in this module can open an envelope or holds a private key.
//!
//! Writes to the message queue go through one [`writer::QueueWriter`] task
//! that groups concurrent senders' inserts into one transaction (group
//! commit); other tables are small and written directly. Domain types go in
//! and come out as they are; `columns.rs` says how each one is stored.

mod columns;
pub mod directory;
pub mod enqueue;
pub mod otp;
pub mod outbound;
pub mod queue;
pub mod quota;
pub mod users;
pub mod writer;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

/// File name of the server database inside the data directory.
pub const DATABASE_FILE: &str = "carrier.db";

/// SQLite page cache per connection, in KiB.
const CACHE_KIB: u32 = 32 * 1024;
/// Bytes of the database file SQLite may map into memory for reading.
const MMAP_BYTES: u64 = 256 << 20;

/// How long a statement waits for another writer before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors from storage. Their details go to the log; a client only ever sees
/// the stable `internal` code.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot create the database file {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("database error: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("the queue writer has stopped")]
    WriterGone,
    #[error("a stored row is damaged: {0}")]
    Corrupt(String),
    #[error("the transaction was rolled back: {0}")]
    RolledBack(String),
}

/// Connection options shared by the pool and the writer's own connection.
fn connect_options(path: &Path) -> Result<SqliteConnectOptions, DbError> {
    let url = format!("sqlite://{}", path.display());
    Ok(SqliteConnectOptions::from_str(&url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(BUSY_TIMEOUT)
        .foreign_keys(true)
        // Queues of millions of rows: keep their indexes' hot pages in
        // memory rather than reading them from the OS on every insert.
        .pragma("cache_size", format!("-{}", CACHE_KIB))
        .pragma("mmap_size", MMAP_BYTES.to_string()))
}

/// Opens (creating if needed) the database in `data_dir` and runs the
/// embedded migrations.
pub async fn open(data_dir: &Path) -> Result<(SqlitePool, SqliteConnectOptions), DbError> {
    let path = data_dir.join(DATABASE_FILE);
    crate::private_files::create_file(&path).map_err(|source| DbError::Create {
        path: path.clone(),
        source,
    })?;
    let options = connect_options(&path)?;
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options.clone())
        .await?;
    sqlx::migrate!("./migrations").run(&pool).await?;
    Ok((pool, options))
}

/// Milliseconds since the Unix epoch, the unit of every stored time.
pub type Millis = i64;
