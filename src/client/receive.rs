//! What a client does with one delivered message: check the sender's key
//! against its pin, verify and decrypt, drop replays, store it.

use super::ClientError;
use super::contacts::Contacts;
use super::home::{Direction, Record, sent_at_ms};
use crate::crypto::{self, CryptoError, Identity, PublicKey};
use crate::domain::{Fingerprint, MessageId, PhoneNumber};
use crate::protocol::{Delivered, ErrorCode, envelope};

/// A message accepted and stored in the history.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Received {
    pub id: MessageId,
    pub from: String,
    /// For a copy of what this account sent from another of its devices:
    /// the recipient (then `from` is this account).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    pub text: String,
    /// The sender's clock, milliseconds since the Unix epoch.
    pub sent_at: i64,
    /// When the server accepted it, milliseconds since the Unix epoch.
    pub received_at: i64,
}

/// A message not accepted, and why.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub id: MessageId,
    pub from: String,
    pub reason: String,
    /// Not acknowledged: it stays on the server and is tried again at the
    /// next fetch (the sender's key changed, say), where a refused message
    /// is acknowledged and gone.
    pub kept_back: bool,
}

/// What to do with a delivered message.
pub(super) enum Verdict {
    /// Stored: acknowledge it.
    Stored(Received),
    /// Stored before (a redelivery): acknowledge it.
    Duplicate,
    /// Forged, tampered or replayed: acknowledge (delete) it and report it.
    Drop(Refusal),
    /// The sender's key changed: keep it on the server until the user trusts
    /// the new key.
    KeepBack(Refusal),
}

/// Checks, opens and stores one message delivered to `me`.
pub(super) async fn accept(
    contacts: &Contacts<'_>,
    identity: &Identity,
    me: &PhoneNumber,
    m: Delivered,
) -> Result<Verdict, ClientError> {
    let home = contacts.home;
    let refuse = |reason: String| Refusal {
        id: m.id,
        from: m.from.clone(),
        reason,
        kept_back: false,
    };
    let header = match envelope::parse(&m.envelope.0) {
        Ok(v) => v.header,
        Err(e) => return Ok(Verdict::Drop(refuse(format!("malformed envelope: {e}")))),
    };
    if header.sender.as_str() != m.from || header.id != m.id {
        return Ok(Verdict::Drop(refuse(
            "the envelope does not match its delivery details".into(),
        )));
    }
    if home.has_received(&header.sender, m.id).await? {
        return Ok(Verdict::Duplicate);
    }
    let Some((key, fp)) = sender_key(contacts, &header.sender).await? else {
        return Ok(Verdict::Drop(refuse(format!(
            "{} is not a registered user",
            header.sender
        ))));
    };
    let opened = match crypto::open(identity, me, &key, &m.envelope.0) {
        Ok(o) => o,
        Err(CryptoError::BadSignature) => {
            return signature_failed(contacts, &header.sender, refuse).await;
        }
        Err(e) => return Ok(Verdict::Drop(refuse(format!("rejected: {e}")))),
    };
    let sent_at = sent_at_ms(opened.header.sent_at);
    let stored = home
        .record(&Record {
            id: m.id,
            direction: Direction::In,
            peer: &header.sender,
            peer_fingerprint: fp,
            counter: opened.header.counter,
            text: &opened.text,
            sent_at,
            stored_at: contacts.clock.now_ms(),
        })
        .await?;
    if !stored {
        return Ok(Verdict::Drop(refuse(format!(
            "replayed message (counter {} seen before)",
            opened.header.counter
        ))));
    }
    Ok(Verdict::Stored(Received {
        id: m.id,
        from: m.from,
        to: None,
        text: opened.text,
        sent_at,
        received_at: m.received_at,
    }))
}

/// The sender's key, or `None` if the server knows no such user.
async fn sender_key(
    contacts: &Contacts<'_>,
    sender: &PhoneNumber,
) -> Result<Option<(PublicKey, Fingerprint)>, ClientError> {
    match contacts.sender(sender).await {
        Ok(k) => Ok(Some(k)),
        Err(ClientError::Server {
            code: ErrorCode::UnknownUser,
            ..
        }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A signature that fails against the pinned key is either a forgery or a
/// key change; the server's current key tells which.
async fn signature_failed(
    contacts: &Contacts<'_>,
    sender: &PhoneNumber,
    refuse: impl Fn(String) -> Refusal,
) -> Result<Verdict, ClientError> {
    match contacts.current(sender).await {
        Err(e @ ClientError::KeyChanged { .. }) => Ok(Verdict::KeepBack(Refusal {
            kept_back: true,
            ..refuse(e.to_string())
        })),
        Ok(_) | Err(ClientError::Server { .. }) => Ok(Verdict::Drop(refuse(
            "rejected: the signature does not verify (forged or tampered)".into(),
        ))),
        Err(e) => Err(e),
    }
}
