//! Public messages: checked against their author's key when one of our
//! users sends one, then flooded to every server once and offered to every
//! live session. Nothing is stored.

use super::{RouteError, Router, link_frame};
use crate::crypto::PublicKey;
use crate::domain::{Fingerprint, PhoneNumber};
use crate::protocol::link::LinkMessage;
use crate::protocol::{self, Broadcast, signed};

impl Router {
    /// A broadcast from one of our logged-in users: checks its signature and
    /// floods it.
    pub fn broadcast_local(&self, from: &PhoneNumber, b: Broadcast) -> Result<(), RouteError> {
        if b.from != from.as_str() {
            return Err(RouteError::NotTheAuthor {
                session: from.clone(),
                claimed: b.from,
            });
        }
        if b.text.len() > protocol::MAX_TEXT_BYTES {
            return Err(RouteError::TooLarge(b.text.len()));
        }
        self.charge_sender(from, b.text.len())?;
        let entry = self
            .directory
            .get(from)
            .ok_or_else(|| RouteError::UnknownRecipient(from.clone()))?;
        let key = PublicKey::from_spki_der_typed(entry.info.key_type, &entry.info.public_key.0)
            .map_err(RouteError::UnusableKey)?;
        let bytes = signed::broadcast_bytes(&b.id, b.sent_at, &b.from, &b.text);
        key.verify(&bytes, &b.signature.0)
            .map_err(|_| RouteError::BadBroadcastSignature)?;
        self.broadcast_in(None, b);
        Ok(())
    }

    /// Delivers a broadcast to our live sessions and floods it onward, once.
    pub fn broadcast_in(&self, from: Option<Fingerprint>, b: Broadcast) {
        self.spread_broadcast(from, b, true);
    }

    /// [`Router::broadcast_in`]; `tell_members` unless another member of
    /// the cluster passed it here (it has told the others itself).
    pub(super) fn spread_broadcast(
        &self,
        from: Option<Fingerprint>,
        b: Broadcast,
        tell_members: bool,
    ) {
        if b.text.len() > protocol::MAX_TEXT_BYTES || !self.neighbours.first_sight(b.id) {
            return;
        }
        self.neighbours
            .send_all_except(from, &link_frame(&LinkMessage::Broadcast(b.clone())));
        if tell_members {
            self.tell_members_broadcast(&b);
        }
        self.registry.broadcast(b);
    }
}
