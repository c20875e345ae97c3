//! Quota accounting: how many messages and envelope bytes each queue holds,
//! kept in memory by the queue writer (loaded on a queue's first use) so a
//! quota check costs no query. Only the writer changes the queues, so its
//! counts stay true as long as it applies every change it commits here too.
//!
//! A recipient's queue is also counted per sender, and each sender may hold
//! only a share of it ([`Quotas::per_sender`]): one sender, however many
//! messages it may send, cannot fill the whole queue and so shut everyone
//! else out of it.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::time::{Duration, Instant};

use super::DbError;
use super::backend::Conn;
use super::queue::{self, QueueKey};
use crate::domain::{Fingerprint, PhoneNumber};

/// Limits on one queue (a recipient's, or a neighbour's outbound queue).
#[derive(Debug, Clone, Copy)]
pub struct Quota {
    pub max_messages: u64,
    pub max_bytes: u64,
}

/// The limits the writer enforces.
#[derive(Debug, Clone, Copy)]
pub struct Quotas {
    pub per_recipient: Quota,
    /// What one sender may hold in one recipient's queue.
    pub per_sender: Quota,
    pub per_neighbour: Quota,
}

/// Why a message does not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Full {
    /// Its queue is full.
    Queue,
    /// Its sender holds all of its share of the recipient's queue.
    SenderShare,
}

/// Past this share of a quota a queue is worth a warning (once, on the
/// way up).
const NEAR_FULL_PERCENT: u64 = 90;

fn near_full(usage: &Usage, quota: &Quota) -> bool {
    let near =
        |used: u64, max: u64| used.saturating_mul(100) >= max.saturating_mul(NEAR_FULL_PERCENT);
    near(usage.count, quota.max_messages) || near(usage.bytes, quota.max_bytes)
}

/// What one queue holds.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Usage {
    pub count: u64,
    pub bytes: u64,
}

impl Usage {
    fn fits(&self, quota: Quota, size: u64) -> bool {
        self.count < quota.max_messages && self.bytes.saturating_add(size) <= quota.max_bytes
    }

    fn add(&mut self, size: u64) {
        self.count += 1;
        self.bytes += size;
    }

    fn take(&mut self, size: u64) {
        self.count = self.count.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(size);
    }
}

/// What a recipient's queue holds, in all and per sender. Both are read
/// together on the recipient's first use ([`queue::usage_by_sender`]), so a
/// sender missing from `senders` holds nothing there: a pair whose count
/// falls to zero is dropped without being read again later.
#[derive(Debug, Default)]
struct RecipientUsage {
    queue: Usage,
    senders: HashMap<PhoneNumber, Usage>,
}

impl RecipientUsage {
    fn from_rows(rows: Vec<(String, Usage)>) -> Self {
        let mut loaded = Self::default();
        for (sender, usage) in rows {
            loaded.queue.count += usage.count;
            loaded.queue.bytes += usage.bytes;
            // A sender's rows (one per device it wrote to) add up. A sender
            // column that is not a phone number was not written by this
            // server; it takes room, but no sender's share.
            if let Ok(sender) = PhoneNumber::from_canonical(&sender) {
                let share = loaded.senders.entry(sender).or_default();
                share.count += usage.count;
                share.bytes += usage.bytes;
            }
        }
        loaded
    }

    /// Takes a message of `size` bytes from `sender` off the counts.
    fn take(&mut self, sender: Option<&PhoneNumber>, size: u64) {
        self.queue.take(size);
        if let Some(sender) = sender
            && let Some(share) = self.senders.get_mut(sender)
        {
            share.take(size);
            if share.count == 0 {
                self.senders.remove(sender);
                if self.senders.is_empty() {
                    // Let a queue emptied by its recipient hold no memory.
                    self.senders = HashMap::new();
                }
            }
        }
    }
}

/// The usage of every queue the writer has touched. Recipients and
/// neighbours are counted apart so a queue is looked up by its borrowed key,
/// without copying a phone number per message.
pub(super) struct Ledger {
    quotas: Quotas,
    /// How long counts are trusted when others change the queues too.
    recount: Option<Duration>,
    counted_since: Instant,
    recipients: HashMap<PhoneNumber, RecipientUsage>,
    neighbours: HashMap<Fingerprint, Usage>,
}

impl Ledger {
    pub fn new(quotas: Quotas, recount: Option<Duration>) -> Self {
        Self {
            quotas,
            recount,
            counted_since: Instant::now(),
            recipients: HashMap::new(),
            neighbours: HashMap::new(),
        }
    }

    /// Whether `queue` has room for one more message of `size` bytes from
    /// `sender`; if it has, the message is counted.
    pub async fn admit(
        &mut self,
        conn: &mut Conn<'_>,
        queue: QueueKey<'_>,
        sender: &PhoneNumber,
        size: u64,
    ) -> Result<Result<(), Full>, DbError> {
        let quotas = self.quotas;
        let (usage, quota) = match queue {
            QueueKey::Recipient(recipient) => {
                let loaded = self.recipient(conn, recipient).await?;
                if !loaded.queue.fits(quotas.per_recipient, size) {
                    return Ok(Err(Full::Queue));
                }
                let held = loaded.senders.get(sender).copied().unwrap_or_default();
                if !held.fits(quotas.per_sender, size) {
                    return Ok(Err(Full::SenderShare));
                }
                match loaded.senders.get_mut(sender) {
                    Some(share) => share.add(size),
                    None => {
                        let mut share = Usage::default();
                        share.add(size);
                        loaded.senders.insert(sender.clone(), share);
                    }
                }
                (&mut loaded.queue, quotas.per_recipient)
            }
            QueueKey::Neighbour(fp) => {
                let usage = self.neighbour(conn, fp).await?;
                if !usage.fits(quotas.per_neighbour, size) {
                    return Ok(Err(Full::Queue));
                }
                (usage, quotas.per_neighbour)
            }
        };
        let was_near = near_full(usage, &quota);
        usage.add(size);
        if !was_near && near_full(usage, &quota) {
            tracing::warn!(
                queue = %queue,
                messages = usage.count,
                bytes = usage.bytes,
                max_messages = quota.max_messages,
                max_bytes = quota.max_bytes,
                "a queue is nearly full; once full, sends to it are refused with quota_exceeded"
            );
        }
        Ok(Ok(()))
    }

    /// Takes a message of `size` bytes from `sender` off `queue`'s count:
    /// it was deleted, or counted by [`Ledger::admit`] but then not stored.
    /// (A neighbour's queue is not counted per sender.)
    pub fn give_back(&mut self, queue: QueueKey<'_>, sender: Option<&PhoneNumber>, size: u64) {
        match queue {
            QueueKey::Recipient(recipient) => {
                if let Some(loaded) = self.recipients.get_mut(recipient) {
                    loaded.take(sender, size);
                }
            }
            QueueKey::Neighbour(fp) => {
                if let Some(usage) = self.neighbours.get_mut(&fp) {
                    usage.take(size);
                }
            }
        }
    }

    /// Forgets every count, after a rolled-back transaction whose changes
    /// they may include; each queue is loaded again on its next use.
    pub fn forget(&mut self) {
        self.recipients.clear();
        self.neighbours.clear();
    }

    /// Forgets every count once they are older than the recount interval.
    pub fn recount_if_due(&mut self) {
        if let Some(every) = self.recount
            && self.counted_since.elapsed() >= every
        {
            self.forget();
            self.counted_since = Instant::now();
        }
    }

    /// Forgets one recipient's count, loaded again on its next use.
    pub fn forget_recipient(&mut self, phone: &PhoneNumber) {
        self.recipients.remove(phone);
    }

    /// `recipient`'s usage, in all and per sender, loaded on first use.
    async fn recipient(
        &mut self,
        conn: &mut Conn<'_>,
        recipient: &PhoneNumber,
    ) -> Result<&mut RecipientUsage, DbError> {
        if !self.recipients.contains_key(recipient) {
            let rows = queue::usage_by_sender(conn, recipient).await?;
            self.recipients
                .insert(recipient.clone(), RecipientUsage::from_rows(rows));
        }
        Ok(self.recipients.get_mut(recipient).expect("inserted above"))
    }

    /// A neighbour's outbound queue's usage, loaded on first use.
    async fn neighbour(
        &mut self,
        conn: &mut Conn<'_>,
        fp: Fingerprint,
    ) -> Result<&mut Usage, DbError> {
        Ok(match self.neighbours.entry(fp) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(queue::usage(conn, QueueKey::Neighbour(fp)).await?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(count: u64, bytes: u64) -> Usage {
        Usage { count, bytes }
    }

    #[test]
    fn a_recipients_queue_is_the_sum_of_its_senders_shares() {
        let loaded = RecipientUsage::from_rows(vec![
            ("+447700900001".into(), usage(2, 300)),
            ("+447700900002".into(), usage(1, 50)),
            ("not a phone".into(), usage(1, 7)),
        ]);
        assert_eq!(loaded.queue.count, 4);
        assert_eq!(loaded.queue.bytes, 357);
        assert_eq!(loaded.senders.len(), 2, "an unreadable sender has no share");
    }

    /// The grouped read gives a sender one row per device it wrote to.
    #[test]
    fn a_senders_rows_for_several_devices_make_one_share() {
        let alice = PhoneNumber::from_canonical("+447700900001").unwrap();
        let loaded = RecipientUsage::from_rows(vec![
            (alice.as_str().into(), usage(2, 300)),
            ("+447700900002".into(), usage(1, 50)),
            (alice.as_str().into(), usage(3, 120)),
        ]);
        let share = loaded.senders[&alice];
        assert_eq!((share.count, share.bytes), (5, 420));
        assert_eq!((loaded.queue.count, loaded.queue.bytes), (6, 470));
    }

    #[test]
    fn a_share_that_empties_is_dropped_and_the_queue_keeps_its_count() {
        let alice = PhoneNumber::from_canonical("+447700900001").unwrap();
        let mut loaded = RecipientUsage::from_rows(vec![(alice.as_str().into(), usage(1, 100))]);
        loaded.take(Some(&alice), 100);
        assert!(loaded.senders.is_empty());
        assert_eq!((loaded.queue.count, loaded.queue.bytes), (0, 0));
        // Taking again (a delete of a row never counted) cannot underflow.
        loaded.take(Some(&alice), 100);
        assert_eq!((loaded.queue.count, loaded.queue.bytes), (0, 0));
    }
}
