//! SQLite, the embedded default: one file in the data directory, WAL mode
//! with `synchronous=FULL` (a commit survives power loss), migrated at
//! start from `migrations/sqlite/`.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::error::DatabaseError;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteError, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Connection, SqliteConnection, SqlitePool};

use super::{DbError, Location, migrate};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// SQLite page cache per connection, in KiB.
const CACHE_KIB: u32 = 32 * 1024;
/// Bytes of the database file SQLite may map into memory for reading.
const MMAP_BYTES: u64 = 256 << 20;
/// How long a statement waits for another writer before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Pooled connections: reads, and the small writes outside the queue.
const POOL_SIZE: u32 = 4;

/// SQLite's primary result code for "database or disk is full".
const SQLITE_FULL: i32 = 13;

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

/// Opens (creating if needed, readable by its owner only) the database
/// file and brings its schema up to date. Returns the pool and the options
/// the queue writer connects with.
pub(super) async fn open(path: &Path) -> Result<(SqlitePool, SqliteConnectOptions), DbError> {
    crate::private_files::create_file(path).map_err(|source| DbError::Create {
        path: path.to_owned(),
        source,
    })?;
    let options = connect_options(path)?;
    let location = Location::Sqlite(path.to_owned());
    let pool = SqlitePoolOptions::new()
        .max_connections(POOL_SIZE)
        .connect_with(options.clone())
        .await
        .map_err(migrate::unreachable(&location))?;
    migrate::bring_up_to_date(&pool, &MIGRATOR, &location).await?;
    Ok((pool, options))
}

/// A connection of the writer's own.
pub(super) async fn connect(options: &SqliteConnectOptions) -> Result<SqliteConnection, DbError> {
    Ok(SqliteConnection::connect_with(options).await?)
}

/// "database or disk is full", whatever extended code came with it.
pub(super) fn is_full(e: &dyn DatabaseError) -> bool {
    e.try_downcast_ref::<SqliteError>()
        .and_then(|e| e.code())
        .and_then(|code| code.parse::<i32>().ok())
        .is_some_and(|code| code & 0xff == SQLITE_FULL)
}
