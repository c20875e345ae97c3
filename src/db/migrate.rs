//! Schema versions at start, the same on both backends: a database whose
//! schema is newer than this binary is refused with a sentence saying so
//! (before anything touches it), and each migration applied is logged.

use sqlx::migrate::{Migrate, Migrator};
use sqlx::pool::PoolConnection;
use sqlx::{Database, Pool};

use super::{DbError, Location};

/// sqlx's table of applied migrations.
const TABLE: &str = "_sqlx_migrations";

/// Refuses a schema newer than `migrator` knows, applies the migrations
/// the database behind `pool` lacks, and logs each.
pub(super) async fn bring_up_to_date<DB: Database>(
    pool: &Pool<DB>,
    migrator: &Migrator,
    location: &Location,
) -> Result<(), DbError>
where
    DB::Connection: Migrate,
{
    // Members of a cluster may start together on one database: each holds
    // the migration lock from its first look at the schema to its last
    // migration, so a new database's table of migrations is created once
    // and each migration is applied (and logged) by one member alone. On
    // PostgreSQL the lock is taken again inside `run`, on the same
    // connection, which holds it twice; on SQLite it is nothing.
    let mut conn = pool.acquire().await?;
    conn.lock().await?;
    let upgraded = upgrade(&mut conn, migrator, location).await;
    let unlocked = conn.unlock().await;
    upgraded?;
    unlocked?;
    Ok(())
}

/// [`bring_up_to_date`]'s work, under the migration lock.
async fn upgrade<DB: Database>(
    conn: &mut PoolConnection<DB>,
    migrator: &Migrator,
    location: &Location,
) -> Result<(), DbError>
where
    DB::Connection: Migrate,
{
    let (current, pending) = pending(&mut **conn, migrator).await?;
    if let (Some(from), Some((to, _))) = (current, pending.last()) {
        // A migration that rebuilds a queue copies every row: said before
        // it starts, so a long start is not mistaken for a hang.
        tracing::info!(%location, from, to, "upgrading the database schema; with a long queue this can take minutes");
    }
    migrator.run(&mut *conn).await?;
    log_applied(location, &pending);
    Ok(())
}

/// What a failure to connect at start says: where, and why.
pub(super) fn unreachable(location: &Location) -> impl FnOnce(sqlx::Error) -> DbError + '_ {
    move |e| DbError::Connect {
        location: location.to_string(),
        reason: e.to_string(),
    }
}

/// The database's schema version (`None` for a new database) and the
/// migrations `migrator` would apply to it, after refusing a schema this
/// binary does not know.
async fn pending<C: Migrate>(
    conn: &mut C,
    migrator: &Migrator,
) -> Result<(Option<i64>, Vec<(i64, String)>), DbError> {
    conn.ensure_migrations_table(TABLE).await?;
    let applied = conn.list_applied_migrations(TABLE).await?;
    let known = migrator.iter().map(|m| m.version).max().unwrap_or(0);
    let current = applied.iter().map(|m| m.version).max();
    if let Some(found) = current
        && found > known
    {
        return Err(DbError::SchemaTooNew { found, known });
    }
    let pending = migrator
        .iter()
        .filter(|m| applied.iter().all(|a| a.version != m.version))
        .map(|m| (m.version, m.description.to_string()))
        .collect();
    Ok((current, pending))
}

/// Logs what [`pending`] listed once the migrator has applied it.
fn log_applied(location: &Location, applied: &[(i64, String)]) {
    for (version, description) in applied {
        tracing::info!(%location, version, description, "database migration applied");
    }
    if applied.is_empty() {
        tracing::debug!(%location, "database schema is up to date");
    }
}
