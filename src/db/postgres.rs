//! PostgreSQL, for operators who already run it and for several servers
//! sharing one store. Every connection runs with `synchronous_commit = on`
//! (a commit is on disk before it is acknowledged, as with SQLite's
//! `synchronous=FULL`) and at `read committed` isolation whatever the
//! database's default: statements that meet another member's concurrent
//! row (the identity claim, the queue's inserts) are written to wait for
//! it and then see it, where a stricter level fails them instead. The
//! schema comes from `migrations/postgres/`.

use std::str::FromStr;
use std::time::Duration;

use sqlx::error::DatabaseError;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgDatabaseError, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};

use super::{DbError, Location, migrate};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// Pooled connections: reads, and the small writes outside the queue.
const POOL_SIZE: u32 = 16;
/// How long a request waits for a pooled connection before it is told the
/// database is unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

fn connect_options(url: &str) -> Result<PgConnectOptions, DbError> {
    let unusable =
        |e: sqlx::Error| DbError::BadUrl(format!("{} ({e})", Location::Postgres(url.into())));
    let options = PgConnectOptions::from_str(url).map_err(unusable)?;
    // An `application_name=` in the URL tells members apart.
    let options = match options.get_application_name() {
        Some(_) => options,
        None => options.application_name("carrier-server"),
    };
    Ok(options.options([
        ("synchronous_commit", "on"),
        ("default_transaction_isolation", "read committed"),
    ]))
}

/// Connects to the database at `url` and brings its schema up to date.
/// Returns the pool and the options the queue writer connects with.
pub(super) async fn open(url: &str) -> Result<(PgPool, PgConnectOptions), DbError> {
    let options = connect_options(url)?;
    let location = Location::Postgres(url.to_owned());
    let pool = PgPoolOptions::new()
        .max_connections(POOL_SIZE)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options.clone())
        .await
        .map_err(migrate::unreachable(&location))?;
    migrate::bring_up_to_date(&pool, &MIGRATOR, &location).await?;
    Ok((pool, options))
}

/// A connection of the writer's own.
pub(super) async fn connect(options: &PgConnectOptions) -> Result<PgConnection, DbError> {
    Ok(PgConnection::connect_with(options).await?)
}

/// SQLSTATE 53100, `disk_full`.
pub(super) fn is_full(e: &dyn DatabaseError) -> bool {
    sqlstate(e).is_some_and(|s| s == "53100")
}

/// The server is going away or not accepting connections: class 08
/// (connection exception), 57P01–57P03 (shutdown, crash, starting up).
pub(super) fn is_unavailable(e: &dyn DatabaseError) -> bool {
    sqlstate(e).is_some_and(|s| s.starts_with("08") || s.starts_with("57P"))
}

fn sqlstate(e: &dyn DatabaseError) -> Option<&str> {
    e.try_downcast_ref::<PgDatabaseError>().map(|e| e.code())
}
