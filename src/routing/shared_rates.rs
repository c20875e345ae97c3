//! Send rates across the members of a cluster. Each member keeps its own
//! token buckets per sender (a check per send must not wait for the
//! database); what a sender spends through one member is told to the
//! others every [`SHARE_EVERY`], and they take it from their buckets too.
//! A user sending through several members at once is therefore held to
//! about one user's rate: at most what the other members let through
//! since their last report (and each member's burst) gets past.

use std::collections::HashMap;
use std::sync::{Mutex, Weak};
use std::time::Duration;

use super::Router;
use crate::db::cluster::{Event, MAX_PAYLOAD};
use crate::domain::PhoneNumber;

/// How often a member tells the others what its senders spent.
const SHARE_EVERY: Duration = Duration::from_millis(250);
/// Senders per notification, well inside [`MAX_PAYLOAD`] (a phone of at
/// most 16 characters and two counts of at most 20 digits each).
const PER_EVENT: usize = MAX_PAYLOAD / 64;

/// What this member's senders spent since the last report: messages and
/// bytes per sender.
#[derive(Default)]
pub(super) struct Spent {
    tally: Mutex<HashMap<PhoneNumber, [u64; 2]>>,
}

impl Spent {
    pub(super) fn add(&self, sender: &PhoneNumber, cost: [u64; 2]) {
        let mut tally = self.tally.lock().unwrap_or_else(|p| p.into_inner());
        let spent = tally.entry(sender.clone()).or_default();
        spent[0] += cost[0];
        spent[1] += cost[1];
    }

    fn take(&self) -> Vec<(PhoneNumber, u64, u64)> {
        let mut tally = self.tally.lock().unwrap_or_else(|p| p.into_inner());
        tally.drain().map(|(p, [m, b])| (p, m, b)).collect()
    }
}

impl Router {
    /// What other members' senders spent: taken from the buckets here
    /// (emptying them at most).
    pub(super) fn spent_elsewhere(&self, spent: &[(PhoneNumber, u64, u64)]) {
        for (sender, messages, bytes) in spent {
            self.senders.spend(sender, [*messages, *bytes]);
        }
    }
}

/// Tells the other members what senders spent here, while the router lives.
pub(super) async fn share(router: Weak<Router>) {
    let mut tick = tokio::time::interval(SHARE_EVERY);
    loop {
        tick.tick().await;
        let Some(router) = router.upgrade() else {
            return;
        };
        let spent = router.spent.take();
        for chunk in spent.chunks(PER_EVENT) {
            if let Err(e) = router.store.notify(&Event::Spent(chunk.to_vec())).await {
                tracing::debug!(error = %e, "could not tell the other members what senders spent");
            }
        }
    }
}
