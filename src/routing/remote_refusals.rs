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
use super::relayed_copies::{MAX_QUEUED_NOTICES, Record};
use super::{Router, link_frame};
use crate::db::outbound::OutboundRow;
use crate::db::queue::NewMessage;
use crate::domain::{Fingerprint, MessageId, PhoneNumber};
use crate::protocol::ErrorCode;
use crate::protocol::link::{self, LinkMessage};
use crate::protocol::notice::Undeliverable;

/// The refused copy as the server it was sent from knows it.
struct Refused {
    sender: PhoneNumber,
    sender_device: u32,
    to: PhoneNumber,
}

impl Router {
    /// Remembers that the copy `row` was sent to neighbour `peer`, so a
    /// refusal of it coming back can be checked (`relayed_copies`).
    pub fn relayed_to(&self, peer: Fingerprint, row: &OutboundRow) {
        self.relayed_copies.remember(peer, row);
    }

    /// Takes a refusal from neighbour `peer`. Without a `path` it is about
    /// a message queued here for `peer`; with one, it is such a refusal
    /// on its way back. Either way it must name a copy this server sent
    /// `peer`: the copy's own record gives the sender and the path back
    /// (the frame's are not trusted), and is used up. Where the message
    /// was sent from, its sending device is told; the queued copy, if
    /// any, is dropped only once that is done.
    pub async fn relay_refused(&self, peer: Fingerprint, mut refusal: Refusal, path: Vec<String>) {
        refusal.sender = None;
        let queued = path.is_empty();
        let record = match queued {
            true => self.queued_copy(peer, &mut refusal).await,
            false => refusal.to.as_ref().and_then(|to| {
                self.relayed_copies
                    .take(peer, refusal.id, to.as_str(), refusal.device)
            }),
        };
        let Some(record) = record else {
            return tracing::warn!(id = %refusal.id, code = ?refusal.code,
                "a refusal for a message not relayed from here to that neighbour; dropped");
        };
        if queued {
            let to = refusal.to.as_ref().map(|t| t.as_str()).unwrap_or_default();
            let _ = self
                .relayed_copies
                .take(peer, refusal.id, to, refusal.device);
        }
        let path = record.path();
        refusal.sender = Some((record.sender, record.sender_device));
        self.refusal_back(peer, refusal.clone(), path).await;
        if queued {
            self.drop_refused(peer, &refusal).await;
        }
    }

    /// Sends the refusal on back along `path` (the copy's path as sent,
    /// ending with us), or tells the sender when the copy started here.
    async fn refusal_back(&self, peer: Fingerprint, refusal: Refusal, path: Vec<String>) {
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
                "a refused copy's path does not lead back through here; dropped"),
        }
    }

    /// The copy `peer` refused as it still waits in its outbound queue;
    /// fills in the refusal's recipient from it.
    async fn queued_copy(&self, peer: Fingerprint, refusal: &mut Refusal) -> Option<Record> {
        let row = self
            .store
            .outbound_row(&peer, refusal.id, refusal.device, refusal.to.as_ref())
            .await;
        match row {
            Ok(Some(row)) => {
                if refusal.to.is_none() {
                    refusal.to = PhoneNumber::from_canonical(&row.recipient).ok();
                }
                Some(Record::of(&row))
            }
            Ok(None) => None,
            Err(e) => {
                tracing::error!(error = %e, "could not read a refused message");
                None
            }
        }
    }

    /// Drops the copy `peer` refused from its outbound queue.
    async fn drop_refused(&self, peer: Fingerprint, refusal: &Refusal) {
        if let Err(e) = self
            .outbound_acked(&peer, refusal.device, refusal.to.clone(), &[refusal.id])
            .await
        {
            tracing::error!(error = %e, "could not drop a refused message");
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
        // The rate comes first: counting the notices waiting reads the
        // device's queue (no index leads with the sender), so refusals
        // past the rate cost no read.
        let sender = refused.sender.as_str();
        if !self
            .relayed_copies
            .may_notify(sender, refused.sender_device)
        {
            return tracing::warn!(%id, "too many undeliverable notices for one device; not queued");
        }
        if !self.room_for_notice(&refused).await {
            return tracing::warn!(%id, "the sending device has the most undeliverable notices waiting; not queued");
        }
        let notice = Undeliverable {
            id,
            to: refused.to.as_str().to_owned(),
            device,
            code,
            reason: notice_reason(code, &refused.to, message),
        };
        self.queue_notice(refused, notice).await;
    }

    /// Whether the sending device has fewer than [`MAX_QUEUED_NOTICES`]
    /// notices waiting (a failed read counts as no room).
    async fn room_for_notice(&self, refused: &Refused) -> bool {
        let waiting = self
            .store
            .queued_notices(&refused.sender, refused.sender_device)
            .await;
        waiting.is_ok_and(|n| n < MAX_QUEUED_NOTICES)
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
            // notices, and ids are unique per recipient device and sender.
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

/// The `reason` a notice gives for a refusal of `code` with `message`. A
/// `stale_devices` refusal's message is written for the error, which
/// carries the recipient's current list; a notice carries none, so it
/// says what to do without one. The other refusals' messages hold in a
/// notice as they are.
fn notice_reason(code: ErrorCode, to: &PhoneNumber, message: String) -> String {
    match code {
        ErrorCode::StaleDevices => format!(
            "{to}'s devices changed before this message reached their server; look {to} up again, seal for their current devices and send again"
        ),
        _ => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_devices_notice_says_to_look_the_recipient_up_again() {
        let to = PhoneNumber::from_canonical("+12025550103").unwrap();
        let reason = notice_reason(ErrorCode::StaleDevices, &to, "check this error".into());
        assert!(reason.contains("look +12025550103 up again"), "{reason}");
        assert!(!reason.contains("this error"), "{reason}");
        let quota = notice_reason(ErrorCode::QuotaExceeded, &to, "full".into());
        assert_eq!(quota, "full");
    }
}
