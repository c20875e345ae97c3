//! What a neighbour's link learns of its outbound queue without reading it
//! back: each message committed to the queue is handed to the link in
//! memory while the link keeps up ([`Feed`]); after a restart, a new link,
//! or when the link falls behind, it reads the table instead. The table
//! stays the only record: a message leaves it only once the neighbour has
//! acknowledged it, and acknowledgements that arrive together are deleted
//! in one transaction ([`Router::outbound_acked_many`]).

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::Notify;

use super::Router;
use crate::db::DbError;
use crate::db::enqueue::Destination;
use crate::db::outbound::OutboundRow;
use crate::db::queue::QueueRef;
use crate::db::writer::Committed;
use crate::domain::{Fingerprint, MessageId, PhoneNumber};

/// Committed messages held for a link before it counts as behind (and
/// reads the table again).
const FEED_CAPACITY: usize = 2048;

/// One neighbour's committed outbound messages on their way to the link
/// that drains its queue, and the signal that there is something to send.
#[derive(Default)]
pub struct Feed {
    notify: Notify,
    state: Mutex<FeedState>,
}

#[derive(Default)]
struct FeedState {
    /// The drain taking from this feed now, if any (a replaced link's
    /// drain is told to read the table).
    listener: Option<u64>,
    next_listener: u64,
    /// Committed since the listener last took, in commit order.
    rows: VecDeque<OutboundRow>,
    /// Something was committed (or may have been) that `rows` lacks.
    missed: bool,
}

/// What a drain should do next.
#[derive(Debug)]
pub enum Next {
    /// Read the table from its cursor until it is empty: something may be
    /// there that the feed does not hold.
    ReadTable,
    /// Send these (skipping any at or before its cursor); none: wait.
    Send(Vec<OutboundRow>),
}

impl Feed {
    /// Makes the caller the feed's drain, which starts by reading the
    /// table; returns its ticket for [`Feed::next`] and [`Feed::stop`].
    pub fn listen(&self) -> u64 {
        let mut s = self.lock();
        s.next_listener += 1;
        s.listener = Some(s.next_listener);
        s.rows.clear();
        s.missed = true;
        s.next_listener
    }

    /// What drain `ticket` should do next.
    pub fn next(&self, ticket: u64) -> Next {
        let mut s = self.lock();
        if s.listener != Some(ticket) {
            return Next::ReadTable;
        }
        if std::mem::take(&mut s.missed) {
            s.rows.clear();
            return Next::ReadTable;
        }
        Next::Send(s.rows.drain(..).collect())
    }

    /// Waits until there may be something new.
    pub async fn changed(&self) {
        self.notify.notified().await;
    }

    /// Drain `ticket` ends.
    pub fn stop(&self, ticket: u64) {
        let mut s = self.lock();
        if s.listener == Some(ticket) {
            s.listener = None;
            s.rows.clear();
        }
    }

    /// A message committed to the queue, in commit order.
    fn push(&self, row: OutboundRow) {
        {
            let mut s = self.lock();
            if s.listener.is_none() {
                return;
            }
            if s.missed || s.rows.len() >= FEED_CAPACITY {
                s.missed = true;
                s.rows.clear();
            } else {
                s.rows.push_back(row);
            }
        }
        self.notify.notify_one();
    }

    /// The queue changed in a way the feed does not hold (another member
    /// of a cluster committed to it): the drain reads the table.
    pub fn wake(&self) {
        self.lock().missed = true;
        self.notify.notify_one();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FeedState> {
        // A std mutex: nothing awaits while it is held.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A committed outbound message as the table would give it back.
fn row_of(c: Committed, seq: i64, path: String) -> OutboundRow {
    let m = c.message;
    OutboundRow {
        seq,
        id: m.id,
        recipient: m.recipient.as_str().to_owned(),
        device: i64::from(m.device),
        sender: m.sender.as_str().to_owned(),
        sender_device: i64::from(m.sender_device),
        envelope: m.envelope,
        received_at: m.received_at,
        expires_at: m.expires_at,
        path,
    }
}

impl Router {
    /// Hands a committed outbound message to its neighbour's link (or, if
    /// its position is unknown, tells the link to read the table).
    pub(super) fn outbound_committed(&self, c: Committed) {
        let Destination::Neighbour(o) = &c.destination else {
            return;
        };
        let feed = self.neighbours.feed(o.neighbour);
        match c.seq {
            Some(seq) => {
                let path = o.path.clone();
                feed.push(row_of(c, seq, path));
            }
            None => feed.wake(),
        }
    }

    /// Deletes what neighbour `peer` acknowledged, each entry the ids of
    /// one recipient device (and recipient, when named), in one
    /// transaction; returns how many were deleted.
    pub async fn outbound_acked_many(
        &self,
        peer: &Fingerprint,
        acks: Vec<(u32, Option<PhoneNumber>, Vec<MessageId>)>,
    ) -> Result<u64, DbError> {
        let mut pending = Vec::with_capacity(acks.len());
        for (device, to, ids) in acks {
            let queue = QueueRef::Neighbour(*peer, device, to);
            pending.push(self.store.submit_delete(queue, ids).await?);
        }
        let mut deleted = 0;
        let mut first_error = None;
        for rx in pending {
            match rx.await.map_err(|_| DbError::WriterGone).and_then(|r| r) {
                Ok(n) => deleted += n,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        crate::metrics::get().relayed_out.inc_by(deleted);
        match first_error {
            Some(e) => Err(e),
            None => Ok(deleted),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(seq: i64) -> OutboundRow {
        OutboundRow {
            seq,
            id: MessageId::from_bytes([seq as u8; 16]),
            recipient: "+12025550101".into(),
            device: 1,
            sender: "+12025550102".into(),
            sender_device: 1,
            envelope: vec![1, 2, 3],
            received_at: 0,
            expires_at: 1,
            path: "[]".into(),
        }
    }

    fn seqs(next: Next) -> Option<Vec<i64>> {
        match next {
            Next::ReadTable => None,
            Next::Send(rows) => Some(rows.iter().map(|r| r.seq).collect()),
        }
    }

    #[test]
    fn a_new_drain_reads_the_table_first_then_takes_from_memory() {
        let feed = Feed::default();
        feed.push(row(1));
        let t = feed.listen();
        assert_eq!(seqs(feed.next(t)), None);
        feed.push(row(2));
        feed.push(row(3));
        assert_eq!(seqs(feed.next(t)), Some(vec![2, 3]));
        assert_eq!(seqs(feed.next(t)), Some(vec![]));
    }

    #[test]
    fn a_drain_that_falls_behind_reads_the_table() {
        let feed = Feed::default();
        let t = feed.listen();
        assert_eq!(seqs(feed.next(t)), None);
        for seq in 0..=FEED_CAPACITY as i64 {
            feed.push(row(seq));
        }
        assert_eq!(seqs(feed.next(t)), None);
        feed.push(row(10_000));
        assert_eq!(seqs(feed.next(t)), Some(vec![10_000]));
        feed.wake();
        assert_eq!(seqs(feed.next(t)), None);
    }

    #[test]
    fn a_replaced_drain_reads_the_table_and_the_new_one_gets_the_feed() {
        let feed = Feed::default();
        let old = feed.listen();
        let new = feed.listen();
        assert_eq!(seqs(feed.next(new)), None);
        feed.push(row(5));
        assert_eq!(seqs(feed.next(old)), None);
        feed.stop(old);
        assert_eq!(seqs(feed.next(new)), Some(vec![5]));
        feed.stop(new);
        feed.push(row(6));
        let again = feed.listen();
        assert_eq!(seqs(feed.next(again)), None);
    }
}
