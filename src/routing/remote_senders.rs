//! Relayed messages whose sending device the home server does not know
//! yet, and the check that a relay comes from its sender's home, made once
//! the sender is known (`relay::check_sent_from_home`). A device list travels by the directory flood and a message by its
//! route, so a message from a device just added can reach the recipient's
//! home before the list that names the device. Delivering it then would
//! hand the recipient an envelope nobody here can vouch for (and the
//! recipient's client could only keep it back and ask again later).
//!
//! Instead the home waits, for at most [`WAIT_FOR_LIST`], with the
//! message unacknowledged (the neighbour still holds it, so nothing is
//! lost if this server stops meanwhile), until the sender's list names the
//! device; then it commits the message as usual. A device the held list
//! leaves out while naming a later one is a removed device, refused at
//! once; a list that does not come in time is refused too. Either refusal
//! goes back to the server the message was sent from, which tells the
//! sending device (`remote_refusals`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use tokio::sync::{Notify, oneshot};

use super::{PendingSend, RouteError, Router};
use crate::db::queue::NewMessage;
use crate::domain::{Fingerprint, PhoneNumber};

/// How long a relayed message waits for its sender's device list.
pub const WAIT_FOR_LIST: Duration = Duration::from_secs(10);
/// How often a waiting message looks for its list when the store is
/// shared with other members of a cluster.
const RECHECK_IN_CLUSTER: Duration = Duration::from_secs(1);
/// Most relayed messages waiting at once, over all neighbours; past it
/// (or past [`MAX_WAITING_PER_NEIGHBOUR`]) one more is left
/// unacknowledged, so its neighbour keeps it and sends it again later.
const MAX_WAITING: usize = 256;
/// Most relayed messages from one neighbour waiting at once: one
/// neighbour cannot take the slots every other neighbour's copies need.
const MAX_WAITING_PER_NEIGHBOUR: usize = 32;

/// What the home server knows of a relayed message's sending device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sender {
    /// Listed by the sender's current list.
    Known,
    /// Not listed, while a device with a higher id is: removed.
    Removed,
    /// No list for the sender yet, or the device's id is above every
    /// listed one: a newer list may be on its way.
    NotYet,
}

/// Messages waiting for a list, and the signal that one arrived.
#[derive(Default)]
pub(super) struct WaitingSenders {
    router: OnceLock<Weak<Router>>,
    arrived: Arc<Notify>,
    waiting: Arc<Mutex<Counts>>,
}

/// Messages waiting, in all and per neighbour they came from.
#[derive(Default)]
struct Counts {
    all: usize,
    per_neighbour: HashMap<Fingerprint, usize>,
}

impl WaitingSenders {
    /// Lets waiting messages reach the router they belong to.
    pub(super) fn bind(&self, router: &Arc<Router>) {
        let _ = self.router.set(Arc::downgrade(router));
    }

    /// A device list of a remote user arrived or changed.
    pub(super) fn list_arrived(&self) {
        self.arrived.notify_waiters();
    }
}

/// A waiting slot taken for a message from a neighbour; given back when
/// the wait ends, however it ends.
struct Slot(Arc<Mutex<Counts>>, Fingerprint);

impl Slot {
    /// Takes a slot for neighbour `from`, unless it or everyone is at
    /// the cap.
    fn take(counts: &Arc<Mutex<Counts>>, from: Fingerprint) -> Option<Slot> {
        let mut c = counts.lock().unwrap_or_else(|p| p.into_inner());
        let mine = c.per_neighbour.get(&from).copied().unwrap_or(0);
        if c.all >= MAX_WAITING || mine >= MAX_WAITING_PER_NEIGHBOUR {
            return None;
        }
        c.all += 1;
        c.per_neighbour.insert(from, mine + 1);
        Some(Slot(counts.clone(), from))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.0.lock().unwrap_or_else(|p| p.into_inner());
        c.all = c.all.saturating_sub(1);
        if let Some(n) = c.per_neighbour.get_mut(&self.1) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.per_neighbour.remove(&self.1);
            }
        }
    }
}

impl Router {
    /// Routes a relayed v2 message for a local user once its sending
    /// device is known here and the message is shown to come from the
    /// sender's home: at once if it is, after its list arrives if that is
    /// still to come, or refused.
    pub(super) async fn route_from_known_device(
        &self,
        from: Fingerprint,
        message: NewMessage,
        path: Vec<String>,
    ) -> Result<PendingSend, RouteError> {
        let (sender, device) = (message.sender.clone(), message.sender_device);
        match self.sender_device(&sender, device).await {
            Sender::Known => {
                self.check_sent_from_home(&sender, &path).await?;
                return self
                    .route(message.recipient.clone(), message, path, true)
                    .await;
            }
            Sender::Removed => return Err(removed(sender, device)),
            Sender::NotYet => {}
        }
        let waiting = &self.waiting_senders;
        let router = waiting.router.get().cloned().unwrap_or_default();
        let Some(slot) = Slot::take(&waiting.waiting, from) else {
            tracing::info!(%sender, device, id = %message.id,
                "too many relayed messages wait for lists; the neighbour will send this again");
            return Err(RouteError::TryLater);
        };
        tracing::info!(%sender, device, id = %message.id,
            "a relayed message comes from a device not listed here yet; waiting for its list");
        let (tx, rx) = oneshot::channel();
        let recipient = message.recipient.clone();
        tokio::spawn(async move {
            let outcome = wait_then_route(router, message, path).await;
            drop(slot);
            let _ = tx.send(outcome);
        });
        Ok(PendingSend::later(recipient, rx))
    }

    /// Whether `device` of `sender` is in the list this server holds for
    /// them (their own list if they are our user).
    async fn sender_device(&self, sender: &PhoneNumber, device: u32) -> Sender {
        let ids: Vec<u32> = match self.user(sender).await {
            None => return Sender::NotYet,
            Some(entry) if entry.via.is_none() => {
                let Some(list) = self.device_list(sender) else {
                    return Sender::Removed;
                };
                if list.key_of(device).is_some() {
                    return Sender::Known;
                }
                return Sender::Removed;
            }
            Some(_) => match self.fresh_remote_devices(sender).await {
                None => return Sender::NotYet,
                Some(held) if held.key_of(device).is_some() => return Sender::Known,
                Some(held) => held.device_ids(),
            },
        };
        if ids.iter().all(|&id| id < device) {
            Sender::NotYet
        } else {
            Sender::Removed
        }
    }
}

fn removed(phone: PhoneNumber, device: u32) -> RouteError {
    RouteError::UnknownSenderDevice {
        phone,
        device,
        why: "their device list leaves it out (a removed device)",
    }
}

/// Waits until the sender's device is known (then routes the message),
/// removed, or [`WAIT_FOR_LIST`] has passed.
async fn wait_then_route(
    router: Weak<Router>,
    message: NewMessage,
    path: Vec<String>,
) -> Result<PendingSend, RouteError> {
    let gone = || RouteError::Interrupted("waiting for a device list");
    let (sender, device) = (message.sender.clone(), message.sender_device);
    let deadline = tokio::time::Instant::now() + WAIT_FOR_LIST;
    let signal = router
        .upgrade()
        .ok_or_else(gone)?
        .waiting_senders
        .arrived
        .clone();
    loop {
        let arrived = signal.notified();
        tokio::pin!(arrived);
        arrived.as_mut().enable();
        let r = router.upgrade().ok_or_else(gone)?;
        match r.sender_device(&sender, device).await {
            Sender::Known => {
                // The sender's entry came before their list: only now can
                // the relay be checked against their home.
                r.check_sent_from_home(&sender, &path).await?;
                tracing::info!(%sender, device, id = %message.id,
                    "the sender's device list arrived; delivering the message that waited");
                return r
                    .route(message.recipient.clone(), message, path, true)
                    .await;
            }
            Sender::Removed => return Err(removed(sender, device)),
            Sender::NotYet => {}
        }
        // In a cluster another member may take the list in: look again
        // now and then, not only when this member is told.
        let until = match r.store.is_shared() {
            true => deadline.min(tokio::time::Instant::now() + RECHECK_IN_CLUSTER),
            false => deadline,
        };
        drop(r);
        let timed_out = tokio::time::timeout_at(until, arrived).await.is_err();
        if timed_out && tokio::time::Instant::now() >= deadline {
            return Err(RouteError::UnknownSenderDevice {
                phone: sender,
                device,
                why: "their device list did not reach this server within 10 s",
            });
        }
    }
}
