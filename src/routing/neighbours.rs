//! The neighbour links that are up now, and what the neighbourhood told us
//! about presence and broadcasts. A link is owned by its own task; this
//! registry holds only cloneable handles to reach it.
//!
//! Two servers that list each other may connect twice at once. Both keep the
//! connection dialled by the server with the lower fingerprint, so they
//! settle on the same one without talking about it.
//!
//! The [`Router`] side of this file is what the link tasks call: a link
//! coming up and going down, the wake-up of its queue drainer, and the key
//! pinned for a neighbour's address on first contact.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::Router;
use super::outbound::Feed;
use crate::db::DbError;
use crate::domain::{Fingerprint, MessageId};

/// How long a server's presence report stays believable without a refresh.
pub const PRESENCE_STALE_AFTER: Duration = Duration::from_secs(90);
/// How long a broadcast id is remembered for de-duplication.
const BROADCAST_MEMORY: Duration = Duration::from_secs(600);
/// Most broadcast ids remembered at once.
const MAX_BROADCAST_IDS: usize = 100_000;

/// How to reach a live link's task.
#[derive(Clone)]
struct LinkHandle {
    id: u64,
    /// The server that opened the TCP connection.
    dialer: Fingerprint,
    outbox: mpsc::Sender<Vec<u8>>,
    /// Cancelled to make the link's task end (a better link replaced it).
    closed: CancellationToken,
}

struct Presence {
    seq: u64,
    online: HashSet<String>,
    at: Instant,
}

#[derive(Default)]
struct State {
    links: HashMap<Fingerprint, LinkHandle>,
    feeds: HashMap<Fingerprint, Arc<Feed>>,
    up: HashMap<Fingerprint, watch::Sender<bool>>,
    presence: HashMap<Fingerprint, Presence>,
    broadcasts: HashMap<MessageId, Instant>,
}

/// Live links and neighbourhood state.
#[derive(Default)]
pub struct Neighbours {
    state: Mutex<State>,
    next_id: AtomicU64,
}

impl Router {
    /// Registers a link to `peer`, opened by `dialer`, that just completed
    /// its handshake; `outbox` reaches its writer and `closed` ends it.
    /// Returns the link's id, or `None` if an existing link to the same
    /// server is kept instead (the caller then closes the new one).
    pub fn link_up(
        &self,
        peer: Fingerprint,
        dialer: Fingerprint,
        outbox: mpsc::Sender<Vec<u8>>,
        closed: CancellationToken,
    ) -> Option<u64> {
        let id = self.neighbours.next_id.fetch_add(1, Ordering::Relaxed);
        let handle = LinkHandle {
            id,
            dialer,
            outbox,
            closed,
        };
        self.neighbours.attach(peer, handle).then_some(id)
    }

    /// Forgets link `id` to `peer`, which ended.
    pub fn link_down(&self, peer: Fingerprint, id: u64) {
        self.neighbours.detach(peer, id);
    }

    /// Ends the live link to `peer`, if there is one (the neighbour was
    /// removed from the configuration).
    pub fn close_link(&self, peer: &Fingerprint) {
        if let Some(link) = self.neighbours.lock().links.get(peer) {
            link.closed.cancel();
        }
    }

    pub fn link_is_up(&self, peer: &Fingerprint) -> bool {
        self.neighbours.is_up(peer)
    }

    /// The neighbours with a live link now.
    pub fn linked_neighbours(&self) -> Vec<Fingerprint> {
        let state = self
            .neighbours
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        state.links.keys().copied().collect()
    }

    /// A receiver that sees when the link to `peer` goes up or down.
    pub fn watch_link(&self, peer: Fingerprint) -> watch::Receiver<bool> {
        self.neighbours.watch(peer)
    }

    /// What is committed for `peer`, as its link's drain takes it.
    pub fn outbound_feed(&self, peer: Fingerprint) -> Arc<Feed> {
        self.neighbours.feed(peer)
    }

    /// The key pinned for the neighbour at `address`, if any.
    pub async fn neighbour_pin(&self, address: &str) -> Result<Option<Fingerprint>, DbError> {
        self.store.neighbour_pin(address).await
    }

    /// Pins the key a neighbour presented on first contact.
    pub async fn pin_neighbour(&self, address: &str, fp: Fingerprint) -> Result<(), DbError> {
        self.store.pin_neighbour(address, fp).await
    }
}

impl Neighbours {
    /// Registers a link that just completed its handshake. Returns false if
    /// an existing link to the same server is kept instead. A new link from
    /// the same dialer replaces the old one: the dialer only dials when it
    /// believes the old link is dead.
    fn attach(&self, peer: Fingerprint, handle: LinkHandle) -> bool {
        let mut s = self.lock();
        if let Some(existing) = s.links.get(&peer) {
            if !existing.closed.is_cancelled() && existing.dialer < handle.dialer {
                return false;
            }
            existing.closed.cancel();
        }
        s.links.insert(peer, handle);
        watch_of(&mut s, peer).send_replace(true);
        true
    }

    /// Forgets a link that ended (if it is still the registered one).
    fn detach(&self, peer: Fingerprint, id: u64) {
        let mut s = self.lock();
        if s.links.get(&peer).is_some_and(|l| l.id == id) {
            s.links.remove(&peer);
            watch_of(&mut s, peer).send_replace(false);
        }
    }

    fn is_up(&self, peer: &Fingerprint) -> bool {
        self.lock().links.contains_key(peer)
    }

    /// A receiver that sees when the link to `peer` goes up or down.
    fn watch(&self, peer: Fingerprint) -> watch::Receiver<bool> {
        watch_of(&mut self.lock(), peer).subscribe()
    }

    /// Sends a frame on every live link but `except`; a link whose outbox is
    /// full misses it (frames sent this way are refreshed periodically or
    /// re-sent at the next link-up).
    pub fn send_all_except(&self, except: Option<Fingerprint>, frame: &[u8]) {
        let outboxes: Vec<_> = {
            let s = self.lock();
            s.links
                .iter()
                .filter(|(fp, _)| Some(**fp) != except)
                .map(|(_, l)| l.outbox.clone())
                .collect()
        };
        for outbox in outboxes {
            let _ = outbox.try_send(frame.to_vec());
        }
    }

    /// Sends a frame on the live link to `peer`; false if there is none or
    /// its outbox is full.
    pub fn send_to(&self, peer: Fingerprint, frame: Vec<u8>) -> bool {
        let outbox = self.lock().links.get(&peer).map(|l| l.outbox.clone());
        outbox.is_some_and(|o| o.try_send(frame).is_ok())
    }

    /// The feed of `peer`'s outbound queue drainer.
    pub(super) fn feed(&self, peer: Fingerprint) -> Arc<Feed> {
        self.lock().feeds.entry(peer).or_default().clone()
    }

    /// Tells `peer`'s drainer that new messages are queued for it.
    pub fn wake(&self, peer: Fingerprint) {
        self.feed(peer).wake();
    }

    /// Records a presence report; returns whether it is newer than what we had.
    pub fn presence_in(&self, origin: Fingerprint, seq: u64, online: Vec<String>) -> bool {
        self.presence_at(origin, seq, online, Instant::now())
    }

    /// [`Neighbours::presence_in`] received at `now`. Reports gone stale are
    /// forgotten first: one no longer believed is of no use, and origins
    /// that stopped reporting (or never existed) must not pile up. A
    /// forgotten origin's next report is news whatever its `seq`.
    fn presence_at(
        &self,
        origin: Fingerprint,
        seq: u64,
        online: Vec<String>,
        now: Instant,
    ) -> bool {
        let mut s = self.lock();
        s.presence
            .retain(|_, p| now.saturating_duration_since(p.at) < PRESENCE_STALE_AFTER);
        if s.presence.get(&origin).is_some_and(|p| p.seq >= seq) {
            return false;
        }
        s.presence.insert(
            origin,
            Presence {
                seq,
                online: online.into_iter().collect(),
                at: now,
            },
        );
        true
    }

    /// Whether `phone`, homed at `home`, was reported online recently.
    pub fn is_online_at(&self, home: &Fingerprint, phone: &str) -> bool {
        let s = self.lock();
        s.presence
            .get(home)
            .is_some_and(|p| p.at.elapsed() < PRESENCE_STALE_AFTER && p.online.contains(phone))
    }

    /// Every presence report we hold (to bring a new neighbour up to date).
    pub fn presence_reports(&self) -> Vec<(Fingerprint, u64, Vec<String>)> {
        let s = self.lock();
        s.presence
            .iter()
            .filter(|(_, p)| p.at.elapsed() < PRESENCE_STALE_AFTER)
            .map(|(fp, p)| (*fp, p.seq, p.online.iter().cloned().collect()))
            .collect()
    }

    /// Whether broadcast id `id` was seen recently (records nothing).
    pub fn has_seen(&self, id: &MessageId) -> bool {
        self.lock().broadcasts.contains_key(id)
    }

    /// Records a broadcast id; returns false if it was seen recently.
    pub fn first_sight(&self, id: MessageId) -> bool {
        let mut s = self.lock();
        if s.broadcasts.len() >= MAX_BROADCAST_IDS {
            s.broadcasts.retain(|_, at| at.elapsed() < BROADCAST_MEMORY);
        }
        if s.broadcasts.len() >= MAX_BROADCAST_IDS {
            return false;
        }
        s.broadcasts.insert(id, Instant::now()).is_none()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A std mutex: nothing awaits while it is held.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn watch_of(s: &mut State, peer: Fingerprint) -> &watch::Sender<bool> {
    s.up.entry(peer).or_insert_with(|| watch::channel(false).0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_presence_reports_are_forgotten_when_a_report_comes() {
        let n = Neighbours::default();
        let (gone, live) = (Fingerprint::of_spki(b"gone"), Fingerprint::of_spki(b"live"));
        let start = Instant::now();
        assert!(n.presence_at(gone, 1, vec!["+12025550101".into()], start));
        let later = start + PRESENCE_STALE_AFTER + Duration::from_secs(1);
        assert!(n.presence_at(live, 1, vec![], later));
        let held: Vec<Fingerprint> = n.lock().presence.keys().copied().collect();
        assert_eq!(held, [live], "the stale report is still held");
        assert!(
            n.presence_at(gone, 1, vec![], later),
            "a forgotten origin's next report is news"
        );
    }
}
