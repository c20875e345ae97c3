//! The other members of a cluster, as routing sees them: what they tell
//! this one through the database (see [`crate::db::cluster`]) and what
//! this one tells them. A message stored by another member for a user
//! connected here is pushed (carried in the notification, or read back
//! when it was too large to carry); a neighbour whose outbound queue
//! grew has its drainer woken if its link is here; directory changes,
//! presence, broadcasts and neighbours' presence reports are taken over and
//! passed on to the links this member holds.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, Weak};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::Router;
use super::directory::Entry;
use super::neighbours::PRESENCE_STALE_AFTER;
use crate::db::DbError;
use crate::db::cluster::{Event, RelayKind};
use crate::db::lock::Lock;
use crate::db::queue::NewMessage;
use crate::domain::{MessageId, PhoneNumber};
use crate::protocol::{B64, Broadcast, Delivered};

/// Users connected to the other members and how many sessions each has
/// there, as their last heartbeats said (a member lists a user once per
/// session).
#[derive(Default)]
pub(super) struct Elsewhere {
    online: RwLock<HashMap<String, usize>>,
}

impl Elsewhere {
    pub(super) fn contains(&self, phone: &str) -> bool {
        self.read().contains_key(phone)
    }

    pub(super) fn all(&self) -> Vec<String> {
        self.read().keys().cloned().collect()
    }

    /// Sessions `phone` has on the other members.
    pub(super) fn sessions_of(&self, phone: &str) -> usize {
        self.read().get(phone).copied().unwrap_or(0)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, usize>> {
        // A std lock: nothing awaits while it is held.
        self.online.read().unwrap_or_else(|p| p.into_inner())
    }
}

/// A neighbour's presence report, passed from the member holding its link.
#[derive(Serialize, Deserialize)]
struct NeighbourPresence {
    origin: String,
    seq: u64,
    online: Vec<String>,
}

/// Handles the other members' events, in order, while the router lives.
pub(super) async fn follow(router: Weak<Router>, mut events: mpsc::Receiver<Event>) {
    while let Some(event) = events.recv().await {
        let Some(router) = router.upgrade() else {
            return;
        };
        if let Err(e) = router.member_event(event).await {
            tracing::warn!(error = %e, "could not take over another member's change");
        }
    }
}

impl Router {
    async fn member_event(&self, event: Event) -> Result<(), DbError> {
        match event {
            Event::Queued {
                recipient,
                device,
                id,
            } => self.push_stored(&recipient, device, id).await?,
            Event::Carried(message) => self.push_carried(&message),
            Event::Outbound(neighbour) => self.neighbours.wake(neighbour),
            Event::Directory(phone) => self.reload_entry(&phone).await?,
            Event::Devices(phone) => {
                if let Err(e) = self.reload_devices(&phone).await {
                    tracing::warn!(%phone, error = %e, "could not read a device list again");
                }
            }
            Event::Presence => self.refresh_elsewhere().await?,
            Event::Relay(RelayKind::Broadcast, body) => {
                if let Ok(b) = serde_json::from_str::<Broadcast>(&body) {
                    self.spread_broadcast(None, b, false);
                }
            }
            Event::Relay(RelayKind::NeighbourPresence, body) => {
                if let Ok(p) = serde_json::from_str::<NeighbourPresence>(&body) {
                    self.take_presence(None, p.origin, p.seq, p.online, false);
                }
            }
            Event::Spent(spent) => self.spent_elsewhere(&spent),
            Event::LinkRequested(id) => self.link_requested_elsewhere(&id).await?,
            Event::LinkAnswered(id) => self.link_answered_elsewhere(&id).await?,
            Event::Resync => {
                self.reload_directory().await?;
                self.refresh_elsewhere().await?;
            }
        }
        Ok(())
    }

    /// Pushes a message another member stored, carried in its
    /// notification, to the sessions here of its recipient's device, if
    /// there are any. The notification arrives once, after the commit, so
    /// the message is stored and pushed here once, as a read-back would.
    fn push_carried(&self, message: &NewMessage) {
        if self
            .registry
            .is_connected_as(&message.recipient, message.device)
        {
            let delivered = super::registry::delivered(message);
            self.registry
                .push_delivered(&message.recipient, message.device, delivered);
        }
    }

    /// Pushes a message another member stored to the sessions here of its
    /// recipient's device, if there are any (and it was not acknowledged
    /// already). Other senders' messages under the same id are pushed too
    /// (again, if they were before): clients drop repeats by sender and id.
    async fn push_stored(
        &self,
        recipient: &PhoneNumber,
        device: u32,
        id: MessageId,
    ) -> Result<(), DbError> {
        if !self.registry.is_connected_as(recipient, device) {
            return Ok(());
        }
        for m in self.store.queued(recipient, device, id).await? {
            let delivered = Delivered {
                id: m.id,
                from: m.sender,
                envelope: B64(m.envelope),
                received_at: m.received_at,
                device: u32::try_from(m.sender_device).ok().filter(|d| *d != 0),
            };
            self.registry.push_delivered(recipient, device, delivered);
        }
        Ok(())
    }

    /// A user of the neighbourhood, with the way to their home. In a
    /// cluster, an entry another member wrote a moment ago may not have
    /// reached this member's copy yet: a miss is read from the database.
    pub async fn user(&self, phone: &PhoneNumber) -> Option<Arc<Entry>> {
        if let Some(entry) = self.directory.get(phone) {
            return Some(entry);
        }
        if !self.store.is_shared() {
            return None;
        }
        match self.read_entry(phone).await {
            Ok(entry) => entry,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read a directory entry");
                None
            }
        }
    }

    /// Reads one directory entry from the database into this member's copy.
    async fn read_entry(&self, phone: &PhoneNumber) -> Result<Option<Arc<Entry>>, DbError> {
        let Some(row) = self.store.directory_entry(phone.as_str()).await? else {
            return Ok(None);
        };
        let entry = Arc::new(super::directory::from_row(row)?);
        self.directory
            .users
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(phone.clone(), entry.clone());
        Ok(Some(entry))
    }

    /// Reads one directory entry another member changed, closes the
    /// sessions here of a key it replaced, and floods it to the links held
    /// here; an entry gone from the table was withdrawn.
    async fn reload_entry(&self, phone: &PhoneNumber) -> Result<(), DbError> {
        match self.read_entry(phone).await? {
            Some(entry) => {
                self.close_replaced(phone);
                self.flood_directory(None, vec![entry.to_wire()]);
            }
            None => self.member_withdrew(phone).await?,
        }
        Ok(())
    }

    /// Reads the whole directory again, entries and withdrawals, after
    /// notifications may have been missed, and does for the users with
    /// sessions here what those notifications would have: closes the
    /// sessions under a key replaced meanwhile (or of a user now at home
    /// elsewhere), and reads their device lists again, closing the
    /// sessions of devices removed meanwhile.
    async fn reload_directory(&self) -> Result<(), DbError> {
        let fresh = super::directory::Directory::load(&self.store).await?;
        self.directory.take_over(fresh);
        for phone in self.registry.users() {
            // The whole directory was read while requests went on: a key
            // registered here meanwhile is newer than what was read. The
            // entry is read again before any session is judged by it.
            if let Err(e) = self.read_entry(&phone).await {
                tracing::warn!(%phone, error = %e, "could not read a directory entry again");
                continue;
            }
            self.close_replaced(&phone);
            if let Err(e) = self.close_unlisted(&phone).await {
                tracing::warn!(%phone, error = %e, "could not read a device list again");
            }
        }
        Ok(())
    }

    /// Reads who is connected to the other members (those heard from
    /// lately).
    pub(super) async fn refresh_elsewhere(&self) -> Result<(), DbError> {
        let since = self.clock.now_ms() - PRESENCE_STALE_AFTER.as_millis() as i64;
        let mut online: HashMap<String, usize> = HashMap::new();
        for phone in self.store.online_elsewhere(since).await? {
            *online.entry(phone).or_default() += 1;
        }
        self.store
            .set_online_elsewhere(online.keys().cloned().collect());
        *self
            .elsewhere
            .online
            .write()
            .unwrap_or_else(|p| p.into_inner()) = online;
        Ok(())
    }

    /// Takes the cluster-wide lock `name`, for work one member does at a
    /// time.
    pub async fn try_lock(&self, name: &str) -> Result<Option<Lock>, DbError> {
        self.store.try_lock(name).await
    }

    /// Tells the other members of `event` without waiting for it.
    pub(super) fn tell_members(&self, event: Event) {
        if !self.store.is_shared() {
            return;
        }
        let store = self.store.clone();
        tokio::spawn(async move {
            if let Err(e) = store.notify(&event).await {
                tracing::warn!(error = %e, "could not tell the other members of a change");
            }
        });
    }

    /// Passes a broadcast on to the other members.
    pub(super) fn tell_members_broadcast(&self, b: &Broadcast) {
        let body = serde_json::to_string(b).expect("a broadcast serialises");
        self.tell_members(Event::Relay(RelayKind::Broadcast, body));
    }

    /// Passes a neighbour's presence report on to the other members.
    pub(super) fn tell_members_presence(&self, origin: &str, seq: u64, online: &[String]) {
        let report = NeighbourPresence {
            origin: origin.to_owned(),
            seq,
            online: online.to_vec(),
        };
        let body = serde_json::to_string(&report).expect("a report serialises");
        self.tell_members(Event::Relay(RelayKind::NeighbourPresence, body));
    }
}
