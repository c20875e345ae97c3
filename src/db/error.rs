//! What can go wrong in storage, sorted by what a client can do about it:
//! the store is full (retry later), the database cannot be reached (retry
//! later), or something else failed inside the server. [`DbError::code`] is
//! the one place a storage failure becomes a wire code.

use std::path::PathBuf;

use sqlx::error::DatabaseError;

use super::{postgres, sqlite};
use crate::protocol::ErrorCode;

/// Errors from storage. Details go to the log; a client is told the code.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot create the database file {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("\"{0}\" is not a database URL: use sqlite:PATH or postgres://user@host:port/database")]
    BadUrl(String),
    #[error("cannot reach the database at {location}: {reason}")]
    Connect { location: String, reason: String },
    /// The disk holding the database is full: nothing was stored.
    #[error("the database's disk is full: {0}")]
    Full(String),
    /// The database went away (or refuses connections): nothing was stored.
    #[error("the database cannot be reached: {0}")]
    Unavailable(String),
    /// No pooled connection came free in time: the database is gone (the
    /// pool keeps its real error to itself; [`super::health`] finds it
    /// out) or every connection stayed busy.
    #[error("no database connection came free in time")]
    PoolTimedOut,
    #[error(
        "the database's schema is at version {found}, newer than this carrier-server knows \
         (version {known}): run a carrier-server at least as new as the one that last used it"
    )]
    SchemaTooNew { found: i64, known: i64 },
    #[error("database error: {0}")]
    Sqlx(sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("the queue writer has stopped")]
    WriterGone,
    #[error("a stored row is damaged: {0}")]
    Corrupt(String),
    #[error("the transaction was rolled back: {0}")]
    RolledBack(String),
}

impl DbError {
    /// The stable code a client is told: storage that is full or gone is
    /// worth a retry later, and says so; anything else is `internal`.
    pub fn code(&self) -> ErrorCode {
        match self {
            DbError::Full(_) => ErrorCode::StorageFull,
            DbError::Unavailable(_) | DbError::PoolTimedOut | DbError::Connect { .. } => {
                ErrorCode::StorageUnavailable
            }
            _ => ErrorCode::Internal,
        }
    }

    /// The same failure, for every operation of a batch that shared it.
    pub(super) fn for_each_op(&self) -> DbError {
        match self {
            DbError::Full(m) => DbError::Full(m.clone()),
            DbError::Unavailable(m) => DbError::Unavailable(m.clone()),
            other => DbError::RolledBack(other.to_string()),
        }
    }

    /// Whether the database (not one statement) is at fault, so the
    /// connection that met it is replaced.
    pub(super) fn is_outage(&self) -> bool {
        matches!(self, DbError::Full(_) | DbError::Unavailable(_))
    }
}

impl From<sqlx::Error> for DbError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(d) if is_full(d.as_ref()) => DbError::Full(d.message().into()),
            sqlx::Error::Database(d) if postgres::is_unavailable(d.as_ref()) => {
                DbError::Unavailable(postgres::explain(&e))
            }
            sqlx::Error::PoolTimedOut => DbError::PoolTimedOut,
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => DbError::Unavailable(e.to_string()),
            _ => DbError::Sqlx(e),
        }
    }
}

fn is_full(e: &dyn DatabaseError) -> bool {
    sqlite::is_full(e) || postgres::is_full(e)
}
