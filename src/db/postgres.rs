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
        .await;
    let pool = match pool {
        Ok(pool) => pool,
        Err(e) => {
            let reason = match cause(&options, e).await {
                Some(cause) => explain(&cause),
                None => "the pool timed out, though PostgreSQL answers: try again".into(),
            };
            return Err(DbError::Connect {
                location: location.to_string(),
                reason,
            });
        }
    };
    migrate::bring_up_to_date(&pool, &MIGRATOR, &location).await?;
    Ok((pool, options))
}

/// A connection of the writer's own.
pub(super) async fn connect(options: &PgConnectOptions) -> Result<PgConnection, DbError> {
    PgConnection::connect_with(options)
        .await
        .map_err(|e| DbError::Unavailable(explain(&e)))
}

/// Why connecting failed, for the operator: sqlx's pool retries a refused
/// connection until [`ACQUIRE_TIMEOUT`] and then says only that it timed
/// out, so after a timeout one connection of its own is tried, whose error
/// is the real cause. `None` when that connection works: the database
/// answers, and the pool's connections were all busy instead.
pub(super) async fn cause(options: &PgConnectOptions, error: sqlx::Error) -> Option<sqlx::Error> {
    if !matches!(error, sqlx::Error::PoolTimedOut) {
        return Some(error);
    }
    match tokio::time::timeout(ACQUIRE_TIMEOUT, PgConnection::connect_with(options)).await {
        Ok(Err(real)) => Some(real),
        Ok(Ok(conn)) => {
            // A close that hangs must not keep the probe "under way" for
            // good: no cause would be looked for again.
            let _ = tokio::time::timeout(ACQUIRE_TIMEOUT, conn.close()).await;
            None
        }
        Err(_) => Some(error),
    }
}

/// A failed connection in words an operator can act on: what went wrong,
/// then what to do. (No sqlx error holds the URL's password.)
pub(super) fn explain(error: &sqlx::Error) -> String {
    use std::io::ErrorKind;
    let (what, todo) = match error {
        sqlx::Error::Io(e) if e.kind() == ErrorKind::ConnectionRefused => (
            "connection refused".to_owned(),
            "start PostgreSQL there, or correct the host and port in the database URL",
        ),
        sqlx::Error::Io(e) => (
            e.to_string(),
            "check the host and port in the database URL and that this machine reaches them",
        ),
        sqlx::Error::Tls(e) => (
            format!("the TLS handshake failed: {e}"),
            "check sslmode (and sslrootcert) in the database URL against PostgreSQL's certificate",
        ),
        sqlx::Error::Database(e) => (e.message().to_owned(), advice(e.as_ref())),
        sqlx::Error::PoolTimedOut => (
            format!("no answer within {} s", ACQUIRE_TIMEOUT.as_secs()),
            "check that the host is up and that no firewall drops connections to its port",
        ),
        other => return other.to_string(),
    };
    if todo.is_empty() {
        what
    } else {
        format!("{what}: {todo}")
    }
}

/// What to do about an error PostgreSQL gave while connecting.
fn advice(e: &dyn DatabaseError) -> &'static str {
    match sqlstate(e) {
        Some(s) if s.starts_with("28") => {
            "check the user and password in the database URL (and PostgreSQL's pg_hba.conf)"
        }
        Some("3D000") => {
            "create it (createdb --owner=USER NAME), or correct the database name in the URL"
        }
        Some("53300") => {
            "PostgreSQL has no connection to spare: raise its max_connections, or stop other \
             clients"
        }
        Some("57P03") => "PostgreSQL is starting or stopping: try again once it is up",
        _ => "",
    }
}

/// SQLSTATE 53100, `disk_full`.
pub(super) fn is_full(e: &dyn DatabaseError) -> bool {
    sqlstate(e).is_some_and(|s| s == "53100")
}

/// The server is going away or not accepting connections: class 08
/// (connection exception), 57P01–57P03 (shutdown, crash, starting up),
/// and the refusals of a new connection a running server can meet when
/// the database changes under it: class 28 (a password or role changed),
/// 3D000 (the database was dropped) and 53300 (no connection to spare).
pub(super) fn is_unavailable(e: &dyn DatabaseError) -> bool {
    sqlstate(e).is_some_and(|s| {
        s.starts_with("08")
            || s.starts_with("57P")
            || s.starts_with("28")
            || s == "3D000"
            || s == "53300"
    })
}

fn sqlstate(e: &dyn DatabaseError) -> Option<&str> {
    e.try_downcast_ref::<PgDatabaseError>().map(|e| e.code())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pool says only that it timed out; the cause found behind it is
    /// the refused connection, said with what to do.
    #[tokio::test]
    async fn a_pool_timeout_is_traced_to_its_cause() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let options = connect_options(&format!(
            "postgres://carrier:secret@127.0.0.1:{port}/carrier"
        ))
        .unwrap();
        let cause = cause(&options, sqlx::Error::PoolTimedOut).await.unwrap();
        let said = explain(&cause);
        assert!(
            said.starts_with("connection refused: start PostgreSQL"),
            "{said}"
        );
    }
}
