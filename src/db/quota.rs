//! Quota accounting: how many messages and envelope bytes each queue holds,
//! kept in memory by the queue writer (loaded on a queue's first use) so a
//! quota check costs no query. Only the writer changes the queues, so its
//! counts stay true as long as it applies every change it commits here too.

use std::collections::HashMap;

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

/// The usage of every queue the writer has touched. Recipients and
/// neighbours are counted apart so a queue is looked up by its borrowed key,
/// without copying a phone number per message.
pub(super) struct Ledger {
    quotas: Quotas,
    recipients: HashMap<PhoneNumber, Usage>,
    neighbours: HashMap<Fingerprint, Usage>,
}

impl Ledger {
    pub fn new(quotas: Quotas) -> Self {
        Self {
            quotas,
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
        let was_near = near_full(usage, &quota);
        usage.count += 1;
        usage.bytes += size;
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
