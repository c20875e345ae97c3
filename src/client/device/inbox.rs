//! Receiving in protocol v2 (docs/PROTOCOL.md §14.4): parse, de-duplicate
//! by sender and id, find the sender's checked device, check its signature
//! before any session state is read, open (or set up) the session, and
//! commit the new state with the message in one transaction before it is
//! acknowledged. A v1 envelope is refused with a clear reason.

use super::store::{self, Use};
use super::{Device, now_ms};
use crate::client::Notice;
use crate::client::home::{Direction, Record, record_in, sent_at_ms};
use crate::client::receive::{Received, Refusal, Verdict};
use crate::client::{ClientError, Session};
use crate::crypto::v2::{
    Content, Envelope, EnvelopeKind, Opened, PrekeyStore, Session as Ratchet, VerifiedDevice,
};
use crate::domain::{Fingerprint, MessageId, PhoneNumber};
use crate::protocol::Delivered;
use crate::protocol::notice::Undeliverable;

/// What a v1 envelope is told.
const V1_REFUSED: &str = "a protocol v1 envelope was refused: this client speaks protocol v2 \
                          only; the sender needs a current carrier";

/// Whether checking a sender's devices failed on what the server gave
/// (refuse that message) rather than on the connection or the store (stop).
fn unusable_devices(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Input(_)
            | ClientError::Forged(_)
            | ClientError::V2(_)
            | ClientError::Server { .. }
    )
}

/// A message opened, with the state to commit before acknowledging it.
struct Unsealed {
    session: Ratchet,
    /// The prekey store, when the message set the session up.
    prekeys: Option<PrekeyStore>,
    opened: Opened,
}

impl Session<'_> {
    /// Checks, opens and stores one message delivered to this device.
    pub(in crate::client) async fn accept_v2(
        &self,
        device: &Device,
        m: Delivered,
    ) -> Result<Verdict, ClientError> {
        let refuse = |reason: String| {
            Verdict::Drop(Refusal {
                id: m.id,
                from: m.from.clone(),
                reason,
                kept_back: false,
            })
        };
        if let Some(notice) = Undeliverable::parse(&m.envelope.0) {
            return Ok(self.undeliverable(m, notice));
        }
        if m.envelope.0.first() == Some(&1) {
            return Ok(refuse(V1_REFUSED.into()));
        }
        let envelope = match Envelope::parse(&m.envelope.0) {
            Ok(e) => e,
            Err(e) => return Ok(refuse(format!("malformed envelope: {e}"))),
        };
        let (sender, sender_device) = envelope.sender();
        let sender = sender.clone();
        if sender.as_str() != m.from
            || envelope.id() != m.id
            || m.device.is_some_and(|d| d != sender_device.get())
        {
            return Ok(refuse(
                "the envelope does not match its delivery details".into(),
            ));
        }
        if self.already_stored(&m, &sender).await? {
            return Ok(Verdict::Duplicate);
        }
        let keep_back = |e: ClientError| {
            Verdict::KeepBack(Refusal {
                id: m.id,
                from: m.from.clone(),
                reason: e.to_string(),
                kept_back: true,
            })
        };
        let (mut peer, mut account_fp) = match self.peer_device(&sender, sender_device).await {
            Ok(Some(found)) => found,
            Ok(None) if self.newer_than_listed(&sender, sender_device.get()).await? => {
                return Ok(keep_back(ClientError::Input(format!(
                    "sent from device {sender_device} of {sender}, newer than the device list \
                     this server holds for them (it may still be on its way from their home \
                     server)"
                ))));
            }
            Ok(None) => {
                return Ok(refuse(format!(
                    "sent from device {sender_device}, which {sender} does not list"
                )));
            }
            Err(e @ (ClientError::KeyChanged { .. } | ClientError::NoDevicesYet { .. })) => {
                return Ok(keep_back(e));
            }
            Err(e) if unusable_devices(&e) => {
                return Ok(refuse(format!(
                    "the sender's devices do not check out: {e}"
                )));
            }
            Err(e) => return Err(e),
        };
        if envelope.verify(&peer.key).is_err() {
            // Either a forgery, or a device this home knew under the id is
            // gone (a new account key, say): the server's current list
            // tells which.
            match self.devices_of(&sender).await {
                Err(e @ ClientError::KeyChanged { .. }) => return Ok(keep_back(e)),
                Err(e) if !unusable_devices(&e) => return Err(e),
                Err(_) | Ok(_) => {}
            }
            match self.peer_device(&sender, sender_device).await? {
                Some((fresh, fp)) if envelope.verify(&fresh.key).is_ok() => {
                    (peer, account_fp) = (fresh, fp);
                }
                _ => {
                    return Ok(refuse(
                        "rejected: the signature does not verify (forged or tampered)".into(),
                    ));
                }
            }
        }
        let _ratchets = self.client.home.lock_ratchets().await;
        let unsealed = match self.unseal(device, &peer, &envelope).await? {
            Ok(u) => u,
            Err(reason) => return Ok(refuse(reason)),
        };
        self.commit(device, m, unsealed, account_fp).await
    }

    /// A notice from this device's own server that a copy of a message it
    /// sent was refused: told to the user, acknowledged, not stored. Only
    /// the server can queue one (no envelope starts with its tag), under
    /// this account's number and no sending device.
    fn undeliverable(&self, m: Delivered, notice: Undeliverable) -> Verdict {
        if m.from != self.me.as_str() || m.device.is_some() {
            return Verdict::Drop(Refusal {
                id: m.id,
                from: m.from,
                reason: "a notice that does not come from this device's own server".into(),
                kept_back: false,
            });
        }
        (self.client.notify())(Notice::Undeliverable(notice));
        Verdict::Duplicate
    }

    /// Whether device `id` of `sender` has a higher id than every device
    /// of theirs this home has checked: a device added after the list the
    /// server holds (a list from another server's user comes through the
    /// neighbourhood and may trail their messages). Clients give ids out in
    /// ascending order, never twice (docs/PROTOCOL.md §7.9), so a lower
    /// unlisted id is a removed device. A message from a removed device that
    /// had the highest id, sent before its removal, is kept back too; it
    /// expires on the server like any unacknowledged message.
    async fn newer_than_listed(&self, sender: &PhoneNumber, id: u32) -> Result<bool, ClientError> {
        let known = store::peer_device_ids(self.client.home.pool(), sender.as_str()).await?;
        Ok(known.iter().all(|&k| k < id))
    }

    /// Whether this message was stored before (a redelivery after a crash
    /// between commit and acknowledgement), by its sender and id
    /// (docs/PROTOCOL.md §14.4 step 0): another account's message under an
    /// id seen here is a different message, as is a sync copy under an id a
    /// contact used first. One from this account may be a message to
    /// itself or a sync copy, told apart only once opened.
    async fn already_stored(
        &self,
        m: &Delivered,
        sender: &PhoneNumber,
    ) -> Result<bool, ClientError> {
        let home = &self.client.home;
        Ok(home.has_received(sender, m.id).await?
            || (sender == &self.me && home.has_sent(m.id).await?))
    }

    /// Opens `envelope` in its session, or sets one up from a prekey
    /// message. The inner error is the reason to show for a refusal.
    async fn unseal(
        &self,
        device: &Device,
        peer: &VerifiedDevice,
        envelope: &Envelope,
    ) -> Result<Result<Unsealed, String>, ClientError> {
        let home = &self.client.home;
        let now = now_ms(&self.client.clock);
        let row = store::session(
            home.pool(),
            peer.phone.as_str(),
            peer.device_id.get(),
            &envelope.session_id().0,
        )
        .await?;
        if let Some(row) = row {
            let mut session = device.open_session(&row.state)?;
            return Ok(match session.open(&device.local, peer, envelope, now) {
                Ok(opened) => Ok(Unsealed {
                    session,
                    prekeys: None,
                    opened,
                }),
                Err(e) => Err(format!("rejected: {e}")),
            });
        }
        if envelope.kind() != EnvelopeKind::Prekey {
            return Ok(Err(format!(
                "(a message from {} could not be decrypted: its session is unknown here)",
                peer.phone
            )));
        }
        let mut prekeys = device.prekeys(home).await?;
        Ok(
            match Ratchet::accept(&device.local, &mut prekeys, peer, envelope, now) {
                Ok((session, opened)) => Ok(Unsealed {
                    session,
                    prekeys: Some(prekeys),
                    opened,
                }),
                Err(e) => Err(format!(
                    "(a message from {} could not be decrypted: {e})",
                    peer.phone
                )),
            },
        )
    }

    /// Saves the session (and the prekey store it used) with the message in
    /// one transaction.
    async fn commit(
        &self,
        device: &Device,
        m: Delivered,
        u: Unsealed,
        account_fp: Fingerprint,
    ) -> Result<Verdict, ClientError> {
        let now = self.client.clock.now_ms();
        let sender = u.opened.sender.clone();
        let sent_at = sent_at_ms(u.opened.sent_at_ms);
        let copy_refused = match &u.opened.content {
            Content::SentCopy { id, .. } => sync_copy_refusal(sender == self.me, *id, m.id),
            _ => None,
        };
        let (record_peer, fingerprint, direction, to, text, refusal) = match &u.opened.content {
            Content::Text(t) => (sender.clone(), account_fp, Direction::In, None, t, None),
            Content::SentCopy { to, text, .. } if copy_refused.is_none() => {
                let fp = self.recipient_fingerprint(to).await?;
                let shown = Some(to.to_string());
                (to.clone(), fp, Direction::Out, shown, text, None)
            }
            Content::SentCopy { .. } | Content::Other { .. } => {
                let why = copy_refused.unwrap_or_else(|| {
                    "unsupported message (a content type this client does not know)".into()
                });
                (
                    sender.clone(),
                    account_fp,
                    Direction::In,
                    None,
                    &String::new(),
                    Some(why),
                )
            }
        };
        let mut tx = crate::client::home::write_tx(self.client.home.pool()).await?;
        store::save_session(
            &mut tx,
            sender.as_str(),
            u.opened.sender_device.get(),
            &u.session.id().0,
            &device.seal_session(&u.session),
            Use::Opened,
            now,
        )
        .await?;
        if let Some(prekeys) = &u.prekeys {
            store::save_prekeys(&mut *tx, &device.seal_prekeys(prekeys)).await?;
        }
        let stored = match refusal {
            Some(_) => false,
            None => {
                let record = Record {
                    id: m.id,
                    direction,
                    peer: &record_peer,
                    peer_fingerprint: fingerprint,
                    counter: 0,
                    text,
                    sent_at,
                    stored_at: now,
                };
                record_in(&mut *tx, &record).await?
            }
        };
        tx.commit().await?;
        if let Some(why) = refusal {
            return Ok(Verdict::Drop(Refusal {
                id: m.id,
                from: m.from,
                reason: why,
                kept_back: false,
            }));
        }
        if !stored {
            return Ok(Verdict::Duplicate);
        }
        Ok(Verdict::Stored(Received {
            id: m.id,
            from: m.from,
            to,
            text: text.clone(),
            sent_at,
            received_at: m.received_at,
        }))
    }

    /// The key a sync copy's recipient is pinned with here, else this
    /// account's own (the history needs one).
    async fn recipient_fingerprint(&self, to: &PhoneNumber) -> Result<Fingerprint, ClientError> {
        if to == &self.me {
            return Ok(self.identity.fingerprint());
        }
        Ok(match self.contacts().pinned(to).await? {
            Some((_, fp)) => fp,
            None => self.identity.fingerprint(),
        })
    }
}

/// Why a sync copy cannot be stored, if it cannot: only this account's own
/// devices send them, under the id of the message they copy
/// (docs/PROTOCOL.md §7.9).
fn sync_copy_refusal(
    from_own_account: bool,
    copied: MessageId,
    envelope: MessageId,
) -> Option<String> {
    if !from_own_account {
        return Some("a sync copy that is not from this account's own device".into());
    }
    (copied != envelope).then(|| {
        format!(
            "a sync copy whose message id ({copied}) is not the id it was sent under \
             ({envelope})"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sync_copy_is_refused_for_what_is_wrong_with_it() {
        let (id, other) = (MessageId::random(), MessageId::random());
        assert_eq!(sync_copy_refusal(true, id, id), None);
        let foreign = sync_copy_refusal(false, id, id).unwrap();
        assert!(
            foreign.contains("not from this account's own device"),
            "{foreign}"
        );
        let moved = sync_copy_refusal(true, other, id).unwrap();
        assert!(
            moved.contains(&format!(
                "message id ({other}) is not the id it was sent under ({id})"
            )),
            "{moved}"
        );
        assert!(!moved.contains("not from this account"), "{moved}");
    }
}
