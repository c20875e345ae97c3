//! The sessions connected now, by user, so a committed message can be pushed
//! at once. A std mutex: nothing awaits while it is held.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::db::queue::NewMessage;
use crate::domain::MessageId;
use crate::protocol::{B64, Broadcast, Delivered, Response, ResponseFrame};

/// Ids of the messages a session has been given (by fetch or push); an ack
/// deletes only these.
pub type Given = Arc<Mutex<HashSet<MessageId>>>;

/// How a live session is reached: its outgoing frame queue.
#[derive(Clone)]
pub struct SessionLink {
    id: u64,
    outbox: mpsc::Sender<Vec<u8>>,
    given: Given,
}

impl SessionLink {
    pub fn given(&self) -> &Given {
        &self.given
    }
}

/// Connected sessions by user.
#[derive(Default)]
pub struct Registry {
    sessions: Mutex<HashMap<String, Vec<SessionLink>>>,
    next_id: AtomicU64,
}

impl Registry {
    /// Adds a logged-in session; keep the link to remove it later.
    pub fn join(&self, phone: &str, outbox: mpsc::Sender<Vec<u8>>) -> SessionLink {
        let link = SessionLink {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            outbox,
            given: Arc::default(),
        };
        self.lock()
            .entry(phone.to_owned())
            .or_default()
            .push(link.clone());
        link
    }

    pub fn leave(&self, phone: &str, link: &SessionLink) {
        let mut sessions = self.lock();
        if let Some(list) = sessions.get_mut(phone) {
            list.retain(|l| l.id != link.id);
            if list.is_empty() {
                sessions.remove(phone);
            }
        }
    }

    pub fn is_connected(&self, phone: &str) -> bool {
        self.lock().contains_key(phone)
    }

    /// Offers a committed message to every live session of its recipient.
    /// A session whose outbox is full misses the push and gets the message
    /// from its next fetch: it stays queued until acknowledged.
    pub fn push(&self, message: &NewMessage) {
        let links = match self.lock().get(message.recipient.as_str()) {
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
            let mut given = link.given.lock().unwrap_or_else(|p| p.into_inner());
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
            .filter(|(phone, _)| **phone != author)
            .flat_map(|(_, l)| l.clone())
            .collect();
        for link in links {
            let _ = link.outbox.try_send(bytes.clone());
        }
    }

    /// The users with a live session now, sorted.
    pub fn online(&self) -> Vec<String> {
        let mut online: Vec<String> = self.lock().keys().cloned().collect();
        online.sort();
        online
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<SessionLink>>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }
}
