//! Public messages: checked against their author's key as the directory
//! holds it, whether one of our users sends one or a neighbour passes one
//! on, then flooded to every server once and offered to every live
//! session. Nothing is stored.

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
            return Err(RouteError::TextTooLarge(b.text.len()));
        }
        self.charge_sender(from, b.text.len())?;
        self.check_broadcast(from, &b)?;
        self.spread_broadcast(None, b, true);
        Ok(())
    }

    /// A broadcast from neighbour `from`: delivered to our live sessions and
    /// flooded onward, once, if its author is in the directory and signed
    /// it with the key held there. Otherwise it is dropped: relaying servers
    /// check it so that a neighbour cannot make the whole neighbourhood
    /// carry and push text nobody wrote. The author's entry travels ahead
    /// of their broadcasts on every link, so a genuine one is not refused
    /// for want of it. Its id is recorded only once it is checked, so a
    /// tampered copy sent first does not have the genuine one dropped as
    /// seen.
    pub fn broadcast_in(&self, from: Fingerprint, b: Broadcast) {
        if b.text.len() > protocol::MAX_TEXT_BYTES || self.neighbours.has_seen(&b.id) {
            return;
        }
        // Debug only: a neighbour decides how many of these it sends.
        let Ok(author) = PhoneNumber::from_canonical(&b.from) else {
            return tracing::debug!(neighbour = %from, id = %b.id, "dropped a broadcast from a neighbour: its author is not a phone number");
        };
        if let Err(e) = self.check_broadcast(&author, &b) {
            return tracing::debug!(neighbour = %from, id = %b.id, %author, error = %e, "dropped a broadcast from a neighbour that does not verify");
        }
        self.spread_broadcast(Some(from), b, true);
    }

    /// Whether `b` is signed by `author` under the key the directory holds
    /// for them.
    fn check_broadcast(&self, author: &PhoneNumber, b: &Broadcast) -> Result<(), RouteError> {
        let entry = self
            .directory
            .get(author)
            .ok_or_else(|| RouteError::UnknownRecipient(author.clone()))?;
        let key = PublicKey::from_spki_der_typed(entry.info.key_type, &entry.info.public_key.0)
            .map_err(RouteError::UnusableKey)?;
        let bytes = signed::broadcast_bytes(&b.id, b.sent_at, &b.from, &b.text);
        key.verify(&bytes, &b.signature.0)
            .map_err(|_| RouteError::BadBroadcastSignature)
    }

    /// Delivers a checked broadcast to our live sessions and floods it
    /// onward, once; `tell_members` unless another member of the cluster
    /// passed it here. Such a broadcast is not checked again: the member
    /// checked it (as this one would) before passing it on, and has told
    /// the others itself.
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
