//! Messages between servers: what a neighbour relays to us (checked, then
//! routed like a local send), the outbound queue each link drains, and the
//! wake-up of a link once a message for it is committed.

use std::sync::Weak;

use tokio::sync::mpsc;

use super::deliver::check_header;
use super::{PendingSend, RouteError, Router};
use crate::db::DbError;
use crate::db::enqueue::Destination;
use crate::db::outbound::OutboundRow;
use crate::db::queue::{NewMessage, QueueRef};
use crate::db::writer::Committed;
use crate::domain::{Fingerprint, MessageId, PhoneNumber};
use crate::protocol;
use crate::protocol::link::{self, Relayed};

impl Router {
    /// Takes a message relayed by neighbour `from`.
    pub async fn relay_in(&self, from: Fingerprint, r: Relayed) -> Result<PendingSend, RouteError> {
        let me = self.me.fingerprint.to_hex();
        if r.path.len() >= link::MAX_HOPS || r.path.contains(&me) {
            return Err(RouteError::TooManyHops {
                id: r.id,
                hops: r.path.len(),
            });
        }
        // The path is stored and sent on: every element must be a
        // fingerprint, the last one the neighbour that relayed it.
        let well_formed = r
            .path
            .iter()
            .all(|p| p.len() == 64 && Fingerprint::parse(p).is_some());
        if !well_formed || r.path.last() != Some(&from.to_hex()) {
            return Err(RouteError::MalformedPath(r.id));
        }
        if r.envelope.0.len() > protocol::MAX_ENVELOPE_BYTES {
            return Err(RouteError::TooLarge(r.envelope.0.len()));
        }
        let sender = PhoneNumber::from_canonical(&r.from)
            .map_err(|_| RouteError::BadRelayedPhone("sender"))?;
        let recipient = PhoneNumber::from_canonical(&r.to)
            .map_err(|_| RouteError::BadRelayedPhone("recipient"))?;
        check_header(&r.envelope.0, &sender, &recipient, r.id)?;
        let mut path = r.path;
        path.push(me);
        let message = NewMessage {
            id: r.id,
            recipient: recipient.clone(),
            device: 0,
            sender,
            sender_device: 0,
            envelope: r.envelope.0,
            received_at: r.received_at,
            expires_at: r.expires_at.min(self.clock.now_ms() + self.message_ttl_ms),
        };
        let pending = self.route(recipient, message, path, true).await?;
        crate::metrics::get().relayed_in.inc();
        Ok(pending)
    }

    /// The next messages waiting for neighbour `peer`, after `after_seq`.
    pub async fn outbound_next(
        &self,
        peer: &Fingerprint,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<OutboundRow>, DbError> {
        self.store
            .outbound_next(peer, after_seq, self.clock.now_ms(), limit)
            .await
    }

    /// Deletes messages neighbour `peer` has committed.
    pub async fn outbound_acked(
        &self,
        peer: &Fingerprint,
        ids: &[MessageId],
    ) -> Result<u64, DbError> {
        let deleted = self
            .store
            .delete(QueueRef::Neighbour(*peer), ids.to_vec())
            .await?;
        crate::metrics::get().relayed_out.inc_by(deleted);
        Ok(deleted)
    }
}

/// Wakes the link that carries each committed outbound message.
pub(super) async fn wake_links(
    mut committed: mpsc::UnboundedReceiver<Committed>,
    router: Weak<Router>,
) {
    while let Some(c) = committed.recv().await {
        let Some(router) = router.upgrade() else {
            return;
        };
        match c.destination {
            Destination::Local => {}
            Destination::Neighbour(o) => router.neighbours.wake(o.neighbour),
        }
    }
}
