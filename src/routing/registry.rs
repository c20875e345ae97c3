//! The sessions connected now, by user, so a committed message can be pushed
//! at once. A std mutex: nothing awaits while it is held.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::db::queue::NewMessage;
use crate::domain::{MessageId, PhoneNumber};
use crate::protocol::{B64, Broadcast, Delivered, Response, ResponseFrame};

/// How a live, logged-in session is reached: its user, its outgoing frame
/// queue, and the ids of the messages it has been given (by fetch or push),
/// the only ones its `ack` may delete.
#[derive(Clone)]
pub struct SessionLink {
    id: u64,
    phone: PhoneNumber,
    outbox: mpsc::Sender<Vec<u8>>,
    given: Arc<Mutex<HashSet<MessageId>>>,
}

impl SessionLink {
    /// The user this session is logged in as.
    pub fn phone(&self) -> &PhoneNumber {
        &self.phone
    }

    /// Records messages handed to the session.
    pub(super) fn give(&self, ids: impl IntoIterator<Item = MessageId>) {
        self.lock_given().extend(ids);
    }

    /// Takes, out of `ids`, those the session was given.
    pub(super) fn take_given(&self, ids: &[MessageId]) -> Vec<MessageId> {
        let mut given = self.lock_given();
        ids.iter().filter(|id| given.remove(id)).copied().collect()
    }

    fn lock_given(&self) -> std::sync::MutexGuard<'_, HashSet<MessageId>> {
        self.given.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Connected sessions by user.
#[derive(Default)]
pub struct Registry {
    sessions: Mutex<HashMap<PhoneNumber, Vec<SessionLink>>>,
    next_id: AtomicU64,
}

impl Registry {
    /// Adds a logged-in session; keep the link to remove it later.
    pub fn join(&self, phone: PhoneNumber, outbox: mpsc::Sender<Vec<u8>>) -> SessionLink {
        let link = SessionLink {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            phone,
            outbox,
            given: Arc::default(),
        };
        self.lock()
            .entry(link.phone.clone())
            .or_default()
            .push(link.clone());
        link
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

    pub fn is_connected(&self, phone: &PhoneNumber) -> bool {
        self.lock().contains_key(phone)
    }

    /// Offers a message to every live session of its recipient. A session
    /// whose outbox is full misses the push and gets the message from its
    /// next fetch: it stays queued until acknowledged.
    pub fn push(&self, recipient: &PhoneNumber, message: &NewMessage) {
        let links = match self.lock().get(recipient) {
            Some(list) => list.clone(),
            None => return,
        };
        let id = message.id;
        let frame = ResponseFrame {
            re: None,
            response: Response::Message(Delivered {
                id,
                from: message.sender.to_string(),
                envelope: B64(message.envelope.clone()),
                received_at: message.received_at,
            }),
        };
        let bytes = serde_json::to_vec(&frame).expect("a response always serialises");
        for link in links {
            let mut given = link.lock_given();
            if link.outbox.try_send(bytes.clone()).is_ok() {
                given.insert(id);
            } else {
                tracing::debug!(
                    session = link.id,
                    "outbox full; the message waits for a fetch"
                );
            }
        }
    }

    /// Offers a public message to every live session but its author's.
    pub fn broadcast(&self, b: Broadcast) {
        let author = b.from.clone();
        let frame = ResponseFrame {
            re: None,
            response: Response::Broadcast(b),
        };
        let bytes = serde_json::to_vec(&frame).expect("a response always serialises");
        let links: Vec<SessionLink> = self
            .lock()
            .iter()
            .filter(|(phone, _)| phone.as_str() != author)
            .flat_map(|(_, l)| l.clone())
            .collect();
        for link in links {
            let _ = link.outbox.try_send(bytes.clone());
        }
    }

    /// The users with a live session now, sorted.
    pub fn online(&self) -> Vec<String> {
        let mut online: Vec<String> = self.lock().keys().map(|p| p.to_string()).collect();
        online.sort();
        online
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PhoneNumber, Vec<SessionLink>>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }
}
