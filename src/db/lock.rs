//! Work that one member of a cluster does at a time (a neighbour's link,
//! the expiry sweep): a PostgreSQL session advisory lock, held on a
//! connection of its own for as long as the work goes on. PostgreSQL lets
//! go of it when that connection ends, so a member killed with `kill -9`
//! hands the work over as soon as the database notices. On SQLite the
//! server is alone and every lock is granted.

use std::time::Duration;

use sqlx::{Connection, PgConnection};

use super::{DbError, Store};

/// How often a holder checks that its lock's connection still lives.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How long that check may take before the lock counts as lost.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// A lock held; dropping it lets go (the connection closes).
pub struct Lock {
    conn: Option<PgConnection>,
}

impl Lock {
    /// Resolves when the lock can no longer be trusted: its connection
    /// failed, so PostgreSQL may have given the lock to another member.
    /// Never resolves on SQLite.
    pub async fn lost(&mut self) {
        if self.conn.is_none() {
            return std::future::pending().await;
        }
        loop {
            tokio::time::sleep(CHECK_EVERY).await;
            if !self.alive().await {
                return;
            }
        }
    }

    /// Whether the lock's connection still answers (so the lock is still
    /// ours).
    pub async fn alive(&mut self) -> bool {
        let Some(conn) = &mut self.conn else {
            return true;
        };
        matches!(
            tokio::time::timeout(CHECK_TIMEOUT, conn.ping()).await,
            Ok(Ok(()))
        )
    }
}

impl Store {
    /// Takes the lock named `name` if no other member holds it.
    pub async fn try_lock(&self, name: &str) -> Result<Option<Lock>, DbError> {
        let Some(options) = &self.pg_options else {
            return Ok(Some(Lock { conn: None }));
        };
        let mut conn = PgConnection::connect_with(options).await?;
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(self.membership.lock_key(name))
            .fetch_one(&mut conn)
            .await?;
        if !got {
            let _ = conn.close().await;
            return Ok(None);
        }
        Ok(Some(Lock { conn: Some(conn) }))
    }
}
