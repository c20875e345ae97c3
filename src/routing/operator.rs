//! What the operator's admin commands ask of a running router: how many
//! sessions and links are up, and removing a user from memory once the
//! store has removed them.

use super::{Limits, Router};
use crate::db::DbError;
use crate::domain::{Fingerprint, PhoneNumber};

impl Router {
    /// Live client sessions.
    pub fn session_count(&self) -> usize {
        self.registry.count()
    }

    /// Messages waiting for neighbour `peer`.
    pub async fn outbound_waiting(&self, peer: &Fingerprint) -> Result<i64, DbError> {
        let hex = peer.to_hex();
        let depths = self.store.outbound_depths().await?;
        Ok(depths
            .iter()
            .find(|d| d.owner == hex)
            .map_or(0, |d| d.messages))
    }

    /// Applies reloaded limits at once: sessions per user, unsent bytes and
    /// the send rates (a sender keeps the tokens it holds, up to the new burst).
    pub fn apply_limits(&self, new: Limits) {
        *self.limits.write().unwrap_or_else(|p| p.into_inner()) = new;
        self.registry.set_limits(&new);
        self.senders.set_rates([new.send_messages, new.send_bytes]);
        self.claimers.set_rates([new.claim_devices]);
        self.neighbour_claims.set_limits(&new);
    }

    /// Live sessions of `phone`.
    pub fn sessions_of(&self, phone: &PhoneNumber) -> usize {
        self.registry.sessions_of(phone)
    }

    /// Whether an operator has disabled `phone` (who then cannot log in).
    pub async fn is_disabled(&self, phone: &PhoneNumber) -> Result<bool, DbError> {
        self.store.is_disabled(phone).await
    }

    /// Ends `phone`'s sessions and forgets their entry, if this server is
    /// their home (the store has already deleted or disabled them). Returns
    /// the number of sessions closed.
    pub fn remove_local_user(&self, phone: &PhoneNumber, forget_entry: bool) -> usize {
        if forget_entry {
            let mut users = self
                .directory
                .users
                .write()
                .unwrap_or_else(|p| p.into_inner());
            if users.get(phone).is_some_and(|e| e.via.is_none()) {
                users.remove(phone);
            }
        }
        self.registry.close_user(phone)
    }
}
