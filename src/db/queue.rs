//! Reads and single-row writes of the `message_queue` table. Batched writes
//! go through [`super::writer`], which calls the functions here inside its
//! transaction.

use sqlx::{SqliteConnection, SqlitePool};

use super::{DbError, Millis};

/// A queued envelope as stored: opaque bytes plus routing fields.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct QueuedMessage {
    pub seq: i64,
    pub id: Vec<u8>,
    pub sender: String,
    pub envelope: Vec<u8>,
    pub received_at: Millis,
}

/// A message to be queued.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub id: [u8; 16],
    pub recipient: String,
    pub sender: String,
    pub envelope: Vec<u8>,
    pub received_at: Millis,
    pub expires_at: Millis,
}

/// The oldest unexpired messages for `recipient` after `after_seq`, at most
/// `limit` of them.
pub async fn fetch(
    pool: &SqlitePool,
    recipient: &str,
    after_seq: i64,
    now: Millis,
    limit: u32,
) -> Result<Vec<QueuedMessage>, DbError> {
    Ok(sqlx::query_as::<_, QueuedMessage>(
        "SELECT seq, id, sender, envelope, received_at FROM message_queue
         WHERE recipient = $1 AND seq > $2 AND expires_at > $3
         ORDER BY seq LIMIT $4",
    )
    .bind(recipient)
    .bind(after_seq)
    .bind(now)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?)
}

/// How many unexpired messages wait for `recipient`.
pub async fn waiting(pool: &SqlitePool, recipient: &str, now: Millis) -> Result<u64, DbError> {
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM message_queue WHERE recipient = $1 AND expires_at > $2",
    )
    .bind(recipient)
    .bind(now)
    .fetch_one(pool)
    .await?;
    Ok(n as u64)
}

/// Count and total envelope bytes queued for `recipient` (expired or not:
/// they occupy space until swept).
pub async fn usage(conn: &mut SqliteConnection, recipient: &str) -> Result<(u64, u64), DbError> {
    let (count, bytes): (i64, i64) = sqlx::query_as(
        "SELECT count(*), coalesce(sum(length(envelope)), 0) FROM message_queue WHERE recipient = $1",
    )
    .bind(recipient)
    .fetch_one(conn)
    .await?;
    Ok((count as u64, bytes as u64))
}

/// Most rows inserted by one statement (6 parameters each, well under
/// SQLite's parameter limit).
pub const INSERT_CHUNK: usize = 100;

/// Inserts messages (at most [`INSERT_CHUNK`]) in one statement, skipping
/// ids already queued; returns the ids that were inserted.
pub async fn insert_many(
    conn: &mut SqliteConnection,
    messages: &[&NewMessage],
) -> Result<std::collections::HashSet<[u8; 16]>, DbError> {
    let sql = format!(
        "INSERT INTO message_queue (id, recipient, sender, envelope, received_at, expires_at)
         VALUES {} ON CONFLICT (id) DO NOTHING RETURNING id",
        values_placeholders(messages.len(), 6)
    );
    let mut query = sqlx::query_scalar::<_, Vec<u8>>(sqlx::AssertSqlSafe(sql));
    for m in messages {
        query = query
            .bind(&m.id[..])
            .bind(&m.recipient)
            .bind(&m.sender)
            .bind(&m.envelope)
            .bind(m.received_at)
            .bind(m.expires_at);
    }
    let ids = query.fetch_all(conn).await?;
    Ok(ids
        .iter()
        .filter_map(|id| id.as_slice().try_into().ok())
        .collect())
}

/// `($1, …, $k), ($k+1, …)` for `rows` rows of `per_row` placeholders.
pub(super) fn values_placeholders(rows: usize, per_row: usize) -> String {
    (0..rows)
        .map(|r| {
            let cells: Vec<String> = (1..=per_row)
                .map(|c| format!("${}", r * per_row + c))
                .collect();
            format!("({})", cells.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Most ids deleted by one statement (well under SQLite's parameter limit).
pub const DELETE_CHUNK: usize = 500;

/// The two tables of queued envelopes: a recipient's messages here, and
/// messages waiting for a neighbour. They share their deletion rules.
#[derive(Debug, Clone, Copy)]
pub enum Table {
    Messages,
    Outbound,
}

impl Table {
    fn name(self) -> &'static str {
        match self {
            Table::Messages => "message_queue",
            Table::Outbound => "outbound_queue",
        }
    }

    /// The column naming whose queue a row is in.
    fn owner(self) -> &'static str {
        match self {
            Table::Messages => "recipient",
            Table::Outbound => "neighbour",
        }
    }
}

/// Deletes rows of `owner`'s queue by id (at most [`DELETE_CHUNK`]);
/// returns the envelope size of each row that existed. Only fixed names and
/// placeholders go into the statement's text; every value is bound.
pub async fn delete_many(
    conn: &mut SqliteConnection,
    table: Table,
    owner: &str,
    ids: &[[u8; 16]],
) -> Result<Vec<u64>, DbError> {
    let placeholders: Vec<String> = (2..ids.len() + 2).map(|i| format!("${i}")).collect();
    let sql = format!(
        "DELETE FROM {} WHERE {} = $1 AND id IN ({}) RETURNING length(envelope)",
        table.name(),
        table.owner(),
        placeholders.join(", ")
    );
    let mut query = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(owner);
    for id in ids {
        query = query.bind(&id[..]);
    }
    let sizes: Vec<i64> = query.fetch_all(conn).await?;
    Ok(sizes.into_iter().map(|s| s as u64).collect())
}

/// Deletes the expired rows among the `limit` oldest of `table`; returns
/// the owner and envelope size of each, so quota counters can follow.
/// Looking only at the oldest rows keeps a sweep cheap however long the
/// queue; since every message gets the same lifetime, expiry follows arrival
/// order (a message that expires earlier than an older one waits for it, and
/// nothing expired is ever fetched or relayed meanwhile).
pub async fn delete_expired(
    conn: &mut SqliteConnection,
    table: Table,
    now: Millis,
    limit: u32,
) -> Result<Vec<(String, u64)>, DbError> {
    let sql = format!(
        "DELETE FROM {t} WHERE seq IN (
             SELECT seq FROM (SELECT seq, expires_at FROM {t} ORDER BY seq LIMIT $2)
             WHERE expires_at <= $1)
         RETURNING {owner}, length(envelope)",
        t = table.name(),
        owner = table.owner()
    );
    let rows: Vec<(String, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(conn)
        .await?;
    Ok(rows.into_iter().map(|(o, s)| (o, s as u64)).collect())
}
