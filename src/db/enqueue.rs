//! What a message to commit is, and how a run of them is committed: with a
//! few multi-row statements instead of one per message, under the same
//! quota and id rules as a one-by-one insert. Called by [`super::writer`]
//! inside its transaction.
//!
//! An id names one sender's message to one recipient device. A message
//! whose sender, recipient, device, id and envelope all match one already
//! queued is a retry: it is accepted and changes nothing. Another envelope
//! from the same sender under an id it already queued for that device is
//! refused ([`EnqueueOutcome::IdInUse`]), so `accepted` always means
//! "stored for this recipient"; another sender's message under the same id
//! is a message of its own. A message relayed by a neighbour is a retry
//! when its (recipient, device, sender, id) was relayed before.

use std::collections::HashSet;

use super::DbError;
use super::backend::Conn;
use super::outbound::{self, NewOutbound};
use super::queue::{self, NewMessage, QueueKey};
use super::quota::{Full, Ledger};
use crate::domain::{MessageId, PhoneNumber};

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
    /// Whether it goes to a recipient's queue on this server.
    pub(super) fn is_local(&self) -> bool {
        matches!(self.destination, Destination::Local)
    }

    /// The queue the message goes to.
    fn queue(&self) -> QueueKey<'_> {
        match &self.destination {
            Destination::Local => QueueKey::Recipient(&self.message.recipient),
            Destination::Neighbour(o) => QueueKey::Neighbour(o.neighbour),
        }
    }

    /// What two messages must share to be the same message: the queue, the
    /// recipient, its device, the sender (in a recipient's queue) and the
    /// id.
    fn slot(
        &self,
    ) -> (
        QueueKey<'_>,
        &PhoneNumber,
        u32,
        Option<&PhoneNumber>,
        MessageId,
    ) {
        let m = &self.message;
        let sender = self.is_local().then_some(&m.sender);
        (self.queue(), &m.recipient, m.device, sender, m.id)
    }

    fn size(&self) -> u64 {
        self.message.envelope.len() as u64
    }

    /// How this message relates to the one already in its slot, if any.
    async fn against_stored(&self, conn: &mut Conn<'_>) -> Result<Option<Repeat>, DbError> {
        let m = &self.message;
        let stored =
            queue::stored_copy(conn, self.queue(), &m.recipient, m.device, &m.sender, m.id).await?;
        Ok(stored.map(|(sender, envelope)| {
            if sender == m.sender.as_str() && envelope == m.envelope {
                Repeat::Retry
            } else {
                Repeat::Conflict
            }
        }))
    }
}

/// A message whose slot is taken.
enum Repeat {
    /// By this very message: a retry.
    Retry,
    /// By a different message.
    Conflict,
}

impl From<Repeat> for EnqueueOutcome {
    fn from(r: Repeat) -> Self {
        match r {
            Repeat::Retry => EnqueueOutcome::Duplicate,
            Repeat::Conflict => EnqueueOutcome::IdInUse,
        }
    }
}

/// What became of an enqueued message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnqueueOutcome {
    /// Committed to the queue.
    Stored,
    /// The same message was queued before (a retry); nothing changed.
    Duplicate,
    /// A different message is queued under this id for this recipient;
    /// nothing changed.
    IdInUse,
    /// The recipient's queue is full.
    QuotaFull,
    /// The sender holds all it may of the recipient's queue
    /// ([`super::quota::Quotas::per_sender`]); nothing changed.
    SenderShareFull,
}

impl From<Full> for EnqueueOutcome {
    fn from(full: Full) -> Self {
        match full {
            Full::Queue => EnqueueOutcome::QuotaFull,
            Full::SenderShare => EnqueueOutcome::SenderShareFull,
        }
    }
}

/// One enqueue of a run, and what has become of it so far.
pub(super) struct Item<'a> {
    pub enqueue: &'a Enqueue,
    /// `None` while the message may still be stored; the writer answers
    /// with it once the transaction has committed.
    pub outcome: &'a mut Option<EnqueueOutcome>,
    /// The position an outbound message took in its neighbour's queue.
    pub seq: &'a mut Option<i64>,
}

/// Inserts a run of enqueues (at most [`queue::INSERT_CHUNK`]), leaving an
/// outcome in each item.
pub(super) async fn apply(
    conn: &mut Conn<'_>,
    ledger: &mut Ledger,
    mut items: Vec<Item<'_>>,
) -> Result<(), DbError> {
    let repeats = admit_all(conn, ledger, &mut items).await?;
    let (mut first, mut again): (Vec<_>, Vec<_>) = items
        .into_iter()
        .enumerate()
        .partition(|(i, _)| !repeats.contains(i));

    let relayed = |e: &Enqueue| e.relayed;
    let seen: Vec<&NewMessage> = pending(&first, relayed).map(|e| &e.message).collect();
    if !seen.is_empty() {
        // A neighbour sends again after a lost acknowledgement.
        let fresh = outbound::mark_seen_many(conn, &seen).await?;
        for (_, item) in &mut first {
            let e = item.enqueue;
            let m = &e.message;
            let key = (
                m.recipient.clone(),
                i64::from(m.device),
                m.sender.clone(),
                m.id,
            );
            if item.outcome.is_none() && e.relayed && !fresh.contains(&key) {
                *item.outcome = Some(EnqueueOutcome::Duplicate);
                ledger.give_back(e.queue(), Some(&e.message.sender), e.size());
            }
        }
    }

    let local = |e: &Enqueue| matches!(e.destination, Destination::Local);
    let rows: Vec<&NewMessage> = pending(&first, local).map(|e| &e.message).collect();
    if !rows.is_empty() {
        let inserted = queue::insert_many(conn, &rows).await?;
        let kept = |e: &Enqueue| {
            let m = &e.message;
            inserted.contains(&(
                m.recipient.clone(),
                i64::from(m.device),
                m.sender.clone(),
                m.id,
            ))
        };
        settle_conflicts(conn, ledger, &mut first, local, kept).await?;
    }

    let remote = |e: &Enqueue| !local(e);
    let rows: Vec<(&NewMessage, &NewOutbound)> = pending(&first, remote)
        .filter_map(|e| match &e.destination {
            Destination::Neighbour(o) => Some((&e.message, o)),
            Destination::Local => None,
        })
        .collect();
    if !rows.is_empty() {
        let inserted = outbound::insert_many(conn, &rows).await?;
        let seq_of = |e: &Enqueue| match e.queue() {
            QueueKey::Neighbour(fp) => {
                let m = &e.message;
                let key = (fp, m.recipient.clone(), i64::from(m.device), m.id);
                inserted.get(&key).copied()
            }
            QueueKey::Recipient(_) => None,
        };
        for (_, item) in &mut first {
            if item.outcome.is_none() && remote(item.enqueue) {
                *item.seq = seq_of(item.enqueue);
            }
        }
        let kept = |e: &Enqueue| local(e) || seq_of(e).is_some();
        settle_conflicts(conn, ledger, &mut first, remote, kept).await?;
    }

    for (_, item) in first {
        item.outcome.get_or_insert(EnqueueOutcome::Stored);
    }
    // A repeat within the run is judged against what its first copy left.
    for (_, item) in &mut again {
        let e = item.enqueue;
        *item.outcome = Some(if e.relayed {
            EnqueueOutcome::Duplicate
        } else {
            match e.against_stored(conn).await? {
                Some(repeat) => repeat.into(),
                None => EnqueueOutcome::QuotaFull,
            }
        });
    }
    Ok(())
}

/// Settles what can be told before any insert: messages over their
/// queue's quota (or retries of messages already queued). Every other
/// message is counted against its quota. Returns the positions of repeats
/// of an earlier message of the run, which are settled after it.
async fn admit_all(
    conn: &mut Conn<'_>,
    ledger: &mut Ledger,
    items: &mut [Item<'_>],
) -> Result<HashSet<usize>, DbError> {
    let mut in_run = HashSet::with_capacity(items.len());
    let mut repeats = HashSet::new();
    for (i, item) in items.iter_mut().enumerate() {
        let e = item.enqueue;
        if !in_run.insert(e.slot()) {
            repeats.insert(i);
        } else if let Err(full) = ledger
            .admit(conn, e.queue(), &e.message.sender, e.size())
            .await?
        {
            // A retry of a message already queued is not refused for want
            // of room: the sender's first attempt did get through.
            *item.outcome = Some(match e.against_stored(conn).await? {
                Some(repeat) => repeat.into(),
                None => full.into(),
            });
        }
    }
    Ok(repeats)
}

/// The enqueues still unsettled that `selected` picks.
fn pending<'a>(
    items: &[(usize, Item<'a>)],
    selected: impl Fn(&Enqueue) -> bool,
) -> impl Iterator<Item = &'a Enqueue> {
    items
        .iter()
        .filter(|(_, i)| i.outcome.is_none())
        .map(|(_, i)| i.enqueue)
        .filter(move |e| selected(e))
}

/// Settles the unsettled enqueues `selected` picks that an insert did not
/// `keep` (their slot was taken): a retry or a conflict, whose room is
/// given back.
async fn settle_conflicts(
    conn: &mut Conn<'_>,
    ledger: &mut Ledger,
    items: &mut [(usize, Item<'_>)],
    selected: impl Fn(&Enqueue) -> bool,
    kept: impl Fn(&Enqueue) -> bool,
) -> Result<(), DbError> {
    for (_, item) in items {
        let e = item.enqueue;
        if item.outcome.is_some() || !selected(e) || kept(e) {
            continue;
        }
        ledger.give_back(e.queue(), Some(&e.message.sender), e.size());
        let repeat = e.against_stored(conn).await?.unwrap_or(Repeat::Conflict);
        *item.outcome = Some(repeat.into());
    }
    Ok(())
}
