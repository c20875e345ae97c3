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

/// The usage of every queue the writer has touched. Recipients and
/// neighbours are counted apart so a queue is looked up by its borrowed key,
/// without copying a phone number per message.
pub(super) struct Ledger {
    quotas: Quotas,
    /// How long counts are trusted when others change the queues too.
    recount: Option<Duration>,
    counted_since: Instant,
    recipients: HashMap<PhoneNumber, Usage>,
    /// Per recipient, per sender; a pair whose count falls to zero is
    /// dropped, so this holds only pairs with messages queued.
    senders: HashMap<PhoneNumber, HashMap<PhoneNumber, Usage>>,
    neighbours: HashMap<Fingerprint, Usage>,
}

impl Ledger {
    pub fn new(quotas: Quotas, recount: Option<Duration>) -> Self {
        Self {
            quotas,
            recount,
            counted_since: Instant::now(),
            recipients: HashMap::new(),
            senders: HashMap::new(),
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
        let quota = match queue {
            QueueKey::Recipient(_) => quotas.per_recipient,
            QueueKey::Neighbour(_) => quotas.per_neighbour,
        };
        if !self.queue_usage(conn, queue).await?.fits(quota, size) {
            return Ok(Err(Full::Queue));
        }
        if let QueueKey::Recipient(recipient) = queue {
            let share = self.sender_usage(conn, recipient, sender).await?;
            if !share.fits(quotas.per_sender, size) {
                return Ok(Err(Full::SenderShare));
            }
            share.add(size);
        }
        let usage = self.queue_usage(conn, queue).await?;
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
        if let Some(usage) = self.get_mut(queue) {
            usage.take(size);
        }
        if let (QueueKey::Recipient(recipient), Some(sender)) = (queue, sender)
            && let Some(by_sender) = self.senders.get_mut(recipient)
        {
            if let Some(share) = by_sender.get_mut(sender) {
                share.take(size);
                if share.count == 0 {
                    by_sender.remove(sender);
                }
            }
            if by_sender.is_empty() {
                self.senders.remove(recipient);
            }
        }
    }

    /// Forgets every count, after a rolled-back transaction whose changes
    /// they may include; each queue is loaded again on its next use.
    pub fn forget(&mut self) {
        self.recipients.clear();
        self.senders.clear();
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
        self.senders.remove(phone);
    }

    /// `queue`'s usage, loaded on its first use.
    async fn queue_usage(
        &mut self,
        conn: &mut Conn<'_>,
        queue: QueueKey<'_>,
    ) -> Result<&mut Usage, DbError> {
        if self.get_mut(queue).is_none() {
            let loaded = queue::usage(conn, queue).await?;
            self.insert(queue, loaded);
        }
        Ok(self.get_mut(queue).expect("inserted above"))
    }

    /// What `sender` holds in `recipient`'s queue, loaded on first use.
    async fn sender_usage(
        &mut self,
        conn: &mut Conn<'_>,
        recipient: &PhoneNumber,
        sender: &PhoneNumber,
    ) -> Result<&mut Usage, DbError> {
        let by_sender = self.senders.entry(recipient.clone()).or_default();
        if !by_sender.contains_key(sender) {
            let loaded = queue::sender_usage(conn, recipient, sender).await?;
            by_sender.insert(sender.clone(), loaded);
        }
        Ok(by_sender.get_mut(sender).expect("inserted above"))
    }

    fn get_mut(&mut self, queue: QueueKey<'_>) -> Option<&mut Usage> {
        match queue {
            QueueKey::Recipient(phone) => self.recipients.get_mut(phone),
            QueueKey::Neighbour(fp) => self.neighbours.get_mut(&fp),
        }
    }

    fn insert(&mut self, queue: QueueKey<'_>, usage: Usage) -> &mut Usage {
        match queue {
            QueueKey::Recipient(phone) => self.recipients.entry(phone.clone()).or_insert(usage),
            QueueKey::Neighbour(fp) => self.neighbours.entry(fp).or_insert(usage),
        }
    }
}
