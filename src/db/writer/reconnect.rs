//! Making the writer's connection again after it was lost, with backoff:
//! operations that arrive while the writer waits are refused at once
//! (`storage_unavailable`) rather than held.

use std::time::Duration;

use tokio::time::Instant;

use super::ConnectOptions;
use crate::db::backend::{Backend, OwnedConn};
use crate::db::{DbError, postgres, sqlite};

/// First wait after a failed connection; it doubles on each failure up to
/// [`MAX_WAIT`].
const MIN_WAIT: Duration = Duration::from_millis(100);
const MAX_WAIT: Duration = Duration::from_secs(5);

/// When the writer may try to connect again.
pub(super) struct Reconnect {
    not_before: Instant,
    wait: Duration,
}

impl Default for Reconnect {
    fn default() -> Self {
        Self {
            not_before: Instant::now(),
            wait: MIN_WAIT,
        }
    }
}

impl Reconnect {
    /// Connects, unless the last try was too recent.
    pub(super) async fn connect(&mut self, options: &ConnectOptions) -> Result<OwnedConn, DbError> {
        if Instant::now() < self.not_before {
            return Err(DbError::Unavailable(
                "the connection was lost; connecting again shortly".into(),
            ));
        }
        match connect(options).await {
            Ok(conn) => {
                *self = Self::default();
                tracing::info!("the queue writer has connected to the database again");
                Ok(conn)
            }
            Err(e) => {
                self.not_before = Instant::now() + self.wait;
                self.wait = (self.wait * 2).min(MAX_WAIT);
                Err(e)
            }
        }
    }
}

pub(super) async fn connect(options: &ConnectOptions) -> Result<OwnedConn, DbError> {
    Ok(match options {
        Backend::Sqlite(o) => Backend::Sqlite(sqlite::connect(o).await?),
        Backend::Postgres(o) => Backend::Postgres(postgres::connect(o).await?),
    })
}
