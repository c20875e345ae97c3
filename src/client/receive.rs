//! What a client does with one delivered message: check the sender's key
//! against its pin, verify and decrypt, drop replays, store it.

use super::ClientError;
use super::session::Session;
use crate::crypto::{self, CryptoError};
use crate::domain::{MessageId, PhoneNumber};
use crate::protocol::{Delivered, envelope};

/// A message accepted and stored in the history.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Received {
    pub id: MessageId,
    pub from: String,
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

pub(super) async fn accept(session: &Session<'_>, m: Delivered) -> Result<Verdict, ClientError> {
    let home = &session.client().home;
    if home.has_received(&m.id.to_hex()).await? {
        return Ok(Verdict::Duplicate);
    }
    let refuse = |reason: String| Refusal {
        id: m.id,
        from: m.from.clone(),
        reason,
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
    let Some((key, fp)) = sender_key(session, &header.sender).await? else {
        return Ok(Verdict::Drop(refuse(format!(
            "{} is not a registered user",
            header.sender
        ))));
    };
    let opened = match crypto::open(session.identity(), session.me(), &key, &m.envelope.0) {
        Ok(o) => o,
        Err(CryptoError::BadSignature) => {
            return signature_failed(session, &header.sender, refuse).await;
        }
        Err(e) => return Ok(Verdict::Drop(refuse(format!("rejected: {e}")))),
    };
    let now = session.client().home_now();
    let sent_at = opened.header.sent_at as i64;
    let stored = home
        .record(
            &m.id.to_hex(),
            "in",
            header.sender.as_str(),
            &fp.to_hex(),
            opened.header.counter,
            &opened.text,
            sent_at,
            now,
        )
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
        text: opened.text,
        sent_at,
        received_at: m.received_at,
    }))
}

/// The pinned key of the sender, pinning the server's answer on first contact.
async fn sender_key(
    session: &Session<'_>,
    sender: &PhoneNumber,
) -> Result<Option<(crypto::PublicKey, crate::domain::Fingerprint)>, ClientError> {
    if let Some(pinned) = session.pinned_key(sender).await? {
        return Ok(Some(pinned));
    }
    match session.contact_key(sender).await {
        Ok(k) => Ok(Some(k)),
        Err(ClientError::Server {
            code: crate::protocol::ErrorCode::UnknownUser,
            ..
        }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A signature that fails against the pinned key is either a forgery or a
/// key change; the server's current key tells which.
async fn signature_failed(
    session: &Session<'_>,
    sender: &PhoneNumber,
    refuse: impl Fn(String) -> Refusal,
) -> Result<Verdict, ClientError> {
    match session.contact_key(sender).await {
        Err(e @ ClientError::KeyChanged { .. }) => Ok(Verdict::KeepBack(refuse(e.to_string()))),
        Ok(_) | Err(ClientError::Server { .. }) => Ok(Verdict::Drop(refuse(
            "rejected: the signature does not verify (forged or tampered)".into(),
        ))),
        Err(e) => Err(e),
    }
}
