//! Which member of a cluster runs a neighbour's link: the one holding the
//! neighbour's lock in the database (see [`crate::db::lock`]). Within one
//! member, the dialer and an incoming link from the same neighbour share
//! the lock, so the usual choice between two links still happens; a link
//! ends as soon as its lock is lost.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use tokio_util::sync::{CancellationToken, DropGuard};

use crate::domain::Fingerprint;
use crate::routing::Router;

/// A neighbour's lock, held while any link task of this member keeps it.
pub struct Held {
    /// Cancelled when the lock is lost.
    pub lost: CancellationToken,
    /// Lets the lock go when the last holder is dropped.
    _release: DropGuard,
}

/// The neighbour locks this member holds.
#[derive(Default)]
pub struct Holds {
    held: Mutex<HashMap<Fingerprint, Weak<Held>>>,
    /// Serialises taking locks, so two tasks never both ask the database.
    taking: tokio::sync::Mutex<()>,
}

impl Holds {
    /// The lock of `peer`'s link, if no other member holds it.
    pub async fn take(&self, router: &Router, peer: Fingerprint) -> Option<Arc<Held>> {
        let _one_at_a_time = self.taking.lock().await;
        if let Some(held) = self.lock().get(&peer).and_then(Weak::upgrade) {
            return Some(held);
        }
        let mut lock = match router.try_lock(&format!("link:{}", peer.to_hex())).await {
            Ok(Some(lock)) => lock,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(error = %e, "cannot ask the database who runs a neighbour's link");
                return None;
            }
        };
        let (lost, release) = (CancellationToken::new(), CancellationToken::new());
        let held = Arc::new(Held {
            lost: lost.clone(),
            _release: release.clone().drop_guard(),
        });
        tokio::spawn(async move {
            tokio::select! {
                _ = lock.lost() => {
                    tracing::warn!("lost the database lock of a neighbour's link; ending the link");
                    lost.cancel();
                }
                _ = release.cancelled() => {}
            }
        });
        self.lock().insert(peer, Arc::downgrade(&held));
        Some(held)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Fingerprint, Weak<Held>>> {
        // A std mutex: nothing awaits while it is held.
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}
