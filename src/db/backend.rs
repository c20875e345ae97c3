//! The two backends behind [`super::Store`], as one closed enum, and where a
//! database is ([`Location`]).
//!
//! Nearly every statement is the same text on both: `$n` placeholders,
//! `RETURNING`, `ON CONFLICT … DO UPDATE` and `CAST(… AS BIGINT)` mean the
//! same to SQLite and PostgreSQL. So a table family's function is written
//! once and [`on_backend!`] compiles its body for each backend's pool or
//! connection; what differs (schema, connection set-up, how a write
//! transaction starts, which errors mean "full" or "gone") lives in
//! [`super::sqlite`] and [`super::postgres`]. The one exception in the
//! text is the statements whose placeholders grow with a batch (multi-row
//! inserts, deletes by a list of ids): on SQLite they use anonymous `?`
//! placeholders ([`super::queue::Placeholder`]), which bind in linear time.

use std::fmt;
use std::path::{Path, PathBuf};

use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres, Sqlite, SqliteConnection, SqlitePool};

use super::DbError;

/// One value per backend: a pool, a connection.
#[derive(Debug, Clone)]
pub(crate) enum Backend<S, P> {
    Sqlite(S),
    Postgres(P),
}

/// The pool that reads and small writes go through.
pub(crate) type Pool = Backend<SqlitePool, PgPool>;
/// A connection of its own (the queue writer's).
pub(crate) type OwnedConn = Backend<SqliteConnection, PgConnection>;
/// A connection lent from the pool.
pub(crate) type Pooled = Backend<PoolConnection<Sqlite>, PoolConnection<Postgres>>;
/// A connection as statements take it, whoever owns it.
pub(crate) type Conn<'c> = Backend<&'c mut SqliteConnection, &'c mut PgConnection>;

/// Evaluates `$body` with `$x` bound to the pool or connection inside
/// `$value`, whichever backend it is: the body is written once and
/// type-checked for each.
macro_rules! on_backend {
    ($value:expr, $x:ident => $body:expr) => {
        match $value {
            $crate::db::backend::Backend::Sqlite($x) => $body,
            $crate::db::backend::Backend::Postgres($x) => $body,
        }
    };
}
pub(crate) use on_backend;

impl OwnedConn {
    pub(super) fn borrow(&mut self) -> Conn<'_> {
        match self {
            Backend::Sqlite(c) => Backend::Sqlite(c),
            Backend::Postgres(c) => Backend::Postgres(c),
        }
    }

    pub(super) async fn close(self) {
        use sqlx::Connection;
        let closed = on_backend!(self, c => c.close().await);
        if let Err(e) = closed {
            tracing::warn!(error = %e, "closing a database connection failed");
        }
    }
}

impl Pool {
    /// A connection from the pool, for a transaction.
    pub(super) async fn acquire(&self) -> Result<Pooled, DbError> {
        Ok(match self {
            Backend::Sqlite(p) => Backend::Sqlite(p.acquire().await?),
            Backend::Postgres(p) => Backend::Postgres(p.acquire().await?),
        })
    }
}

impl Pooled {
    pub(super) fn conn(&mut self) -> Conn<'_> {
        match self {
            Backend::Sqlite(c) => Backend::Sqlite(&mut **c),
            Backend::Postgres(c) => Backend::Postgres(&mut **c),
        }
    }

    /// Gives the connection back to the pool if [`Conn::end`] found it fit,
    /// closes it otherwise.
    pub(super) fn release(mut self, fit: bool) {
        if !fit {
            on_backend!(&mut self, c => c.close_on_drop());
        }
    }
}

/// A write transaction is plain SQL rather than sqlx's `Transaction`:
/// after "database or disk is full" SQLite has already rolled back, sqlx's
/// own `ROLLBACK` then fails, its count of open transactions stays at one,
/// and every later `BEGIN` on that connection used to be refused. Here
/// [`Conn::begin`] opens one, the caller does its work, and [`Conn::end`]
/// commits or rolls back and says whether the connection is still fit.
impl Conn<'_> {
    /// The same connection, lent again for one statement.
    pub(super) fn reborrow(&mut self) -> Conn<'_> {
        match self {
            Backend::Sqlite(c) => Backend::Sqlite(c),
            Backend::Postgres(c) => Backend::Postgres(c),
        }
    }

    /// Commits if `work` (everything since [`Conn::begin`], which may itself
    /// have failed) succeeded, rolls back otherwise. Returns the result and
    /// whether the connection is known to be outside any transaction now.
    pub(super) async fn end<T>(&mut self, work: Result<T, DbError>) -> (Result<T, DbError>, bool) {
        let result = match work {
            Ok(value) => self.execute("COMMIT").await.map(|()| value),
            Err(e) => Err(e),
        };
        match result {
            Ok(value) => (Ok(value), true),
            Err(e) => {
                let fit = self.rollback().await;
                (Err(e), fit)
            }
        }
    }

    /// [`Conn::end`] for work that leaves statements to run just before
    /// the commit (statements with no bound values): they go in the
    /// commit's own round trip. If one fails, the commit does not run and
    /// the transaction is rolled back.
    pub(super) async fn end_after(
        &mut self,
        work: Result<Option<String>, DbError>,
    ) -> (Result<(), DbError>, bool) {
        let result = match work {
            Ok(None) => self.execute("COMMIT").await,
            Ok(Some(before)) => {
                let sql = sqlx::AssertSqlSafe(format!("{before}; COMMIT"));
                on_backend!(self.reborrow(), c => sqlx::raw_sql(sql).execute(c).await.map(drop))
                    .map_err(DbError::from)
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => (Ok(()), true),
            Err(e) => {
                let fit = self.rollback().await;
                (Err(e), fit)
            }
        }
    }

    /// Rolls back work that succeeded but must leave no trace (a refusal
    /// decided half-way, after some of its counts were taken). Returns
    /// whether the connection is known to be outside any transaction now.
    pub(super) async fn abandon(&mut self) -> bool {
        self.rollback().await
    }

    /// Starts a write transaction. SQLite takes the write lock at once, so
    /// a transaction never fails half-way for want of it.
    pub(super) async fn begin(&mut self) -> Result<(), DbError> {
        let sql = match self {
            Backend::Sqlite(_) => "BEGIN IMMEDIATE",
            Backend::Postgres(_) => "BEGIN",
        };
        self.execute(sql).await
    }

    async fn execute(&mut self, sql: &'static str) -> Result<(), DbError> {
        on_backend!(self.reborrow(), c => sqlx::raw_sql(sql).execute(c).await.map(drop))?;
        Ok(())
    }

    /// Ends a failed transaction, which SQLite may have rolled back by
    /// itself. Returns whether the connection is known to be outside any
    /// transaction now.
    async fn rollback(&mut self) -> bool {
        match self.execute("ROLLBACK").await {
            Ok(()) => true,
            Err(DbError::Sqlx(sqlx::Error::Database(e))) => e.message().contains("no transaction"),
            Err(_) => false,
        }
    }
}

/// File name of the SQLite database inside the data directory.
pub const DATABASE_FILE: &str = "carrier.db";

/// Where the server's database is.
#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    /// An SQLite file, created if missing.
    Sqlite(PathBuf),
    /// A PostgreSQL database, by its `postgres://` URL.
    Postgres(String),
}

impl Location {
    /// The default: SQLite in the data directory.
    pub fn in_data_dir(dir: &Path) -> Self {
        Location::Sqlite(dir.join(DATABASE_FILE))
    }

    /// Parses `sqlite:PATH` (or `sqlite://PATH`) and `postgres://…` (or
    /// `postgresql://…`).
    pub fn parse(url: &str) -> Result<Self, DbError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Location::Postgres(url.to_owned()));
        }
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .filter(|p| !p.is_empty())
            .ok_or_else(|| DbError::BadUrl(redact(url)))?;
        Ok(Location::Sqlite(PathBuf::from(path)))
    }
}

/// The location as it may be logged: a password in a URL is hidden.
impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
            Location::Postgres(url) => f.write_str(&redact(url)),
        }
    }
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `scheme://user:secret@host` → `scheme://user:***@host`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_their_backend_and_hide_passwords() {
        assert_eq!(
            Location::parse("sqlite:/var/lib/carrier/carrier.db").unwrap(),
            Location::Sqlite("/var/lib/carrier/carrier.db".into())
        );
        assert_eq!(
            Location::parse("sqlite://rel/c.db").unwrap(),
            Location::Sqlite("rel/c.db".into())
        );
        let pg = Location::parse("postgres://carrier:hunter2@db:5432/carrier").unwrap();
        assert_eq!(pg.to_string(), "postgres://carrier:***@db:5432/carrier");
        for bad in ["mysql://x", "sqlite:", "carrier.db", ""] {
            assert!(Location::parse(bad).is_err(), "{bad} was accepted");
        }
    }
}
