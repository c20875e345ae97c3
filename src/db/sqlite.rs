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
use sqlx::{AssertSqlSafe, Connection, SqliteConnection, SqlitePool};

use super::{DbError, Location, migrate};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// Page cache per connection, in KiB, for a small database...
const MIN_CACHE_KIB: u64 = 2 * 1024;
/// ...and at most, for queues of millions of rows.
const MAX_CACHE_KIB: u64 = 32 * 1024;
/// The cache is sized to this fraction of the database file, between the two.
const CACHE_SHARE: u64 = 8;
/// From this size on, SQLite maps the file into memory for reading...
const MMAP_FROM_BYTES: u64 = 64 << 20;
/// ...this much of it.
const MMAP_BYTES: u64 = 256 << 20;
/// How long a statement waits for another writer before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Pooled connections: reads, and the small writes outside the queue.
const POOL_SIZE: u32 = 4;

/// SQLite's primary result code for "database or disk is full".
const SQLITE_FULL: i32 = 13;

/// Connection options shared by the pool and the writer's own connection.
pub(super) fn connect_options(path: &Path) -> Result<SqliteConnectOptions, DbError> {
    let url = format!("sqlite://{}", path.display());
    Ok(SqliteConnectOptions::from_str(&url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(BUSY_TIMEOUT)
        .foreign_keys(true)
        .pragma("cache_size", format!("-{MIN_CACHE_KIB}"))
        .pragma("mmap_size", "0"))
}

/// Page cache (KiB) and memory map (bytes) for a database of `db_bytes`.
/// A small server pays a few MiB; queues of millions of rows keep their
/// indexes' hot pages in memory rather than reading them from the OS on
/// every insert.
fn memory_for(db_bytes: u64) -> (u64, u64) {
    let cache_kib = (db_bytes / 1024 / CACHE_SHARE).clamp(MIN_CACHE_KIB, MAX_CACHE_KIB);
    let mmap = if db_bytes >= MMAP_FROM_BYTES {
        MMAP_BYTES
    } else {
        0
    };
    (cache_kib, mmap)
}

/// Sizes the connection's cache and memory map to the database as it is
/// now: done on every new connection, and by the queue writer from time to
/// time as the queue grows or shrinks.
pub(super) async fn fit_memory(conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
        .fetch_one(&mut *conn)
        .await?;
    let page_size: i64 = sqlx::query_scalar("PRAGMA page_size")
        .fetch_one(&mut *conn)
        .await?;
    let db_bytes = u64::try_from(pages.saturating_mul(page_size)).unwrap_or(0);
    let (cache_kib, mmap) = memory_for(db_bytes);
    // PRAGMA takes no bound parameters; both values are our own integers.
    sqlx::query(AssertSqlSafe(format!("PRAGMA cache_size = -{cache_kib}")))
        .execute(&mut *conn)
        .await?;
    sqlx::query(AssertSqlSafe(format!("PRAGMA mmap_size = {mmap}")))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Opens (creating if needed, readable by its owner only) the database
/// file and brings its schema up to date, warning if SQLite was built
/// slower than `.cargo/config.toml` asks. Returns the pool and the options
/// the queue writer connects with.
pub(super) async fn open(path: &Path) -> Result<(SqlitePool, SqliteConnectOptions), DbError> {
    let file = crate::data_lock::without_query(path);
    crate::private_files::create_file(&file).map_err(|source| DbError::Create {
        path: path.to_owned(),
        source,
    })?;
    let options = connect_options(path)?;
    let location = Location::Sqlite(path.to_owned());
    let pool = SqlitePoolOptions::new()
        .max_connections(POOL_SIZE)
        .after_connect(|conn, _| Box::pin(fit_memory(conn)))
        .connect_with(options.clone())
        .await
        .map_err(migrate::unreachable(&location))?;
    migrate::bring_up_to_date(&pool, &MIGRATOR, &location).await?;
    // A failed read of the options says nothing about the build: no warning.
    if let Ok(false) = without_memory_statistics(&pool).await {
        tracing::warn!(
            "this build's SQLite keeps memory statistics under one process-wide lock, which \
             slows concurrent fetches: build from inside Carrier's repository, where \
             .cargo/config.toml sets LIBSQLITE3_FLAGS, and leave LIBSQLITE3_FLAGS unset"
        );
    }
    Ok((pool, options))
}

/// Whether SQLite was compiled without its memory statistics, as
/// `.cargo/config.toml` asks: every allocation of every connection would
/// otherwise take one lock for the whole process, and the readers serving
/// fetches queue on it (docs/BENCHMARKS.md, "SQLite without memory
/// statistics"). A build without the flag is correct, only slower.
async fn without_memory_statistics(pool: &SqlitePool) -> Result<bool, sqlx::Error> {
    let options: Vec<String> = sqlx::query_scalar("PRAGMA compile_options")
        .fetch_all(pool)
        .await?;
    Ok(options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"))
}

/// A connection of the writer's own. Its statement journals are kept in
/// memory: inside a batch's transaction, every multi-row insert or delete
/// first copies each page it changes so that it alone can be undone, and
/// past 64 KiB SQLite spills those copies to a temporary file, two
/// `pwrite`s a page (more system calls than the WAL itself takes in W1 and
/// W2). A journal holds at most the pages one statement changes, and the
/// writer's statements are bounded (100 inserts, 500 deletes, one sweep
/// step). The one statement that sorts is the grouped count of a
/// recipient's queue the writer reads when it first meets them
/// ([`super::queue::usage_by_sender`]): a few dozen bytes a row, bounded by
/// the recipient's quota. The pool's connections, which run migrations and
/// their index builds, keep temporary data in files.
pub(super) async fn connect(options: &SqliteConnectOptions) -> Result<SqliteConnection, DbError> {
    let options = options.clone().pragma("temp_store", "memory");
    let mut conn = SqliteConnection::connect_with(&options).await?;
    fit_memory(&mut conn).await?;
    Ok(conn)
}

/// "database or disk is full", whatever extended code came with it.
pub(super) fn is_full(e: &dyn DatabaseError) -> bool {
    e.try_downcast_ref::<SqliteError>()
        .and_then(|e| e.code())
        .and_then(|code| code.parse::<i32>().ok())
        .is_some_and(|code| code & 0xff == SQLITE_FULL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_database_gets_the_least_memory() {
        assert_eq!(memory_for(0), (MIN_CACHE_KIB, 0));
        assert_eq!(memory_for(10 << 20), (MIN_CACHE_KIB, 0));
    }

    #[test]
    fn memory_grows_with_the_database_up_to_a_bound() {
        assert_eq!(memory_for(128 << 20), (16 * 1024, MMAP_BYTES));
        assert_eq!(memory_for(4 << 30), (MAX_CACHE_KIB, MMAP_BYTES));
    }

    /// The bundled SQLite is built as `.cargo/config.toml` asks. A
    /// packager's build on the system's SQLite (libsqlite3-sys's
    /// `LIBSQLITE3_SYS_USE_PKG_CONFIG`) cannot be, and is only warned about
    /// at start.
    #[tokio::test]
    async fn sqlite_is_built_without_memory_statistics() {
        if std::env::var_os("LIBSQLITE3_SYS_USE_PKG_CONFIG").is_some() {
            eprintln!("note: the system's SQLite is in use; its build flags were not checked");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (pool, _) = open(&dir.path().join("carrier.db")).await.unwrap();
        assert!(
            without_memory_statistics(&pool).await.unwrap(),
            "SQLite was built with memory statistics: was LIBSQLITE3_FLAGS set in the \
             environment, or cargo run from outside the repository?"
        );
        pool.close().await;
    }

    /// The sizes a connection actually runs with.
    async fn memory_of(conn: &mut SqliteConnection) -> (i64, i64) {
        let cache: i64 = sqlx::query_scalar("PRAGMA cache_size")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        let mmap: i64 = sqlx::query_scalar("PRAGMA mmap_size")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        (cache, mmap)
    }

    /// The writer's statement journals stay in memory; the pool, which
    /// builds indexes in migrations, keeps its temporary data in files.
    #[tokio::test]
    async fn only_the_writer_keeps_temporary_data_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let (pool, options) = open(&dir.path().join("carrier.db")).await.unwrap();
        let mut writer = connect(&options).await.unwrap();
        let temp_store = "PRAGMA temp_store";
        let in_writer: i64 = sqlx::query_scalar(temp_store)
            .fetch_one(&mut writer)
            .await
            .unwrap();
        let in_pool: i64 = sqlx::query_scalar(temp_store)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!((in_writer, in_pool), (2, 0), "2 is MEMORY, 0 the default");
        writer.close().await.unwrap();
        pool.close().await;
    }

    #[tokio::test]
    async fn a_connection_is_refitted_as_the_file_grows() {
        let dir = tempfile::tempdir().unwrap();
        let (pool, options) = open(&dir.path().join("carrier.db")).await.unwrap();
        let mut conn = connect(&options).await.unwrap();
        assert_eq!(memory_of(&mut conn).await, (-(MIN_CACHE_KIB as i64), 0));
        sqlx::query("CREATE TABLE filler (b BLOB)")
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::query(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 32) \
             INSERT INTO filler SELECT zeroblob(1 << 20) FROM n",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        fit_memory(&mut conn).await.unwrap();
        let (cache, mmap) = memory_of(&mut conn).await;
        assert!(
            cache < -(MIN_CACHE_KIB as i64),
            "cache {cache} KiB did not grow"
        );
        assert_eq!(mmap, 0, "a 32 MiB file is not mapped");
        conn.close().await.unwrap();
        pool.close().await;
    }
}
