//! The copies this server relayed to each neighbour, remembered so that a
//! refusal coming back along a copy's path can be checked against what
//! was really sent. A refusal's path, sender and recipient are written by
//! the neighbour that sends it; only a copy we relayed to that neighbour
//! (same id, recipient and device) lets one through, and the sender it
//! names and the path it goes back along are taken from our record. A
//! record is used once: a second refusal for the same copy does nothing.
//!
//! The records live in memory, bounded and expiring: a refusal that comes
//! back after a restart, after the copy expired, or after
//! [`MAX_RECORDS`] later copies is dropped (and logged), which costs a
//! notice, never a message. Only refusals from further along the path
//! need them: the next hop's refusal of a copy it has not acknowledged is
//! checked against the outbound row, which is on disk. Keeping the records
//! on disk would cost a write and a delete per relayed copy, on the path
//! every relayed message takes, for an advisory notice
//! (docs/PROTOCOL.md §19.15.4).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use crate::clock::Clock;
use crate::db::Millis;
use crate::db::outbound::OutboundRow;
use crate::domain::{Fingerprint, MessageId};
use crate::rate::{Buckets, Rate};

/// Most copies remembered at once, over all neighbours; the oldest go
/// first.
const MAX_RECORDS: usize = 65_536;
/// Most undeliverable notices queued for one device in a burst, refilled
/// at one a minute: a flood of refusals cannot fill its queue.
pub(super) const NOTICE_BURST: u64 = 32;
/// Most undeliverable notices waiting in one device's queue at once; a
/// further one is dropped (and logged) until some are acknowledged.
/// Notices count against the account's queue limits like the messages
/// they stand beside (they take disk like them, so leaving them out would
/// be a way past the limits), and this bound keeps what they can take of
/// those limits small: 32 notices of at most about 1.3 KB each.
pub(super) const MAX_QUEUED_NOTICES: u64 = 32;

/// A relayed copy: the neighbour it went to, its id, recipient and
/// recipient device.
type Key = (Fingerprint, MessageId, String, u32);

/// What a refusal for a copy needs from the copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Record {
    pub(super) sender: String,
    pub(super) sender_device: u32,
    /// The copy's path as sent, ending with this server, as the queue
    /// holds it (a JSON array): read only if a refusal comes back, which
    /// spares every relayed copy a parse.
    path: String,
    expires_at: Millis,
}

impl Record {
    pub(super) fn of(row: &OutboundRow) -> Self {
        Self {
            sender: row.sender.clone(),
            sender_device: u32::try_from(row.sender_device).unwrap_or_default(),
            path: row.path.clone(),
            expires_at: row.expires_at,
        }
    }

    /// The copy's path as sent, ending with this server.
    pub(super) fn path(&self) -> Vec<String> {
        serde_json::from_str(&self.path).unwrap_or_default()
    }
}

/// The records, and the notice buckets per sending device.
pub(super) struct RelayedCopies {
    clock: Clock,
    records: Mutex<Records>,
    notices: Buckets<(String, u32), 1>,
}

#[derive(Default)]
struct Records {
    by_key: HashMap<Key, Record>,
    /// Keys in the order they were first remembered.
    order: VecDeque<Key>,
}

impl RelayedCopies {
    pub(super) fn new(clock: Clock) -> Self {
        Self {
            notices: Buckets::new([Rate::per_minute(1, NOTICE_BURST)], clock.clone()),
            clock,
            records: Mutex::new(Records::default()),
        }
    }

    /// Remembers a copy sent to `peer` (sent again after a reconnect, it
    /// keeps its place).
    pub(super) fn remember(&self, peer: Fingerprint, row: &OutboundRow) {
        let key = (
            peer,
            row.id,
            row.recipient.clone(),
            u32::try_from(row.device).unwrap_or_default(),
        );
        let mut r = self.records.lock().unwrap_or_else(|p| p.into_inner());
        if r.by_key.insert(key.clone(), Record::of(row)).is_none() {
            r.order.push_back(key);
        }
        let now = self.clock.now_ms();
        while let Some(oldest) = r.order.front() {
            let stale = r.by_key.get(oldest).is_none_or(|o| o.expires_at <= now);
            if !stale && r.order.len() <= MAX_RECORDS {
                break;
            }
            if let Some(oldest) = r.order.pop_front() {
                r.by_key.remove(&oldest);
            }
        }
    }

    /// Takes the record of the copy a refusal from `peer` names, if we
    /// sent it that copy and have not used the record yet.
    pub(super) fn take(
        &self,
        peer: Fingerprint,
        id: MessageId,
        to: &str,
        device: u32,
    ) -> Option<Record> {
        let key = (peer, id, to.to_owned(), device);
        let mut r = self.records.lock().unwrap_or_else(|p| p.into_inner());
        let record = r.by_key.remove(&key)?;
        // Its key stays in `order` until it comes to the front.
        (record.expires_at > self.clock.now_ms()).then_some(record)
    }

    /// Whether one more notice may be queued for `device` of `sender`.
    pub(super) fn may_notify(&self, sender: &str, device: u32) -> bool {
        self.notices.take(&(sender.to_owned(), device), [1]).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: MessageId, expires_at: Millis) -> OutboundRow {
        OutboundRow {
            seq: 1,
            id,
            recipient: "+12025550102".into(),
            device: 1,
            sender: "+12025550101".into(),
            sender_device: 2,
            envelope: Vec::new(),
            received_at: 0,
            expires_at,
            path: "[\"aa\"]".into(),
        }
    }

    #[test]
    fn a_record_matches_its_neighbour_and_copy_once() {
        let clock = Clock::manual();
        let copies = RelayedCopies::new(clock.clone());
        let (a, b) = (Fingerprint::of_spki(b"a"), Fingerprint::of_spki(b"b"));
        let id = MessageId::random();
        let expires = clock.now_ms() + 1_000;
        copies.remember(a, &row(id, expires));
        assert!(
            copies.take(b, id, "+12025550102", 1).is_none(),
            "another neighbour"
        );
        assert!(
            copies.take(a, id, "+12025550102", 2).is_none(),
            "another device"
        );
        let record = copies
            .take(a, id, "+12025550102", 1)
            .expect("the copy sent");
        assert_eq!(
            (record.sender.as_str(), record.sender_device),
            ("+12025550101", 2)
        );
        assert_eq!(record.path(), vec!["aa".to_string()]);
        assert!(copies.take(a, id, "+12025550102", 1).is_none(), "used once");
        let late = MessageId::random();
        copies.remember(a, &row(late, expires));
        clock.advance_ms(1_000);
        assert!(copies.take(a, late, "+12025550102", 1).is_none(), "expired");
    }

    #[test]
    fn notices_for_one_device_are_capped() {
        let copies = RelayedCopies::new(Clock::manual());
        assert!((0..NOTICE_BURST).all(|_| copies.may_notify("+12025550101", 1)));
        assert!(!copies.may_notify("+12025550101", 1));
        assert!(copies.may_notify("+12025550101", 2), "another device");
    }
}
