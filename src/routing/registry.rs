//! The sessions connected now, by user, so a committed message can be pushed
//! at once, and the bounds on what they hold: how many sessions one user
//! may have, and how many unsent bytes one session and all of one user's
//! sessions may have waiting. A session whose outbox cannot take a pushed
//! message has stopped reading: it is closed, with the reason logged, rather
//! than skipped forever or allowed to grow. A broadcast that does not fit is
//! only dropped for that session: broadcasts are public, unacknowledged and
//! can come in bulk from anyone in the neighbourhood, so closing for them
//! would let any user disconnect everyone reading a little slowly. A std
//! mutex: nothing awaits while it is held.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tokio_util::sync::CancellationToken;

use super::Limits;
use crate::db::queue::NewMessage;
use crate::domain::{MessageId, PhoneNumber};
use crate::protocol::{
    B64, Broadcast, Delivered, ErrorCode, Outbox, OutboxError, Response, ResponseFrame,
};

/// How a live, logged-in session is reached: its user, its outgoing frame
/// queue, and the messages it has been given (by fetch or push), the only
/// ones its `ack` may delete: by id, with the senders whose message under
/// that id it was given, in the order given (ids are unique per sender).
#[derive(Clone)]
pub struct SessionLink {
    id: u64,
    phone: PhoneNumber,
    /// The device logged in as; 0 for a login with the account key.
    device: u32,
    /// The fingerprint (hex) of the account key the login was proved
    /// under: a session of a key since replaced is closed.
    account: String,
    outbox: Outbox,
    given: Arc<Mutex<Given>>,
    /// Set once a fetch of this session has waited for the writer: from
    /// then on, every message submitted for its device was either
    /// committed before a fetch read or pushed to it.
    settled: Arc<AtomicBool>,
    /// Cancelled when the server closes the session.
    closed: CancellationToken,
    /// Why the server closed it, when the client must be told: set before
    /// `closed` is cancelled.
    farewell: Arc<OnceLock<Farewell>>,
}

/// The error a session is sent, without `re`, before the server closes
/// it for a change to its account: unlike a dropped connection, it tells
/// the client not to reconnect as it was.
#[derive(Clone, Debug)]
pub struct Farewell {
    pub code: ErrorCode,
    pub message: String,
}

impl SessionLink {
    /// The user this session is logged in as.
    pub fn phone(&self) -> &PhoneNumber {
        &self.phone
    }

    /// The device this session is logged in as; 0 for a login with the
    /// account key, which reaches the account's queue of v1 messages.
    pub fn device(&self) -> u32 {
        self.device
    }

    /// The fingerprint (hex) of the account key this session's login was
    /// proved under.
    pub fn account(&self) -> &str {
        &self.account
    }

    /// Cancelled once the server has closed this session; its connection
    /// then ends, after its [`farewell`](Self::farewell) if it has one.
    pub fn closed(&self) -> CancellationToken {
        self.closed.clone()
    }

    /// What the session is told before it closes: `None` for a session
    /// closed because it stopped reading, which could not read it anyway.
    pub fn farewell(&self) -> Option<&Farewell> {
        self.farewell.get()
    }

    /// Whether a fetch of this session has waited for the writer yet.
    pub(super) fn is_settled(&self) -> bool {
        self.settled.load(Ordering::Acquire)
    }

    pub(super) fn mark_settled(&self) {
        self.settled.store(true, Ordering::Release);
    }

    /// Offers one pushed frame to this session alone; a session that
    /// cannot take it just misses it (the pusher's protocol copes).
    pub(super) fn offer(&self, frame: &[u8]) {
        let _ = self.outbox.try_send(frame.to_vec());
    }

    /// Records messages handed to the session: (id, sender) pairs.
    pub(super) fn give(&self, messages: impl IntoIterator<Item = (MessageId, String)>) {
        let mut given = self.lock_given();
        for (id, sender) in messages {
            record(&mut given, id, sender);
        }
    }

    /// Takes, out of `ids`, the messages the session was given under them,
    /// as (id, sender) pairs: each listing of an id takes the message given
    /// earliest under it and not yet taken. A client reads what it is given
    /// in that order, so it has read the message it acknowledges; another
    /// sender's message under the id, given later, may still be unread (a
    /// push in flight) and is left for its own acknowledgement.
    pub(super) fn take_given(&self, ids: &[MessageId]) -> Vec<(MessageId, String)> {
        let mut given = self.lock_given();
        let mut taken = Vec::new();
        for id in ids {
            let Some(senders) = given.get_mut(id) else {
                continue;
            };
            if let Some(sender) = senders.pop_front() {
                taken.push((*id, sender));
            }
            if senders.is_empty() {
                given.remove(id);
            }
        }
        taken
    }

    fn lock_given(&self) -> std::sync::MutexGuard<'_, Given> {
        self.given.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The messages a session was given: by id, the senders of each, in the
/// order they were given.
type Given = HashMap<MessageId, VecDeque<String>>;

/// Records `sender`'s message under `id` as given, once.
fn record(given: &mut Given, id: MessageId, sender: String) {
    let senders = given.entry(id).or_default();
    if !senders.contains(&sender) {
        senders.push_back(sender);
    }
}

/// Connected sessions by user.
pub struct Registry {
    sessions: Mutex<HashMap<PhoneNumber, Vec<SessionLink>>>,
    next_id: AtomicU64,
    per_user: AtomicUsize,
    user_bytes: AtomicUsize,
}

impl Registry {
    pub fn new(limits: &Limits) -> Self {
        Self {
            sessions: Mutex::default(),
            next_id: AtomicU64::new(0),
            per_user: AtomicUsize::new(limits.sessions_per_user),
            user_bytes: AtomicUsize::new(limits.user_backlog_bytes),
        }
    }

    /// Adds a logged-in session (keep the link to remove it later), or
    /// refuses it when its user has the most sessions allowed under
    /// `account`. Sessions under a replaced key are being closed and do not
    /// count: they must not keep the account's new key out.
    pub fn join(
        &self,
        phone: PhoneNumber,
        device: u32,
        account: String,
        outbox: Outbox,
    ) -> Option<SessionLink> {
        let mut sessions = self.lock();
        let list = sessions.entry(phone.clone()).or_default();
        let under = list.iter().filter(|l| l.account == account).count();
        if under >= self.per_user.load(Ordering::Relaxed) {
            return None;
        }
        let link = SessionLink {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            phone,
            device,
            account,
            outbox,
            given: Arc::default(),
            settled: Arc::default(),
            closed: CancellationToken::new(),
            farewell: Arc::default(),
        };
        list.push(link.clone());
        Some(link)
    }

    pub fn leave(&self, link: &SessionLink) {
        let mut sessions = self.lock();
        if let Some(list) = sessions.get_mut(&link.phone) {
            list.retain(|l| l.id != link.id);
            if list.is_empty() {
                sessions.remove(&link.phone);
            }
        }
    }

    /// How many sessions `phone` has logged in.
    pub fn sessions_of(&self, phone: &PhoneNumber) -> usize {
        self.lock().get(phone).map_or(0, Vec::len)
    }

    /// How many sessions `phone` has logged in under the account key
    /// `account` (a fingerprint, hex).
    pub fn sessions_under(&self, phone: &PhoneNumber, account: &str) -> usize {
        self.lock().get(phone).map_or(0, |list| {
            list.iter().filter(|l| l.account == account).count()
        })
    }

    pub fn is_connected(&self, phone: &PhoneNumber) -> bool {
        self.lock().contains_key(phone)
    }

    /// Whether `phone` has a session logged in as `device` (0: the account
    /// key).
    pub fn is_connected_as(&self, phone: &PhoneNumber, device: u32) -> bool {
        self.lock()
            .get(phone)
            .is_some_and(|list| list.iter().any(|l| l.device == device))
    }

    /// Ends every session logged in as `device` of `phone` (a device
    /// taken off its account's list), telling each why.
    pub fn close_device(&self, phone: &PhoneNumber, device: u32) {
        let message =
            format!("this device was removed from {phone}'s device list; link it again to use it");
        for link in self.sessions_as(phone, device) {
            self.end(&link, ErrorCode::UnknownDevice, message.clone());
        }
    }

    /// Ends every session of `phone` logged in under another account key
    /// than `account` (a fingerprint, hex): the key was replaced by a new
    /// registration, which removed the old key's devices.
    pub fn close_replaced(&self, phone: &PhoneNumber, account: &str) {
        let replaced: Vec<SessionLink> = match self.lock().get(phone) {
            Some(list) => list
                .iter()
                .filter(|l| l.account != account)
                .cloned()
                .collect(),
            None => Vec::new(),
        };
        for link in replaced {
            let message = match link.device {
                0 => format!(
                    "{phone} was registered again with another key, which replaced the key this session logged in with; log in with the new key"
                ),
                _ => format!(
                    "{phone} was registered again with another key, which removed this device from the account; link it again to use it"
                ),
            };
            self.end(&link, ErrorCode::UnknownDevice, message);
        }
    }

    /// The devices `phone` has sessions logged in as (0: the account key).
    pub fn devices_of(&self, phone: &PhoneNumber) -> Vec<u32> {
        let mut devices: Vec<u32> = self
            .lock()
            .get(phone)
            .map_or_else(Vec::new, |list| list.iter().map(|l| l.device).collect());
        devices.sort_unstable();
        devices.dedup();
        devices
    }

    /// The live sessions logged in as `device` of `phone`.
    fn sessions_as(&self, phone: &PhoneNumber, device: u32) -> Vec<SessionLink> {
        match self.lock().get(phone) {
            Some(list) => list
                .iter()
                .filter(|l| l.device == device)
                .cloned()
                .collect(),
            None => Vec::new(),
        }
    }

    /// Offers a message to every live session of `device` of `recipient`,
    /// each of which may acknowledge it from then on. A session that
    /// cannot take it is closed; the message stays queued for a later
    /// fetch.
    pub fn push_delivered(&self, recipient: &PhoneNumber, device: u32, message: Delivered) {
        let links = self.sessions_as(recipient, device);
        if links.is_empty() {
            return;
        }
        let given = (message.id, message.from.clone());
        let frame = ResponseFrame {
            re: None,
            response: Response::Message(message),
        };
        let bytes = serde_json::to_vec(&frame).expect("a response always serialises");
        self.offer(&links, &bytes, Some(given));
        crate::metrics::get().pushed.inc_by(links.len() as u64);
    }

    /// Offers a public message to every live session but its author's; a
    /// session without room for it misses it and stays open.
    pub fn broadcast(&self, b: Broadcast) {
        let author = b.from.clone();
        let frame = ResponseFrame {
            re: None,
            response: Response::Broadcast(b),
        };
        let bytes = serde_json::to_vec(&frame).expect("a response always serialises");
        let users: Vec<Vec<SessionLink>> = self
            .lock()
            .iter()
            .filter(|(phone, _)| phone.as_str() != author)
            .map(|(_, l)| l.clone())
            .collect();
        for links in users {
            offer_broadcast(&links, &bytes, self.user_bytes.load(Ordering::Relaxed));
        }
    }

    /// Queues `frame` on each of one user's `links`, recording `given` on
    /// those that took it. First, while the user's sessions together would
    /// hold more than their bound once each has the frame, the one holding
    /// the most is closed; then a session whose own outbox has no room is
    /// closed.
    fn offer(&self, links: &[SessionLink], frame: &[u8], given: Option<(MessageId, String)>) {
        let mut live: Vec<&SessionLink> = links.iter().collect();
        let mut held: usize = live.iter().map(|l| l.outbox.backlog()).sum();
        let user_bytes = self.user_bytes.load(Ordering::Relaxed);
        while held + frame.len() * live.len() > user_bytes {
            let Some((i, hog)) = live
                .iter()
                .enumerate()
                .max_by_key(|(_, l)| l.outbox.backlog())
            else {
                break;
            };
            held -= hog.outbox.backlog().min(held);
            self.close(hog, "its user's sessions together hold too much unsent");
            live.remove(i);
        }
        for link in live {
            let mut ids = link.lock_given();
            match link.outbox.try_send(frame.to_vec()) {
                Ok(()) => {
                    if let Some((id, sender)) = &given {
                        record(&mut ids, *id, sender.clone());
                    }
                }
                Err(OutboxError::Full) => {
                    drop(ids);
                    self.close(link, "its own unsent backlog is full");
                }
                Err(OutboxError::Closed) => {}
            }
        }
    }

    /// Takes a session out of the registry and tells its connection to
    /// send `code` and `message`, then end.
    fn end(&self, link: &SessionLink, code: ErrorCode, message: String) {
        tracing::info!(session = link.id, phone = %link.phone, device = link.device, "closing a session: {message}");
        let _ = link.farewell.set(Farewell { code, message });
        self.leave(link);
        link.closed.cancel();
    }

    /// Takes a session that is not reading out of the registry and tells
    /// its connection to end at once.
    fn close(&self, link: &SessionLink, why: &'static str) {
        tracing::warn!(
            session = link.id,
            phone = %link.phone,
            unsent_bytes = link.outbox.backlog(),
            "closing a session that is not reading: {why}"
        );
        self.leave(link);
        link.closed.cancel();
    }

    /// Takes new bounds (a configuration reload); sessions beyond a lowered
    /// count stay until they end.
    pub fn set_limits(&self, limits: &Limits) {
        self.per_user
            .store(limits.sessions_per_user, Ordering::Relaxed);
        self.user_bytes
            .store(limits.user_backlog_bytes, Ordering::Relaxed);
    }

    /// Live sessions, all users together.
    pub fn count(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }

    /// Closes every session of `phone` (an operator removed or disabled
    /// the user); returns how many there were.
    pub fn close_user(&self, phone: &PhoneNumber) -> usize {
        let links = self.lock().remove(phone).unwrap_or_default();
        for link in &links {
            link.closed.cancel();
        }
        links.len()
    }

    /// Ends every session of `phone`, whose home is now `home`, another
    /// server of the neighbourhood, telling each why.
    pub fn close_moved(&self, phone: &PhoneNumber, home: &str) {
        let links = self.lock().get(phone).cloned().unwrap_or_default();
        let message =
            format!("{phone} was registered on {home}, which is its home now; log in there");
        for link in links {
            self.end(&link, ErrorCode::UnknownUser, message.clone());
        }
    }

    /// The users with a live session now.
    pub fn users(&self) -> Vec<PhoneNumber> {
        self.lock().keys().cloned().collect()
    }

    /// The users with a live session now, sorted.
    pub fn online(&self) -> Vec<String> {
        let mut online: Vec<String> = self.lock().keys().map(|p| p.to_string()).collect();
        online.sort();
        online
    }

    /// Every logged-in user once per session, sorted: what the other
    /// members of a cluster count sessions per user from.
    pub fn online_sessions(&self) -> Vec<String> {
        let mut online: Vec<String> = self
            .lock()
            .iter()
            .flat_map(|(p, list)| std::iter::repeat_n(p.to_string(), list.len()))
            .collect();
        online.sort();
        online
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PhoneNumber, Vec<SessionLink>>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Queues a broadcast `frame` on each of one user's `links` that has room
/// for it while leaving half of the session's outbox, and half of the
/// user's bound of `user_bytes` unsent for all their sessions together,
/// free; the others miss it (counted, and logged at debug) but stay open.
/// Nothing is owed for a broadcast, so a session that reads slowly loses
/// only broadcasts that came faster than it read, and the half they leave
/// is there for its messages, which close it when they find no room.
fn offer_broadcast(links: &[SessionLink], frame: &[u8], user_bytes: usize) {
    let mut held: usize = links.iter().map(|l| l.outbox.backlog()).sum();
    for link in links {
        let fits = held + frame.len() <= user_bytes / 2;
        match fits.then(|| link.outbox.try_send_leaving_half(frame.to_vec())) {
            Some(Ok(())) => held += frame.len(),
            Some(Err(OutboxError::Closed)) => {}
            Some(Err(OutboxError::Full)) | None => {
                crate::metrics::get().broadcasts_dropped.inc();
                tracing::debug!(
                    session = link.id,
                    phone = %link.phone,
                    unsent_bytes = link.outbox.backlog(),
                    "a broadcast did not fit a session's unsent backlog; that session misses it"
                );
            }
        }
    }
}

/// `message` as its recipient receives it.
pub(super) fn delivered(message: &NewMessage) -> Delivered {
    Delivered {
        id: message.id,
        from: message.sender.to_string(),
        envelope: B64(message.envelope.clone()),
        received_at: message.received_at,
        device: (message.sender_device != 0).then_some(message.sender_device),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOB: &str = "+12025550102";

    fn registry(sessions: usize, session_bytes: usize, user_bytes: usize) -> Registry {
        Registry::new(&Limits {
            sessions_per_user: sessions,
            session_backlog_bytes: session_bytes,
            user_backlog_bytes: user_bytes,
            ..Limits::default()
        })
    }

    /// A session of Bob's whose peer never reads: its receiver is kept but
    /// never drained.
    fn silent(r: &Registry, bytes: usize) -> (SessionLink, crate::protocol::OutboxReceiver) {
        let (outbox, rx) = Outbox::new(1024, bytes);
        let phone = PhoneNumber::from_canonical(BOB).unwrap();
        let account = "ab".repeat(32);
        (
            r.join(phone, 0, account, outbox)
                .expect("room for a session"),
            rx,
        )
    }

    fn message(size: usize) -> NewMessage {
        NewMessage {
            id: MessageId::random(),
            recipient: PhoneNumber::from_canonical(BOB).unwrap(),
            device: 0,
            sender: PhoneNumber::from_canonical("+12025550101").unwrap(),
            sender_device: 0,
            envelope: vec![7; size],
            received_at: 0,
            expires_at: 1,
        }
    }

    fn bob() -> PhoneNumber {
        PhoneNumber::from_canonical(BOB).unwrap()
    }

    #[test]
    fn a_session_that_cannot_take_a_push_is_closed_and_gone() {
        let r = registry(8, 4000, 100_000);
        let (link, _rx) = silent(&r, 4000);
        let mut pushed = 0;
        while !link.closed().is_cancelled() {
            assert!(pushed < 100, "the backlog grew without bound");
            r.push_delivered(&bob(), 0, delivered(&message(1000)));
            pushed += 1;
        }
        assert!(link.outbox.backlog() <= 4000);
        assert!(
            !r.is_connected(&bob()),
            "a closed session gets no more pushes"
        );
    }

    #[test]
    fn a_users_sessions_together_hold_at_most_their_bound() {
        let r = registry(8, 10_000, 12_000);
        let sessions: Vec<_> = (0..3).map(|_| silent(&r, 10_000)).collect();
        for _ in 0..30 {
            r.push_delivered(&bob(), 0, delivered(&message(500)));
            let held: usize = sessions
                .iter()
                .filter(|(l, _)| !l.closed().is_cancelled())
                .map(|(l, _)| l.outbox.backlog())
                .sum();
            assert!(held <= 12_000, "{held} bytes held");
        }
        let open = sessions
            .iter()
            .filter(|(l, _)| !l.closed().is_cancelled())
            .count();
        assert!(open < 3, "no session was closed");
        assert_eq!(r.sessions_of(&bob()), open);
    }

    fn broadcast(size: usize) -> Broadcast {
        Broadcast {
            id: MessageId::random(),
            from: "+12025550101".into(),
            sent_at: 0,
            text: "b".repeat(size),
            signature: B64(vec![0; 64]),
        }
    }

    #[test]
    fn a_session_without_room_for_a_broadcast_misses_it_and_stays_open() {
        let r = registry(8, 4000, 100_000);
        let (link, _rx) = silent(&r, 4000);
        for _ in 0..20 {
            r.broadcast(broadcast(1000));
        }
        assert!(!link.closed().is_cancelled(), "the session was closed");
        assert!(r.is_connected(&bob()));
        assert!(
            link.outbox.backlog() <= 2000,
            "broadcasts took more than half"
        );
        assert!(link.outbox.backlog() > 0, "nothing was pushed at all");
    }

    /// Broadcasts that came faster than a session read leave the room its
    /// messages need: the message after them does not close it.
    #[test]
    fn broadcasts_leave_half_the_outbox_for_messages() {
        let r = registry(8, 8000, 100_000);
        let (link, _rx) = silent(&r, 8000);
        for _ in 0..50 {
            r.broadcast(broadcast(300));
        }
        for _ in 0..2000 {
            r.broadcast(broadcast(1));
        }
        r.push_delivered(&bob(), 0, delivered(&message(1000)));
        assert!(
            !link.closed().is_cancelled(),
            "the message closed the session"
        );
    }

    #[test]
    fn broadcasts_keep_a_users_sessions_within_their_bound_without_closing_any() {
        let r = registry(8, 10_000, 12_000);
        let sessions: Vec<_> = (0..3).map(|_| silent(&r, 10_000)).collect();
        for _ in 0..30 {
            r.broadcast(broadcast(500));
            let held: usize = sessions.iter().map(|(l, _)| l.outbox.backlog()).sum();
            assert!(held <= 6_000, "{held} bytes held");
        }
        assert!(sessions.iter().all(|(l, _)| !l.closed().is_cancelled()));
        assert_eq!(r.sessions_of(&bob()), 3);
    }

    #[test]
    fn sessions_per_user_are_limited() {
        let r = registry(2, 4000, 8000);
        let (first, _a) = silent(&r, 4000);
        let _second = silent(&r, 4000);
        let (outbox, _c) = Outbox::new(8, 4000);
        let account = "ab".repeat(32);
        assert!(
            r.join(bob(), 0, account.clone(), outbox.clone()).is_none(),
            "a third session"
        );
        r.leave(&first);
        assert!(
            r.join(bob(), 0, account, outbox.clone()).is_some(),
            "room again after one left"
        );
        // A new key's sessions are not kept out by the old key's, which
        // registering it closes.
        assert!(
            r.join(bob(), 0, "cd".repeat(32), outbox).is_some(),
            "a session under a new key"
        );
    }
}
