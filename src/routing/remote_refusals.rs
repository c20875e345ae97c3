//! Refusals of relayed copies, on their way back to the server a message
//! was sent from, and what that server does with one: the sending device
//! is told. Its client was answered `accepted` when the copy was only
//! queued here, so without a word it would believe the copy delivered.
//!
//! The word is a notice (`protocol::notice`): queued to the sending
//! device's own queue like a message, fetched and acknowledged like one,
//! and shown by the client as "message ID to +1… device N was refused:
//! REASON". Nobody signs it; it is worth what the refusing server's word
//! is, carried by servers that could have dropped the message anyway.

use super::relay::Refusal;
use super::{Router, link_frame};
use crate::db::queue::NewMessage;
use crate::domain::{Fingerprint, MessageId, PhoneNumber};
use crate::protocol::link::{self, LinkMessage};
use crate::protocol::notice::Undeliverable;

/// The refused copy as the server it was sent from knows it.
struct Refused {
    sender: PhoneNumber,
    sender_device: u32,
    to: PhoneNumber,
}

impl Router {
    /// Takes a refusal from neighbour `peer`. Without a `path` it is about
    /// a message we sent `peer`: the message is dropped here, and if it
    /// came from another server the refusal goes back towards it with the
    /// message's path. With one, it is such a refusal on its way back.
    /// Where the message was sent from, its sending device is told.
    pub async fn relay_refused(&self, peer: Fingerprint, mut refusal: Refusal, path: Vec<String>) {
        let path = if path.is_empty() {
            self.drop_refused(peer, &mut refusal).await
        } else {
            path
        };
        let me = self.me.fingerprint.to_hex();
        let at = path.iter().position(|p| *p == me);
        let next_is_peer = |at: usize| path.get(at + 1).is_none_or(|next| *next == peer.to_hex());
        let back = at
            .filter(|&at| at > 0 && next_is_peer(at))
            .and_then(|at| Fingerprint::parse(&path[at - 1]));
        match back {
            Some(back) if path.len() <= link::MAX_HOPS + 1 => {
                self.pass_refusal_back(back, refusal, path)
            }
            _ if at == Some(0) && next_is_peer(0) => self.tell_sender(refusal).await,
            _ => tracing::warn!(id = %refusal.id, code = ?refusal.code,
                "a refusal for a message not queued here, or with a path that does not lead \
                 back through here; dropped"),
        }
    }

    /// Drops the copy `peer` refused from its outbound queue; returns the
    /// path it had, and fills in the refusal's sender and recipient from
    /// it.
    async fn drop_refused(&self, peer: Fingerprint, refusal: &mut Refusal) -> Vec<String> {
        let (id, device) = (refusal.id, refusal.device);
        let row = self
            .store
            .outbound_row(&peer, id, device, refusal.to.as_ref())
            .await;
        if let Err(e) = self
            .outbound_acked(&peer, device, refusal.to.clone(), &[id])
            .await
        {
            tracing::error!(error = %e, "could not drop a refused message");
        }
        match row {
            Ok(Some(row)) => {
                let sender_device = u32::try_from(row.sender_device).unwrap_or_default();
                refusal.sender = Some((row.sender, sender_device));
                if refusal.to.is_none() {
                    refusal.to = PhoneNumber::from_canonical(&row.recipient).ok();
                }
                serde_json::from_str(&row.path).unwrap_or_default()
            }
            Ok(None) => Vec::new(),
            Err(e) => {
                tracing::error!(error = %e, "could not read a refused message");
                Vec::new()
            }
        }
    }

    /// Sends a refusal on towards `back`, the server before us on `path`.
    fn pass_refusal_back(&self, back: Fingerprint, refusal: Refusal, path: Vec<String>) {
        let id = refusal.id;
        let (from, sender_device) = refusal.sender.unwrap_or_default();
        let frame = link_frame(&LinkMessage::RelayRefused {
            id,
            code: refusal.code,
            message: refusal.message,
            device: refusal.device,
            path,
            to: refusal.to.map(|t| t.as_str().to_owned()),
            from: Some(from).filter(|f| !f.is_empty()),
            sender_device,
        });
        if !self.neighbours.send_to(back, frame) {
            tracing::info!(%id, "the link back towards a refused message's sender is down");
        }
    }

    /// The refused message was sent from here: queues a notice to the
    /// device that sent it, if that is a device of one of our users.
    async fn tell_sender(&self, refusal: Refusal) {
        let Refusal {
            id,
            device,
            to,
            code,
            message,
            sender,
        } = refusal;
        tracing::warn!(%id, device, ?code, %message,
            "the recipient's server refused a message sent from here; telling its sender");
        let refused = match (sender, to) {
            (Some((sender, sender_device)), Some(to)) if sender_device != 0 => {
                match PhoneNumber::from_canonical(&sender) {
                    Ok(sender) => Refused {
                        sender,
                        sender_device,
                        to,
                    },
                    Err(_) => return,
                }
            }
            // A v1 message, or an older server's refusal that does not
            // say whose it was: only the log tells.
            _ => return,
        };
        if !self.sends_from_here(&refused).await {
            return tracing::warn!(%id, "a refusal names a sender device that is not ours; ignored");
        }
        let notice = Undeliverable {
            id,
            to: refused.to.as_str().to_owned(),
            device,
            code,
            reason: message,
        };
        self.queue_notice(refused, notice).await;
    }

    /// Whether the refused message's sender is one of our users, and the
    /// sending device in their current list.
    async fn sends_from_here(&self, refused: &Refused) -> bool {
        let ours = self
            .user(&refused.sender)
            .await
            .is_some_and(|e| e.via.is_none());
        ours && matches!(
            self.device_key(&refused.sender, refused.sender_device)
                .await,
            Ok(Some(_))
        )
    }

    /// Commits `notice` to the sending device's queue (pushed to its live
    /// sessions like a message).
    async fn queue_notice(&self, refused: Refused, notice: Undeliverable) {
        let now = self.clock.now_ms();
        let message = NewMessage {
            // A fresh id: one message refused for two devices gives two
            // notices, and ids are unique per recipient device.
            id: MessageId::random(),
            recipient: refused.sender.clone(),
            device: refused.sender_device,
            sender: refused.sender.clone(),
            sender_device: 0,
            envelope: notice.to_bytes(),
            received_at: now,
            expires_at: now + self.message_ttl_ms,
        };
        let path = vec![self.me.fingerprint.to_hex()];
        let outcome = match self.route(refused.sender, message, path, false).await {
            Ok(pending) => pending.committed().await,
            Err(e) => Err(e),
        };
        if let Err(e) = outcome {
            tracing::warn!(id = %notice.id, error = %e, "could not queue an undeliverable notice");
        }
    }
}
