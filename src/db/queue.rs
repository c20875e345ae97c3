//! The queues of envelopes: a recipient's (`message_queue`) and a
//! neighbour's (`outbound_queue`), how they are named, and the statements on
//! them. Reads go straight to the pool; writes go through
//! [`super::writer`], which calls the functions here inside its transaction.

use std::collections::HashSet;
use std::fmt::Write;

use super::backend::{Backend, Conn, on_backend};
use super::quota::Usage;
use super::{DbError, Millis, Store};
use crate::domain::{Fingerprint, MessageId, PhoneNumber};

/// One queue of envelopes: a recipient's queue here, or the outbound queue
/// of the neighbour that leads to a recipient's home.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueRef {
    /// The queue of an account without devices.
    Recipient(PhoneNumber),
    /// The queue of one device of an account (quotas count the account's
    /// devices together).
    Device(PhoneNumber, u32),
    /// A neighbour's queue, for messages to one recipient device (0: v1
    /// messages to a whole account), and to one recipient when named (ids
    /// are unique per recipient only; an older neighbour names none).
    Neighbour(Fingerprint, u32, Option<PhoneNumber>),
    /// The messages one sender (the last phone) queued for one device of
    /// an account (0: an account without devices). Ids are unique per
    /// recipient device and sender, so an acknowledgement names both.
    Sent(PhoneNumber, u32, PhoneNumber),
}

impl QueueRef {
    pub(super) fn key(&self) -> QueueKey<'_> {
        match self {
            QueueRef::Recipient(phone) | QueueRef::Device(phone, _) | QueueRef::Sent(phone, ..) => {
                QueueKey::Recipient(phone)
            }
            QueueRef::Neighbour(fp, ..) => QueueKey::Neighbour(*fp),
        }
    }

    /// The recipient's device the rows belong to: 0 for an account
    /// without devices (and a neighbour's v1 messages).
    pub(super) fn device(&self) -> i64 {
        match self {
            QueueRef::Device(_, device)
            | QueueRef::Neighbour(_, device, _)
            | QueueRef::Sent(_, device, _) => i64::from(*device),
            QueueRef::Recipient(_) => 0,
        }
    }

    /// The column and the phone the rows are further limited to, if named:
    /// a recipient's rows to one sender, a neighbour's to one recipient.
    pub(super) fn limited_to(&self) -> Option<(&'static str, &PhoneNumber)> {
        match self {
            QueueRef::Sent(_, _, sender) => Some(("sender", sender)),
            QueueRef::Neighbour(_, _, to) => to.as_ref().map(|to| ("recipient", to)),
            QueueRef::Recipient(_) | QueueRef::Device(..) => None,
        }
    }
}

/// A borrowed [`QueueRef`]: what quota counts are keyed by, so naming a
/// message's queue copies nothing. Bound to a statement, it is the value of
/// its table's owner column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum QueueKey<'a> {
    Recipient(&'a PhoneNumber),
    Neighbour(Fingerprint),
}

/// A queue as logged: the recipient, or `neighbour <fingerprint>`.
impl std::fmt::Display for QueueKey<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QueueKey::Recipient(phone) => write!(f, "{phone}"),
            QueueKey::Neighbour(fp) => write!(f, "neighbour {fp}"),
        }
    }
}

impl QueueKey<'_> {
    pub(super) fn table(self) -> Table {
        match self {
            QueueKey::Recipient(_) => Table::Messages,
            QueueKey::Neighbour(_) => Table::Outbound,
        }
    }
}

/// A queued envelope as stored: opaque bytes plus routing fields.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct QueuedMessage {
    pub seq: i64,
    pub id: MessageId,
    pub sender: String,
    /// The sender's device, 0 for a sender without devices.
    pub sender_device: i64,
    pub envelope: Vec<u8>,
    pub received_at: Millis,
}

/// A message to be queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    pub id: MessageId,
    pub recipient: PhoneNumber,
    /// The recipient's device whose queue it joins; 0 for an account
    /// without devices.
    pub device: u32,
    pub sender: PhoneNumber,
    /// The sending device; 0 for a sender without devices.
    pub sender_device: u32,
    pub envelope: Vec<u8>,
    pub received_at: Millis,
    pub expires_at: Millis,
}

impl Store {
    /// The oldest unexpired messages for `recipient`'s `device` (0: an
    /// account without devices) after `after_seq`, at most `limit` of them,
    /// in arrival order.
    pub async fn fetch(
        &self,
        recipient: &PhoneNumber,
        device: u32,
        after_seq: i64,
        now: Millis,
        limit: u32,
    ) -> Result<Vec<QueuedMessage>, DbError> {
        let rows = on_backend!(&self.pool, p => sqlx::query_as::<_, QueuedMessage>(
            "SELECT seq, id, sender, sender_device, envelope, received_at FROM message_queue
             WHERE recipient = $1 AND device = $5 AND seq > $2 AND expires_at > $3
             ORDER BY seq LIMIT $4",
        )
        .bind(recipient)
        .bind(after_seq)
        .bind(now)
        .bind(i64::from(limit))
        .bind(i64::from(device))
        .fetch_all(p)
        .await);
        self.read(rows)
    }

    /// The messages queued under `id` for `recipient`'s `device` (0: an
    /// account without devices) that still are, in queue order: one per
    /// sender, as ids are unique per sender.
    pub async fn queued(
        &self,
        recipient: &PhoneNumber,
        device: u32,
        id: MessageId,
    ) -> Result<Vec<QueuedMessage>, DbError> {
        let rows = on_backend!(&self.pool, p => sqlx::query_as::<_, QueuedMessage>(
            "SELECT seq, id, sender, sender_device, envelope, received_at FROM message_queue
             WHERE recipient = $1 AND device = $2 AND id = $3 ORDER BY seq",
        )
        .bind(recipient)
        .bind(i64::from(device))
        .bind(id)
        .fetch_all(p)
        .await);
        self.read(rows)
    }

    /// How many undeliverable notices wait for `recipient`'s `device`:
    /// rows the account sent itself from no device, which only notices are.
    pub async fn queued_notices(
        &self,
        recipient: &PhoneNumber,
        device: u32,
    ) -> Result<u64, DbError> {
        let n: Result<i64, _> = on_backend!(&self.pool, p => sqlx::query_scalar(
            "SELECT count(*) FROM message_queue
             WHERE recipient = $1 AND device = $2 AND sender = $1 AND sender_device = 0",
        )
        .bind(recipient)
        .bind(i64::from(device))
        .fetch_one(p)
        .await);
        self.read(n).map(|n| n as u64)
    }

    /// How many unexpired messages wait for `recipient`'s `device`.
    pub async fn waiting(
        &self,
        recipient: &PhoneNumber,
        device: u32,
        now: Millis,
    ) -> Result<u64, DbError> {
        let n: Result<i64, _> = on_backend!(&self.pool, p => sqlx::query_scalar(
            "SELECT count(*) FROM message_queue
             WHERE recipient = $1 AND device = $3 AND expires_at > $2",
        )
        .bind(recipient)
        .bind(now)
        .bind(i64::from(device))
        .fetch_one(p)
        .await);
        self.read(n).map(|n| n as u64)
    }
}

/// Count and total envelope bytes held by `queue` (expired or not: they
/// occupy space until swept).
pub(super) async fn usage(conn: &mut Conn<'_>, queue: QueueKey<'_>) -> Result<Usage, DbError> {
    let table = queue.table();
    let sql = format!(
        "SELECT count(*), CAST(coalesce(sum(length(envelope)), 0) AS BIGINT) FROM {} WHERE {} = $1",
        table.name(),
        table.owner()
    );
    let (count, bytes): (i64, i64) = on_backend!(conn.reborrow(), c =>
        sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(queue).fetch_one(c).await)?;
    Ok(Usage {
        count: count as u64,
        bytes: bytes as u64,
    })
}

/// What each sender holds in `recipient`'s queue (count and envelope
/// bytes), read in one pass over the recipient's rows: the recipient's
/// queue is their sum, and a sender not listed holds nothing.
///
/// One grouped read per recipient, rather than a read per (recipient,
/// sender) pair, is what lets `message_queue` go without an index on
/// `(recipient, sender)`: that index took an insertion point per pair, so a
/// commit dirtied one of its pages per pair it touched, and it made storing
/// a message cost twice the writes it costs without it.
pub(super) async fn usage_by_sender(
    conn: &mut Conn<'_>,
    recipient: &PhoneNumber,
) -> Result<Vec<(String, Usage)>, DbError> {
    let rows: Vec<(String, i64, i64)> = on_backend!(conn.reborrow(), c =>
        sqlx::query_as(
            // A sender with messages for several devices comes once per
            // device. SQLite sorts the recipient's rows to group them (no
            // index leads with the sender: acknowledgements, which name ids
            // alone, need the id first), once per recipient the writer
            // meets, and a recipient's queue is bounded by its quota.
            "SELECT sender, count(*), CAST(coalesce(sum(length(envelope)), 0) AS BIGINT)
             FROM message_queue WHERE recipient = $1 GROUP BY device, sender",
        )
        .bind(recipient)
        .fetch_all(c)
        .await)?;
    Ok(rows
        .into_iter()
        .map(|(sender, count, bytes)| {
            let usage = Usage {
                count: count as u64,
                bytes: bytes as u64,
            };
            (sender, usage)
        })
        .collect())
}

/// Most rows inserted by one statement (9 parameters each at most, well
/// under either backend's parameter limit).
pub(super) const INSERT_CHUNK: usize = 100;

/// Where an inserted message went: its (recipient, device, sender, id).
pub(super) type Slot = (PhoneNumber, i64, PhoneNumber, MessageId);

/// Inserts messages (at most [`INSERT_CHUNK`]) in one statement, skipping
/// ids the same sender already queued for the same recipient device;
/// returns the slots of those inserted.
pub(super) async fn insert_many(
    conn: &mut Conn<'_>,
    messages: &[&NewMessage],
) -> Result<HashSet<Slot>, DbError> {
    if let Backend::Postgres(c) = conn.reborrow() {
        return insert_many_pg(c, messages).await;
    }
    // One message, nearly always its own transaction (a message that
    // arrives alone), asks for no row back: SQLite hands a `RETURNING` row
    // over before the commit, so the driver's thread would wake the writer
    // twice, for the row and when the statement is done. Whether it went
    // in is the count of rows changed.
    let alone = messages.len() == 1;
    let sql = format!(
        "INSERT INTO message_queue (id, recipient, device, sender, sender_device, envelope,
             received_at, expires_at)
         VALUES {} ON CONFLICT (recipient, device, sender, id) DO NOTHING{}",
        values_of(Placeholder::Anonymous, messages.len(), 8),
        if alone {
            ""
        } else {
            " RETURNING recipient, device, sender, id"
        }
    );
    let inserted: Vec<Slot> = on_backend!(conn.reborrow(), c => {
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for m in messages {
            query = query
                .bind(m.id)
                .bind(&m.recipient)
                .bind(i64::from(m.device))
                .bind(&m.sender)
                .bind(i64::from(m.sender_device))
                .bind(&m.envelope)
                .bind(m.received_at)
                .bind(m.expires_at);
        }
        if alone {
            let went_in = query.execute(c).await?.rows_affected() == 1;
            let m = &messages[0];
            let slot = (m.recipient.clone(), i64::from(m.device), m.sender.clone(), m.id);
            went_in.then_some(slot).into_iter().collect()
        } else {
            let rows = query.fetch_all(c).await?;
            rows.iter().map(sqlx::FromRow::from_row).collect::<Result<_, _>>()?
        }
    });
    Ok(inserted.into_iter().collect())
}

/// [`insert_many`] on PostgreSQL: one statement whatever the number of
/// rows (the columns bound as arrays, so the server prepares and plans it
/// once per connection rather than once per row count), which also takes
/// the turn that makes queue positions follow commit order across the
/// members of a cluster, so the turn costs no round trip of its own.
///
/// A `fetch` cursor is the position (`seq`) of the last message returned,
/// and the next page starts after it. PostgreSQL hands out `seq` values when
/// rows are inserted, not when they commit: without the turn, member A
/// could take position 10, member B position 11 and commit first, a `fetch`
/// then return 11 and its cursor, and 10, committed a moment later, never be
/// fetched with that cursor. Each member's writer commits one transaction at
/// a time, so it is enough that members take turns from their first insert
/// of a batch to its commit: a transaction-scoped advisory lock, taken
/// before any position is. Commits of batches that notify the other members
/// are serialised by PostgreSQL already, so the turn-taking costs little
/// more than the statements the batch runs under it. Taking it again within
/// the same transaction (the batch's next insert) is immediate. (The lock's
/// two-key form keeps it apart from the cluster's other advisory locks,
/// which use one 64-bit key; the schema's name keeps clusters on other
/// schemas of the database apart.) On SQLite there is one writer and
/// nothing to do.
///
/// The turn is a one-row subquery joined to the rows: no row reaches the
/// insert, and so none takes its position (`seq`'s default is computed as
/// each row is inserted), before the lock is held.
async fn insert_many_pg(
    c: &mut sqlx::PgConnection,
    messages: &[&NewMessage],
) -> Result<HashSet<Slot>, DbError> {
    let ids: Vec<&[u8]> = messages.iter().map(|m| &m.id.as_bytes()[..]).collect();
    let recipients: Vec<&str> = messages.iter().map(|m| m.recipient.as_str()).collect();
    let devices: Vec<i64> = messages.iter().map(|m| i64::from(m.device)).collect();
    let senders: Vec<&str> = messages.iter().map(|m| m.sender.as_str()).collect();
    let sender_devices: Vec<i64> = messages
        .iter()
        .map(|m| i64::from(m.sender_device))
        .collect();
    let envelopes: Vec<&[u8]> = messages.iter().map(|m| m.envelope.as_slice()).collect();
    let received: Vec<Millis> = messages.iter().map(|m| m.received_at).collect();
    let expires: Vec<Millis> = messages.iter().map(|m| m.expires_at).collect();
    let inserted: Vec<Slot> = sqlx::query_as(
        "INSERT INTO message_queue (id, recipient, device, sender, sender_device, envelope,
             received_at, expires_at)
         SELECT m.id, m.recipient, m.device, m.sender, m.sender_device, m.envelope,
             m.received_at, m.expires_at
         FROM (SELECT pg_advisory_xact_lock(hashtext(current_schema()), 1)) AS turn,
             unnest($1::bytea[], $2::text[], $3::bigint[], $4::text[], $5::bigint[],
                 $6::bytea[], $7::bigint[], $8::bigint[])
             AS m (id, recipient, device, sender, sender_device, envelope, received_at,
                 expires_at)
         ON CONFLICT (recipient, device, sender, id) DO NOTHING
         RETURNING recipient, device, sender, id",
    )
    .bind(ids)
    .bind(recipients)
    .bind(devices)
    .bind(senders)
    .bind(sender_devices)
    .bind(envelopes)
    .bind(received)
    .bind(expires)
    .fetch_all(c)
    .await?;
    Ok(inserted.into_iter().collect())
}

/// The sender and envelope queued in `queue` for `recipient`'s `device`
/// under `id`, if any: what a second message under the same id is
/// compared with. In a recipient's queue only `sender`'s own copy counts
/// (ids are unique per sender there); a neighbour's queue holds one copy
/// per recipient device and id, whoever sent it.
pub(super) async fn stored_copy(
    conn: &mut Conn<'_>,
    queue: QueueKey<'_>,
    recipient: &PhoneNumber,
    device: u32,
    sender: &PhoneNumber,
    id: MessageId,
) -> Result<Option<(String, Vec<u8>)>, DbError> {
    let table = queue.table();
    let by_sender = matches!(table, Table::Messages);
    let sender_clause = if by_sender { " AND sender = $5" } else { "" };
    let sql = format!(
        "SELECT sender, envelope FROM {} WHERE {} = $1 AND recipient = $2 AND id = $3{}{}",
        table.name(),
        table.owner(),
        table.device_clause(Placeholder::Numbered, 4),
        sender_clause
    );
    Ok(on_backend!(conn.reborrow(), c => {
        let query = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(queue)
            .bind(recipient)
            .bind(id)
            .bind(i64::from(device));
        if by_sender { query.bind(sender) } else { query }
            .fetch_optional(c)
            .await
    })?)
}

/// How a statement's placeholders are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Placeholder {
    /// `$1`, `$2`, …: what PostgreSQL needs.
    Numbered,
    /// `?`, bound in the order they appear: for SQLite's large statements.
    /// sqlx asks SQLite the name of every placeholder it binds, and SQLite
    /// finds a name by walking the list of all named ones, so binding n
    /// numbered placeholders takes n² steps: for a run of 100 relayed
    /// messages (1,000 placeholders) that walk was a fifth of the sending
    /// server's CPU. Anonymous ones have no name to look for.
    Anonymous,
}

impl Placeholder {
    /// The style for the backend behind `conn`.
    pub(super) fn of(conn: &Conn<'_>) -> Self {
        match conn {
            Backend::Sqlite(_) => Placeholder::Anonymous,
            Backend::Postgres(_) => Placeholder::Numbered,
        }
    }

    /// Placeholder number `n` (counted from 1). Anonymous placeholders
    /// must appear in the statement in the order of their numbers.
    pub(super) fn nth(self, n: usize) -> String {
        match self {
            Placeholder::Numbered => format!("${n}"),
            Placeholder::Anonymous => "?".to_owned(),
        }
    }
}

/// `rows` rows of `per_row` placeholders, numbered from 1 in order.
pub(super) fn values_of(style: Placeholder, rows: usize, per_row: usize) -> String {
    let mut sql = String::with_capacity(rows * per_row * 5);
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        for c in 1..=per_row {
            if c > 1 {
                sql.push_str(", ");
            }
            match style {
                Placeholder::Anonymous => sql.push('?'),
                Placeholder::Numbered => {
                    let _ = write!(sql, "${}", r * per_row + c);
                }
            }
        }
        sql.push(')');
    }
    sql
}

/// Most ids deleted by one statement (well under either backend's
/// parameter limit).
pub(super) const DELETE_CHUNK: usize = 500;

/// The two tables of queued envelopes: a recipient's messages here, and
/// messages waiting for a neighbour. They share their deletion rules.
#[derive(Debug, Clone, Copy)]
pub(super) enum Table {
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

    /// The condition on the recipient's device, placeholder `n`: a
    /// recipient has one queue per device, and a neighbour's queue keeps
    /// each device's copy apart (copies for two devices may share an id).
    fn device_clause(self, style: Placeholder, n: usize) -> String {
        format!(" AND device = {}", style.nth(n))
    }

    /// What a `DELETE … RETURNING` gives back to make a [`Removed`].
    fn removed_columns(self) -> String {
        format!("{}, sender, CAST(length(envelope) AS BIGINT)", self.owner())
    }
}

/// A deleted row, as quota counts need it.
pub(super) struct Removed {
    /// Whose queue it was in: a recipient or a neighbour's fingerprint.
    pub owner: String,
    pub sender: String,
    pub size: u64,
}

/// Deletes rows of `queue` by id (at most [`DELETE_CHUNK`]); returns each
/// row that existed. The queue's recipient limits a neighbour's rows to the
/// copies for one recipient, and its sender a recipient's rows to one
/// sender's. Only fixed names and placeholders go into the statement's
/// text; every value is bound.
pub(super) async fn delete_many(
    conn: &mut Conn<'_>,
    queue: &QueueRef,
    ids: &[MessageId],
) -> Result<Vec<Removed>, DbError> {
    let (key, device) = (queue.key(), queue.device());
    let named = queue.limited_to().map(|(_, phone)| phone);
    let sql = delete_statement(queue, ids.len(), Placeholder::of(conn));
    let rows: Vec<(String, String, i64)> = on_backend!(conn.reborrow(), c => {
        let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(key);
        for id in ids {
            query = query.bind(id);
        }
        query = query.bind(device);
        if let Some(phone) = named {
            query = query.bind(phone.as_str());
        }
        query.fetch_all(c).await
    })?;
    Ok(rows.into_iter().map(Removed::from).collect())
}

/// Deletes messages of `recipient`'s `device` queue named by (id, sender)
/// pairs (at most [`DELETE_CHUNK`]): one acknowledgement of several
/// senders' messages in one statement instead of one per sender. Returns
/// each row that existed with its id. Ids are unique per sender only, so
/// a pair names a row; the list of ids lets the statement reach the rows
/// through the queue's index (SQLite searches a list of row values by
/// walking the device's whole queue).
pub(super) async fn delete_pairs(
    conn: &mut Conn<'_>,
    recipient: &PhoneNumber,
    device: u32,
    pairs: &[(MessageId, &PhoneNumber)],
) -> Result<Vec<(MessageId, Removed)>, DbError> {
    let sql = pairs_statement(pairs.len(), Placeholder::of(conn));
    let rows: Vec<(MessageId, String, String, i64)> = on_backend!(conn.reborrow(), c => {
        let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(recipient);
        for (id, _) in pairs {
            query = query.bind(id);
        }
        query = query.bind(i64::from(device));
        for (id, sender) in pairs {
            query = query.bind(id).bind(sender);
        }
        query.fetch_all(c).await
    })?;
    Ok(rows
        .into_iter()
        .map(|(id, owner, sender, size)| (id, Removed::from((owner, sender, size))))
        .collect())
}

/// A message named by its whole slot: its recipient, the recipient's
/// device, its sender and its id.
pub(super) type SlotRef<'a> = (&'a PhoneNumber, u32, &'a PhoneNumber, MessageId);

/// A row [`delete_slots`] removed: its device and id, beside its recipient
/// (the owner) and sender.
pub(super) type RemovedSlot = (i64, MessageId, Removed);

/// Deletes messages named by their slots, from any number of recipients'
/// queues, in one statement: the acknowledgements of several recipients
/// that arrive together (each of a message or a few, as on a quiet server)
/// cost one statement instead of one each. Each slot is its own condition,
/// which both backends answer with one search of the queue's unique index
/// per slot, so callers keep `slots` short (a few dozen). Returns each row
/// that existed.
pub(super) async fn delete_slots(
    conn: &mut Conn<'_>,
    slots: &[SlotRef<'_>],
) -> Result<Vec<RemovedSlot>, DbError> {
    let sql = slots_statement(slots.len(), Placeholder::of(conn));
    let rows: Vec<(String, i64, String, MessageId, i64)> = on_backend!(conn.reborrow(), c => {
        let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql));
        for (recipient, device, sender, id) in slots {
            query = query.bind(*recipient).bind(i64::from(*device)).bind(*sender).bind(id);
        }
        query.fetch_all(c).await
    })?;
    Ok(rows
        .into_iter()
        .map(|(recipient, device, sender, id, size)| {
            (device, id, Removed::from((recipient, sender, size)))
        })
        .collect())
}

/// [`delete_slots`]'s statement for `n` slots: each slot's recipient,
/// device, sender and id.
fn slots_statement(n: usize, style: Placeholder) -> String {
    let conditions: Vec<String> = (0..n)
        .map(|k| {
            let [r, d, s, i] = [1, 2, 3, 4].map(|c| style.nth(4 * k + c));
            format!("(recipient = {r} AND device = {d} AND sender = {s} AND id = {i})")
        })
        .collect();
    format!(
        "DELETE FROM message_queue WHERE {} \
         RETURNING recipient, device, sender, id, CAST(length(envelope) AS BIGINT)",
        conditions.join(" OR ")
    )
}

/// [`delete_pairs`]'s statement for `n` pairs: the recipient, the ids, the
/// device, then each pair's id and sender.
fn pairs_statement(n: usize, style: Placeholder) -> String {
    let table = Table::Messages;
    let ids: Vec<String> = (2..n + 2).map(|i| style.nth(i)).collect();
    let pairs: Vec<String> = (0..n)
        .map(|k| {
            let at = n + 3 + 2 * k;
            format!("({}, {})", style.nth(at), style.nth(at + 1))
        })
        .collect();
    format!(
        "DELETE FROM {} WHERE {} = {} AND id IN ({}){} AND (id, sender) IN (VALUES {}) \
         RETURNING id, {}",
        table.name(),
        table.owner(),
        style.nth(1),
        ids.join(", "),
        table.device_clause(style, n + 2),
        pairs.join(", "),
        table.removed_columns()
    )
}

/// [`delete_many`]'s statement for `ids` ids: the queue's owner, the ids,
/// the device, then the recipient or sender it is limited to, if any.
fn delete_statement(queue: &QueueRef, ids: usize, style: Placeholder) -> String {
    let table = queue.key().table();
    let placeholders: Vec<String> = (2..ids + 2).map(|i| style.nth(i)).collect();
    let named_clause = match queue.limited_to() {
        Some((column, _)) => format!(" AND {column} = {}", style.nth(ids + 3)),
        None => String::new(),
    };
    format!(
        "DELETE FROM {} WHERE {} = {} AND id IN ({}){}{} RETURNING {}",
        table.name(),
        table.owner(),
        style.nth(1),
        placeholders.join(", "),
        table.device_clause(style, ids + 2),
        named_clause,
        table.removed_columns()
    )
}

impl From<(String, String, i64)> for Removed {
    fn from((owner, sender, size): (String, String, i64)) -> Self {
        Removed {
            owner,
            sender,
            size: size as u64,
        }
    }
}

/// Deletes the expired rows among the `limit` oldest of `table`; returns
/// each, so quota counters can follow.
/// Looking only at the oldest rows keeps a sweep cheap however long the
/// queue; since every message gets the same lifetime, expiry follows arrival
/// order (a message that expires earlier than an older one waits for it, and
/// nothing expired is ever fetched or relayed meanwhile).
pub(super) async fn delete_expired(
    conn: &mut Conn<'_>,
    table: Table,
    now: Millis,
    limit: u32,
) -> Result<Vec<Removed>, DbError> {
    let sql = format!(
        "DELETE FROM {t} WHERE seq IN (
             SELECT seq FROM (SELECT seq, expires_at FROM {t} ORDER BY seq LIMIT $2) AS oldest
             WHERE expires_at <= $1)
         RETURNING {removed}",
        t = table.name(),
        removed = table.removed_columns()
    );
    let rows: Vec<(String, String, i64)> = on_backend!(conn.reborrow(), c =>
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(now)
            .bind(i64::from(limit))
            .fetch_all(c)
            .await)?;
    Ok(rows.into_iter().map(Removed::from).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Anonymous placeholders stand where numbered ones would, one for one
    /// and in the same order, so the same binds fill either statement.
    #[test]
    fn anonymous_placeholders_mirror_numbered_ones() {
        assert_eq!(
            values_of(Placeholder::Numbered, 2, 3),
            "($1, $2, $3), ($4, $5, $6)"
        );
        assert_eq!(
            values_of(Placeholder::Anonymous, 2, 3),
            "(?, ?, ?), (?, ?, ?)"
        );
        assert_eq!(values_of(Placeholder::Anonymous, 0, 3), "");
        assert_eq!(Placeholder::Numbered.nth(7), "$7");
        assert_eq!(Placeholder::Anonymous.nth(7), "?");
    }

    /// An acknowledgement's delete reaches its rows through an index that
    /// holds the id, whatever the queue: walking the whole queue for each
    /// statement would make draining a long queue take time in the square
    /// of its length. (A neighbour's queue acknowledged without naming the
    /// recipient, by a neighbour of before devices, is the one exception.)
    #[tokio::test]
    async fn every_acknowledgement_finds_its_rows_by_id() {
        let dir = tempfile::tempdir().unwrap();
        let (pool, _) = crate::db::sqlite::open(&dir.path().join("carrier.db"))
            .await
            .unwrap();
        let phone = |n: &str| PhoneNumber::parse(n).unwrap();
        let neighbour = Fingerprint::parse(&"ab".repeat(32)).unwrap();
        let queues = [
            QueueRef::Recipient(phone("+12025550101")),
            QueueRef::Device(phone("+12025550101"), 2),
            QueueRef::Sent(phone("+12025550101"), 2, phone("+12025550102")),
            QueueRef::Neighbour(neighbour, 2, Some(phone("+12025550101"))),
        ];
        for queue in &queues {
            let steps = plan_of(&pool, &delete_statement(queue, 3, Placeholder::Anonymous)).await;
            assert!(
                steps
                    .iter()
                    .all(|s| s.starts_with("SEARCH") && s.contains(" AND id=?")),
                "{queue:?}: {steps:?}"
            );
        }
        // Several senders' pairs: the list of pairs is a constant table
        // that rows found by id are checked against, not a walk.
        let steps = plan_of(&pool, &pairs_statement(3, Placeholder::Anonymous)).await;
        assert!(
            steps
                .iter()
                .any(|s| s.starts_with("SEARCH message_queue") && s.contains(" AND id=?")),
            "{steps:?}"
        );
        assert!(
            !steps.iter().any(|s| s.starts_with("SCAN message_queue")),
            "{steps:?}"
        );
        // Several recipients' slots: one search of the unique index each.
        let steps = plan_of(&pool, &slots_statement(3, Placeholder::Anonymous)).await;
        let searches = steps
            .iter()
            .filter(|s| s.starts_with("SEARCH message_queue") && s.contains(" AND id=?"))
            .count();
        assert_eq!(searches, 3, "{steps:?}");
        assert!(
            !steps.iter().any(|s| s.starts_with("SCAN message_queue")),
            "{steps:?}"
        );
        pool.close().await;
    }

    /// The steps of SQLite's plan for `sql`.
    async fn plan_of(pool: &sqlx::SqlitePool, sql: &str) -> Vec<String> {
        let plan: Vec<(i64, i64, i64, String)> =
            sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
                .fetch_all(pool)
                .await
                .unwrap();
        plan.into_iter().map(|(.., step)| step).collect()
    }
}
