//! The `outbound_queue`, `relay_seen` and `neighbour_pins` tables: what waits
//! for each neighbour, what was already received from one, and which keys
//! neighbours were pinned to.

use std::collections::HashSet;

use sqlx::{SqliteConnection, SqlitePool};

use super::queue::{NewMessage, values_placeholders};
use super::{DbError, Millis};
use crate::domain::{Fingerprint, MessageId};

/// A message waiting for a neighbour.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OutboundRow {
    pub seq: i64,
    pub id: MessageId,
    pub recipient: String,
    pub sender: String,
    pub envelope: Vec<u8>,
    pub received_at: Millis,
    pub expires_at: Millis,
    /// JSON array of the fingerprints of servers crossed so far.
    pub path: String,
}

/// The next messages for `neighbour` after `after_seq`, in order. A row
/// whose id is not 16 bytes (Carrier never writes one) is passed over
/// rather than holding up the rows behind it.
pub async fn next(
    pool: &SqlitePool,
    neighbour: &Fingerprint,
    after_seq: i64,
    now: Millis,
    limit: u32,
) -> Result<Vec<OutboundRow>, DbError> {
    Ok(sqlx::query_as::<_, OutboundRow>(
        "SELECT seq, id, recipient, sender, envelope, received_at, expires_at, path
         FROM outbound_queue WHERE neighbour = $1 AND seq > $2 AND expires_at > $3
             AND length(id) = 16
         ORDER BY seq LIMIT $4",
    )
    .bind(neighbour)
    .bind(after_seq)
    .bind(now)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?)
}

/// A message to queue for a neighbour.
#[derive(Debug, Clone)]
pub struct NewOutbound {
    pub neighbour: Fingerprint,
    /// JSON array of the fingerprints of servers crossed so far.
    pub path: String,
}

/// Inserts messages for neighbours (at most `queue::INSERT_CHUNK`) in one
/// statement, skipping ones already queued for the same neighbour; returns
/// the (neighbour, id) pairs inserted.
pub(super) async fn insert_many(
    conn: &mut SqliteConnection,
    rows: &[(&NewMessage, &NewOutbound)],
) -> Result<HashSet<(Fingerprint, MessageId)>, DbError> {
    let sql = format!(
        "INSERT INTO outbound_queue (neighbour, id, recipient, sender, envelope, received_at, expires_at, path)
         VALUES {} ON CONFLICT (neighbour, id) DO NOTHING RETURNING neighbour, id",
        values_placeholders(rows.len(), 8)
    );
    let mut query = sqlx::query_as::<_, (Fingerprint, MessageId)>(sqlx::AssertSqlSafe(sql));
    for (m, out) in rows {
        query = query
            .bind(out.neighbour)
            .bind(m.id)
            .bind(&m.recipient)
            .bind(&m.sender)
            .bind(&m.envelope)
            .bind(m.received_at)
            .bind(m.expires_at)
            .bind(&out.path);
    }
    Ok(query.fetch_all(conn).await?.into_iter().collect())
}

/// Records relayed ids (at most `queue::INSERT_CHUNK`); returns those not
/// seen before.
pub(super) async fn mark_seen_many(
    conn: &mut SqliteConnection,
    ids: &[(MessageId, Millis)],
) -> Result<HashSet<MessageId>, DbError> {
    let sql = format!(
        "INSERT INTO relay_seen (id, expires_at) VALUES {} ON CONFLICT (id) DO NOTHING RETURNING id",
        values_placeholders(ids.len(), 2)
    );
    let mut query = sqlx::query_scalar::<_, MessageId>(sqlx::AssertSqlSafe(sql));
    for (id, expires_at) in ids {
        query = query.bind(id).bind(*expires_at);
    }
    Ok(query.fetch_all(conn).await?.into_iter().collect())
}

pub(super) async fn forget_seen(conn: &mut SqliteConnection, now: Millis) -> Result<u64, DbError> {
    let done = sqlx::query(
        "DELETE FROM relay_seen WHERE rowid IN (
             SELECT rowid FROM (SELECT rowid, expires_at FROM relay_seen ORDER BY rowid LIMIT 5000)
             WHERE expires_at <= $1)",
    )
    .bind(now)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// The key pinned for the neighbour at `address`. A damaged pin counts as
/// none, so the neighbour is pinned again on its next contact.
pub async fn pinned(pool: &SqlitePool, address: &str) -> Result<Option<Fingerprint>, DbError> {
    let pin: Option<String> =
        sqlx::query_scalar("SELECT fingerprint FROM neighbour_pins WHERE address = $1")
            .bind(address)
            .fetch_optional(pool)
            .await?;
    Ok(pin.and_then(|hex| Fingerprint::parse(&hex)))
}

pub async fn pin(
    pool: &SqlitePool,
    address: &str,
    fingerprint: Fingerprint,
) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO neighbour_pins (address, fingerprint) VALUES ($1, $2)
         ON CONFLICT (address) DO UPDATE SET fingerprint = excluded.fingerprint",
    )
    .bind(address)
    .bind(fingerprint)
    .execute(pool)
    .await?;
    Ok(())
}
