//! Quota accounting: how many messages and envelope bytes each queue holds,
//! kept in memory by the queue writer (loaded on a queue's first use) so a
//! quota check costs no query. Only the writer changes the queues, so its
//! counts stay true as long as it applies every change it commits here too.

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
    pub per_neighbour: Quota,
}

/// What one queue holds.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Usage {
    pub count: u64,
    pub bytes: u64,
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

    /// Whether `queue` has room for one more message of `size` bytes; if it
    /// has, the message is counted.
    pub async fn admit(
        &mut self,
        conn: &mut Conn<'_>,
        queue: QueueKey<'_>,
        size: u64,
    ) -> Result<bool, DbError> {
        let quota = match queue {
            QueueKey::Recipient(_) => self.quotas.per_recipient,
            QueueKey::Neighbour(_) => self.quotas.per_neighbour,
        };
        let usage = match self.get_mut(queue) {
            Some(usage) => usage,
            None => {
                let loaded = queue::usage(conn, queue).await?;
                self.insert(queue, loaded)
            }
        };
        if usage.count + 1 > quota.max_messages || usage.bytes + size > quota.max_bytes {
            return Ok(false);
        }
        usage.count += 1;
        usage.bytes += size;
        Ok(true)
    }

    /// Takes a message of `size` bytes off `queue`'s count: it was deleted,
    /// or counted by [`Ledger::admit`] but then not stored.
    pub fn give_back(&mut self, queue: QueueKey<'_>, size: u64) {
        if let Some(usage) = self.get_mut(queue) {
            usage.count = usage.count.saturating_sub(1);
            usage.bytes = usage.bytes.saturating_sub(size);
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
