//! What a message to commit is, and how a run of them is committed: with a
//! few multi-row statements instead of one per message (each statement is a
//! round trip to SQLite's thread), under the same quota and duplicate rules
//! as a one-by-one insert. Called by [`super::writer`] inside its
//! transaction.

use std::collections::HashSet;

use sqlx::SqliteConnection;

use super::outbound::{self, NewOutbound};
use super::queue::{self, NewMessage, QueueKey};
use super::quota::Ledger;
use super::{DbError, Millis};
use crate::domain::MessageId;

/// Where a message is committed.
#[derive(Debug, Clone)]
pub enum Destination {
    /// The recipient's queue on this server.
    Local,
    /// The outbound queue of the neighbour leading to the recipient's home.
    Neighbour(NewOutbound),
}

/// A message to commit.
#[derive(Debug)]
pub struct Enqueue {
    pub message: NewMessage,
    pub destination: Destination,
    /// Received from a neighbour: record its id so a re-sent copy is dropped.
    pub relayed: bool,
}

impl Enqueue {
    /// The queue the message goes to.
    fn queue(&self) -> QueueKey<'_> {
        match &self.destination {
            Destination::Local => QueueKey::Recipient(&self.message.recipient),
            Destination::Neighbour(o) => QueueKey::Neighbour(o.neighbour),
        }
    }

    fn size(&self) -> u64 {
        self.message.envelope.len() as u64
    }
}

/// What became of an enqueued message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnqueueOutcome {
    /// Committed to the queue.
    Stored,
    /// A message with this id was queued before; nothing changed.
    Duplicate,
    /// The recipient's queue is full.
    QuotaFull,
}

/// One enqueue of a run, and what has become of it so far.
pub(super) struct Item<'a> {
    pub enqueue: &'a Enqueue,
    /// `None` while the message may still be stored; the writer answers
    /// with it once the transaction has committed.
    pub outcome: &'a mut Option<EnqueueOutcome>,
}

impl Item<'_> {
    /// Counted against its queue's quota but not stored after all: a
    /// duplicate, whose room is given back.
    fn drop_counted(&mut self, ledger: &mut Ledger) {
        *self.outcome = Some(EnqueueOutcome::Duplicate);
        ledger.give_back(self.enqueue.queue(), self.enqueue.size());
    }
}

/// Inserts a run of enqueues (at most [`queue::INSERT_CHUNK`]), leaving an
/// outcome in each item.
pub(super) async fn apply(
    conn: &mut SqliteConnection,
    ledger: &mut Ledger,
    mut items: Vec<Item<'_>>,
) -> Result<(), DbError> {
    admit_all(conn, ledger, &mut items).await?;

    let relayed = |e: &Enqueue| e.relayed;
    let ids: Vec<(MessageId, Millis)> = pending(&items, relayed)
        .map(|e| (e.message.id, e.message.expires_at))
        .collect();
    if !ids.is_empty() {
        // A neighbour sends again after a lost acknowledgement.
        let fresh = outbound::mark_seen_many(conn, &ids).await?;
        drop_unless(&mut items, ledger, relayed, |e| {
            fresh.contains(&e.message.id)
        });
    }

    let local = |e: &Enqueue| matches!(e.destination, Destination::Local);
    let rows: Vec<&NewMessage> = pending(&items, local).map(|e| &e.message).collect();
    if !rows.is_empty() {
        let inserted = queue::insert_many(conn, &rows).await?;
        drop_unless(&mut items, ledger, local, |e| {
            inserted.contains(&e.message.id)
        });
    }

    let remote = |e: &Enqueue| !local(e);
    let rows: Vec<(&NewMessage, &NewOutbound)> = pending(&items, remote)
        .filter_map(|e| match &e.destination {
            Destination::Neighbour(o) => Some((&e.message, o)),
            Destination::Local => None,
        })
        .collect();
    if !rows.is_empty() {
        let inserted = outbound::insert_many(conn, &rows).await?;
        drop_unless(&mut items, ledger, remote, |e| match e.queue() {
            QueueKey::Neighbour(fp) => inserted.contains(&(fp, e.message.id)),
            QueueKey::Recipient(_) => true,
        });
    }

    for item in items {
        item.outcome.get_or_insert(EnqueueOutcome::Stored);
    }
    Ok(())
}

/// Settles what can be told before any insert: repeats within the run, and
/// messages over their queue's quota. Every other message is counted
/// against its quota.
async fn admit_all(
    conn: &mut SqliteConnection,
    ledger: &mut Ledger,
    items: &mut [Item<'_>],
) -> Result<(), DbError> {
    let mut in_run = HashSet::with_capacity(items.len());
    for item in items {
        let e = item.enqueue;
        *item.outcome = if !in_run.insert((e.queue(), e.message.id)) {
            Some(EnqueueOutcome::Duplicate)
        } else if ledger.admit(conn, e.queue(), e.size()).await? {
            None
        } else if already_queued(conn, e).await? {
            // A retry of a message already queued is a duplicate, not a
            // refusal: the sender's first attempt did get through.
            Some(EnqueueOutcome::Duplicate)
        } else {
            Some(EnqueueOutcome::QuotaFull)
        };
    }
    Ok(())
}

/// The enqueues still unsettled that `selected` picks.
fn pending<'a>(
    items: &[Item<'a>],
    selected: impl Fn(&Enqueue) -> bool,
) -> impl Iterator<Item = &'a Enqueue> {
    items
        .iter()
        .filter(|i| i.outcome.is_none())
        .map(|i| i.enqueue)
        .filter(move |e| selected(e))
}

/// Settles as duplicates the unsettled enqueues `selected` picks that a
/// statement did not `keep`.
fn drop_unless(
    items: &mut [Item<'_>],
    ledger: &mut Ledger,
    selected: impl Fn(&Enqueue) -> bool,
    keep: impl Fn(&Enqueue) -> bool,
) {
    for item in items {
        if item.outcome.is_none() && selected(item.enqueue) && !keep(item.enqueue) {
            item.drop_counted(ledger);
        }
    }
}

/// Whether this message is already in its destination queue.
async fn already_queued(conn: &mut SqliteConnection, e: &Enqueue) -> Result<bool, DbError> {
    let found: Option<i64> = match &e.destination {
        Destination::Local => {
            sqlx::query_scalar("SELECT 1 FROM message_queue WHERE id = $1")
                .bind(e.message.id)
                .fetch_optional(conn)
                .await?
        }
        Destination::Neighbour(o) => {
            sqlx::query_scalar("SELECT 1 FROM outbound_queue WHERE neighbour = $1 AND id = $2")
                .bind(o.neighbour)
                .bind(e.message.id)
                .fetch_optional(conn)
                .await?
        }
    };
    Ok(found.is_some())
}
