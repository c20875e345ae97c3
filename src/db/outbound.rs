//! The `outbound_queue`, `relay_seen` and `neighbour_pins` tables: what waits
//! for each neighbour, what was already received from one, and which keys
//! neighbours were pinned to.

use std::collections::{HashMap, HashSet};

use super::backend::{Conn, on_backend};
use super::queue::{NewMessage, Placeholder, Slot, values_of};
use super::{DbError, Millis, Store};
use crate::domain::{Fingerprint, MessageId, PhoneNumber};

/// A message waiting for a neighbour.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OutboundRow {
    pub seq: i64,
    pub id: MessageId,
    pub recipient: String,
    /// The recipient's device (0: a v1 message to the whole account).
    pub device: i64,
    pub sender: String,
    /// The sending device (0: none).
    pub sender_device: i64,
    pub envelope: Vec<u8>,
    pub received_at: Millis,
    pub expires_at: Millis,
    /// JSON array of the fingerprints of servers crossed so far.
    pub path: String,
}

/// A message to queue for a neighbour.
#[derive(Debug, Clone)]
pub struct NewOutbound {
    pub neighbour: Fingerprint,
    /// JSON array of the fingerprints of servers crossed so far.
    pub path: String,
}

/// Most relayed ids forgotten by one sweep step; the steps repeat until
/// one removes nothing, so a busy relay forgets as fast as it remembers.
pub const FORGET_LIMIT: i64 = 1000;

impl Store {
    /// The next messages for `neighbour` after `after_seq`, in order. A row
    /// whose id is not 16 bytes (Carrier never writes one) is passed over
    /// rather than holding up the rows behind it.
    pub async fn outbound_next(
        &self,
        neighbour: &Fingerprint,
        after_seq: i64,
        now: Millis,
        limit: u32,
    ) -> Result<Vec<OutboundRow>, DbError> {
        let rows = on_backend!(&self.pool, p => sqlx::query_as::<_, OutboundRow>(
            "SELECT seq, id, recipient, device, sender, sender_device, envelope, received_at,
                 expires_at, path
             FROM outbound_queue WHERE neighbour = $1 AND seq > $2 AND expires_at > $3
                 AND length(id) = 16
             ORDER BY seq LIMIT $4",
        )
        .bind(neighbour)
        .bind(after_seq)
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(p)
        .await);
        self.read(rows)
    }

    /// The message for `neighbour` under `id` and `device` (and to
    /// `recipient`, when named: ids are unique per recipient only), if
    /// still queued.
    pub async fn outbound_row(
        &self,
        neighbour: &Fingerprint,
        id: MessageId,
        device: u32,
        recipient: Option<&PhoneNumber>,
    ) -> Result<Option<OutboundRow>, DbError> {
        let row = on_backend!(&self.pool, p => sqlx::query_as::<_, OutboundRow>(
            "SELECT seq, id, recipient, device, sender, sender_device, envelope, received_at,
                 expires_at, path
             FROM outbound_queue WHERE neighbour = $1 AND id = $2 AND device = $3
                 AND ($4 IS NULL OR recipient = $4)
             ORDER BY seq LIMIT 1",
        )
        .bind(neighbour)
        .bind(id)
        .bind(i64::from(device))
        .bind(recipient.map(PhoneNumber::as_str))
        .fetch_optional(p)
        .await);
        self.read(row)
    }

    /// The key pinned for the neighbour at `address`. A damaged pin counts
    /// as none, so the neighbour is pinned again on its next contact.
    pub async fn neighbour_pin(&self, address: &str) -> Result<Option<Fingerprint>, DbError> {
        let pin: Result<Option<String>, _> = on_backend!(&self.pool, p => sqlx::query_scalar(
            "SELECT fingerprint FROM neighbour_pins WHERE address = $1",
        )
        .bind(address)
        .fetch_optional(p)
        .await);
        Ok(self.read(pin)?.and_then(|hex| Fingerprint::parse(&hex)))
    }

    pub async fn pin_neighbour(
        &self,
        address: &str,
        fingerprint: Fingerprint,
    ) -> Result<(), DbError> {
        let done = on_backend!(&self.pool, p => sqlx::query(
            "INSERT INTO neighbour_pins (address, fingerprint) VALUES ($1, $2)
             ON CONFLICT (address) DO UPDATE SET fingerprint = excluded.fingerprint",
        )
        .bind(address)
        .bind(fingerprint)
        .execute(p)
        .await
        .map(|done| done.rows_affected()));
        self.wrote(done).map(drop)
    }
}

/// Where an inserted outbound message went: its (neighbour, recipient,
/// device, id), and the position (`seq`) it took in the queue.
pub(super) type InsertedOutbound = HashMap<(Fingerprint, PhoneNumber, i64, MessageId), i64>;

/// Inserts messages for neighbours (at most `queue::INSERT_CHUNK`) in one
/// statement, skipping ones already queued for the same neighbour,
/// recipient and device; returns those inserted, with their positions.
pub(super) async fn insert_many(
    conn: &mut Conn<'_>,
    rows: &[(&NewMessage, &NewOutbound)],
) -> Result<InsertedOutbound, DbError> {
    let sql = format!(
        "INSERT INTO outbound_queue (neighbour, id, recipient, device, sender, sender_device,
             envelope, received_at, expires_at, path)
         VALUES {} ON CONFLICT (neighbour, recipient, device, id) DO NOTHING
         RETURNING neighbour, recipient, device, id, seq",
        values_of(Placeholder::of(conn), rows.len(), 10)
    );
    let inserted: Vec<(Fingerprint, PhoneNumber, i64, MessageId, i64)> = on_backend!(conn.reborrow(), c => {
        let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql));
        for (m, out) in rows {
            query = query
                .bind(out.neighbour)
                .bind(m.id)
                .bind(&m.recipient)
                .bind(i64::from(m.device))
                .bind(&m.sender)
                .bind(i64::from(m.sender_device))
                .bind(&m.envelope)
                .bind(m.received_at)
                .bind(m.expires_at)
                .bind(&out.path);
        }
        query.fetch_all(c).await
    })?;
    Ok(inserted
        .into_iter()
        .map(|(fp, to, device, id, seq)| ((fp, to, device, id), seq))
        .collect())
}

/// Records the slots of relayed messages (at most `queue::INSERT_CHUNK`):
/// (recipient, device, sender, id), as ids are unique per sender; returns
/// those not seen before.
pub(super) async fn mark_seen_many(
    conn: &mut Conn<'_>,
    seen: &[&NewMessage],
) -> Result<HashSet<Slot>, DbError> {
    let sql = format!(
        "INSERT INTO relay_seen (recipient, device, sender, id, expires_at) VALUES {}
         ON CONFLICT (recipient, device, sender, id) DO NOTHING
         RETURNING recipient, device, sender, id",
        values_of(Placeholder::of(conn), seen.len(), 5)
    );
    let fresh: Vec<Slot> = on_backend!(conn.reborrow(), c => {
        let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql));
        for m in seen {
            query = query
                .bind(&m.recipient)
                .bind(i64::from(m.device))
                .bind(&m.sender)
                .bind(m.id)
                .bind(m.expires_at);
        }
        query.fetch_all(c).await
    })?;
    Ok(fresh.into_iter().collect())
}

/// Forgets relayed ids whose messages have expired, a bounded number per
/// call.
pub(super) async fn forget_seen(conn: &mut Conn<'_>, now: Millis) -> Result<u64, DbError> {
    let done = on_backend!(conn.reborrow(), c => sqlx::query(
        "DELETE FROM relay_seen WHERE (recipient, device, sender, id) IN (
             SELECT recipient, device, sender, id FROM relay_seen WHERE expires_at <= $1
             LIMIT $2)",
    )
    .bind(now)
    .bind(FORGET_LIMIT)
    .execute(c)
    .await
    .map(|done| done.rows_affected()))?;
    Ok(done)
}
