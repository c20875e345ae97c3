//! Messages between servers: what a neighbour relays to us (checked, then
//! routed like a local send; every copy names its recipient device and is
//! judged against that device's list at the home server, and waits there
//! for its sender's list if need be, `remote_senders`), the outbound queue
//! each link drains, and the wake-up of a link once a message for it is
//! committed. Refusals are `remote_refusals`.

use std::sync::Weak;

use tokio::sync::mpsc;

use super::device_send::check_v2_header;
use super::{PendingSend, RouteError, Router};
use crate::db::DbError;
use crate::db::outbound::OutboundRow;
use crate::db::queue::{NewMessage, QueueRef};
use crate::db::writer::Committed;
use crate::domain::{Fingerprint, MessageId, PhoneNumber};
use crate::protocol;
use crate::protocol::ErrorCode;
use crate::protocol::link::{self, Relayed};

/// Completes [`RouteError::V1Refused`]'s reason for a relay that names no
/// recipient device (its refusal's code is `bad_envelope`).
const NO_DEVICE: &str = " in a relay without a recipient device";

/// A neighbour's refusal of a relayed message: which copy, and why.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub id: MessageId,
    /// The recipient device (0: a v1 message).
    pub device: u32,
    /// The recipient, when the neighbour named it (ids are unique per
    /// recipient only; an older neighbour names none).
    pub to: Option<PhoneNumber>,
    pub code: ErrorCode,
    pub message: String,
    /// The refused message's sender and sending device, as a refusal on
    /// its way back names them (absent from older servers).
    pub sender: Option<(String, u32)>,
}

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
        // A relay without a recipient device is protocol version 1's: it
        // would wait in the account's own queue, which no version 2 session
        // reads, until it expired. Refused, so the sending server learns now.
        if r.device == 0 {
            return Err(RouteError::V1Refused(NO_DEVICE));
        }
        let sent_by = (&sender, r.sender_device);
        check_v2_header(&r.envelope.0, sent_by, (&recipient, r.device), r.id)?;
        // Past its lifetime by this server's clock, it will never be
        // fetched or relayed from here. Acknowledged all the same: refused
        // or left unanswered, the neighbour would keep its copy and send it
        // again on every link until its own sweep.
        let now = self.clock.now_ms();
        if r.expires_at <= now {
            crate::metrics::get().expired.inc();
            tracing::debug!(id = %r.id, "a relayed message arrived expired; acknowledged, not stored");
            return Ok(PendingSend::expired(recipient));
        }
        // A copy for our own user waits, if need be, until its sending
        // device is known here (`remote_senders`).
        let mut home = false;
        if self.user(&recipient).await.is_some_and(|e| e.via.is_none()) {
            self.check_relayed_device(&recipient, r.device).await?;
            home = true;
        }
        let mut path = r.path;
        path.push(me);
        // The neighbour's word on both times is bounded by this server's
        // clock: a date in the future would show and sort wrongly, and no
        // message lives longer here than this server's lifetime allows.
        let message = NewMessage {
            id: r.id,
            recipient: recipient.clone(),
            device: r.device,
            sender,
            sender_device: r.sender_device,
            envelope: r.envelope.0,
            received_at: r.received_at.min(now),
            expires_at: r.expires_at.min(now + self.message_ttl_ms),
        };
        // At the home the sender is checked once their device is known,
        // which may be later (`remote_senders`).
        let pending = if home {
            self.route_from_known_device(from, message, path).await?
        } else {
            self.check_sent_from_home(&message.sender, &path).await?;
            self.route(recipient, message, path, true).await?
        };
        crate::metrics::get().relayed_in.inc();
        Ok(pending)
    }

    /// Refuses a relay that cannot come from `sender`: one naming a user
    /// of this server (their messages start here), or one whose `path`
    /// does not start at the sender's home as the directory here records
    /// it. Otherwise any neighbour could speak for anyone, and use up
    /// their share of a recipient's queue.
    ///
    /// A sender the directory does not know yet passes: entries flood
    /// apart from messages and may come later. The recipient's home checks
    /// only once the sending device is known there, which needs the
    /// sender's entry, waiting for it if need be (`remote_senders`); a hop
    /// passes such a copy on towards that home, which checks it then.
    pub(super) async fn check_sent_from_home(
        &self,
        sender: &PhoneNumber,
        path: &[String],
    ) -> Result<(), RouteError> {
        let Some(entry) = self.user(sender).await else {
            return Ok(());
        };
        if entry.via.is_none() {
            return Err(RouteError::RelayFromOurUser(sender.clone()));
        }
        let origin = path.first().map(String::as_str).unwrap_or_default();
        if Fingerprint::parse(origin) != Some(entry.home) {
            return Err(RouteError::RelayNotFromHome {
                phone: sender.clone(),
                home: entry.home,
                origin: origin.to_owned(),
            });
        }
        Ok(())
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

    /// Deletes messages for recipient device `device` (0: v1 messages)
    /// that neighbour `peer` has committed: those to recipient `to` when
    /// named, else every copy under each id (an older neighbour's ack).
    pub async fn outbound_acked(
        &self,
        peer: &Fingerprint,
        device: u32,
        to: Option<PhoneNumber>,
        ids: &[MessageId],
    ) -> Result<u64, DbError> {
        let queue = QueueRef::Neighbour(*peer, device, to);
        let deleted = self.store.delete(queue, ids.to_vec()).await?;
        crate::metrics::get().relayed_out.inc_by(deleted);
        Ok(deleted)
    }
}

/// Hands each committed outbound message to the link that carries it.
pub(super) async fn wake_links(
    mut committed: mpsc::UnboundedReceiver<Committed>,
    router: Weak<Router>,
) {
    while let Some(c) = committed.recv().await {
        let Some(router) = router.upgrade() else {
            return;
        };
        router.outbound_committed(c);
    }
}
