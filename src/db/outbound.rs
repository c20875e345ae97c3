//! The `outbound_queue`, `relay_seen` and `neighbour_pins` tables: what waits
//! for each neighbour, what was already received from one, and which keys
//! neighbours were pinned to.

use sqlx::{SqliteConnection, SqlitePool};

use super::{DbError, Millis};

/// A message waiting for a neighbour.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OutboundRow {
    pub seq: i64,
    pub id: Vec<u8>,
    pub recipient: String,
    pub sender: String,
    pub envelope: Vec<u8>,
    pub received_at: Millis,
    pub expires_at: Millis,
    /// JSON array of the fingerprints of servers crossed so far.
    pub path: String,
}

/// The next messages for `neighbour` after `after_seq`, in order.
pub async fn next(
    pool: &SqlitePool,
    neighbour: &str,
    after_seq: i64,
    now: Millis,
    limit: u32,
) -> Result<Vec<OutboundRow>, DbError> {
    Ok(sqlx::query_as::<_, OutboundRow>(
        "SELECT seq, id, recipient, sender, envelope, received_at, expires_at, path
         FROM outbound_queue WHERE neighbour = $1 AND seq > $2 AND expires_at > $3
         ORDER BY seq LIMIT $4",
    )
    .bind(neighbour)
    .bind(after_seq)
    .bind(now)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?)
}

/// Count and bytes waiting for `neighbour`.
pub async fn usage(conn: &mut SqliteConnection, neighbour: &str) -> Result<(u64, u64), DbError> {
    let (count, bytes): (i64, i64) = sqlx::query_as(
        "SELECT count(*), coalesce(sum(length(envelope)), 0) FROM outbound_queue WHERE neighbour = $1",
    )
    .bind(neighbour)
    .fetch_one(conn)
    .await?;
    Ok((count as u64, bytes as u64))
}

/// A message to queue for a neighbour.
#[derive(Debug, Clone)]
pub struct NewOutbound {
    pub neighbour: String,
    pub path: String,
}

/// Inserts messages for neighbours (at most `queue::INSERT_CHUNK`) in one
/// statement, skipping ones already queued for the same neighbour; returns
/// the (neighbour, id) pairs inserted.
pub async fn insert_many(
    conn: &mut SqliteConnection,
    rows: &[(&super::queue::NewMessage, &NewOutbound)],
) -> Result<std::collections::HashSet<(String, [u8; 16])>, DbError> {
    let sql = format!(
        "INSERT INTO outbound_queue (neighbour, id, recipient, sender, envelope, received_at, expires_at, path)
         VALUES {} ON CONFLICT (neighbour, id) DO NOTHING RETURNING neighbour, id",
        super::queue::values_placeholders(rows.len(), 8)
    );
    let mut query = sqlx::query_as::<_, (String, Vec<u8>)>(sqlx::AssertSqlSafe(sql));
    for (m, out) in rows {
        query = query
            .bind(&out.neighbour)
            .bind(&m.id[..])
            .bind(&m.recipient)
            .bind(&m.sender)
            .bind(&m.envelope)
            .bind(m.received_at)
            .bind(m.expires_at)
            .bind(&out.path);
    }
    let done = query.fetch_all(conn).await?;
    Ok(done
        .into_iter()
        .filter_map(|(n, id)| Some((n, id.as_slice().try_into().ok()?)))
        .collect())
}

/// Records relayed ids (at most `queue::INSERT_CHUNK`); returns those not
/// seen before.
pub async fn mark_seen_many(
    conn: &mut SqliteConnection,
    ids: &[([u8; 16], Millis)],
) -> Result<std::collections::HashSet<[u8; 16]>, DbError> {
    let sql = format!(
        "INSERT INTO relay_seen (id, expires_at) VALUES {} ON CONFLICT (id) DO NOTHING RETURNING id",
        super::queue::values_placeholders(ids.len(), 2)
    );
    let mut query = sqlx::query_scalar::<_, Vec<u8>>(sqlx::AssertSqlSafe(sql));
    for (id, expires_at) in ids {
        query = query.bind(&id[..]).bind(*expires_at);
    }
    let fresh = query.fetch_all(conn).await?;
    Ok(fresh
        .iter()
        .filter_map(|id| id.as_slice().try_into().ok())
        .collect())
}

pub async fn forget_seen(conn: &mut SqliteConnection, now: Millis) -> Result<u64, DbError> {
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

pub async fn pinned(pool: &SqlitePool, address: &str) -> Result<Option<String>, DbError> {
    Ok(
        sqlx::query_scalar("SELECT fingerprint FROM neighbour_pins WHERE address = $1")
            .bind(address)
            .fetch_optional(pool)
            .await?,
    )
}

pub async fn pin(pool: &SqlitePool, address: &str, fingerprint: &str) -> Result<(), DbError> {
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
