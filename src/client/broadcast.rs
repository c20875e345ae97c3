//! Broadcasts: public messages signed by the account key, sent to every
//! connected user of the neighbourhood, and checked against the author's
//! pinned key when they arrive.

use super::{ClientError, Session, unexpected};
use crate::domain::{MessageId, PhoneNumber};
use crate::protocol::{B64, Request, Response};

/// Whether a broadcast's author is who it claims to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authorship {
    /// Signed with the author's pinned key (or this user's own).
    Verified,
    /// The author's key is not pinned here: nothing was checked or pinned.
    Unverified,
}

impl Session<'_> {
    /// Signs `text` and sends it to every connected user of the neighbourhood.
    pub async fn broadcast(&self, text: &str) -> Result<MessageId, ClientError> {
        if text.len() > crate::protocol::MAX_TEXT_BYTES {
            return Err(ClientError::Input(format!(
                "the text is {} bytes; the limit is {}",
                text.len(),
                crate::protocol::MAX_TEXT_BYTES
            )));
        }
        let id = MessageId::random();
        let sent_at = self.client.clock.now_ms() as u64;
        let bytes = crate::protocol::signed::broadcast_bytes(&id, sent_at, self.me.as_str(), text);
        let signature = B64(self.identity.sign(&bytes));
        match self
            .conn
            .call(Request::Broadcast {
                id,
                sent_at,
                text: text.to_owned(),
                signature,
            })
            .await?
        {
            Response::BroadcastSent { .. } => Ok(id),
            other => Err(unexpected(other)),
        }
    }

    /// Checks a broadcast against its author's pinned key. An author whose
    /// key is not pinned is [`Authorship::Unverified`] and nothing is
    /// pinned: the key a server reports for a stranger proves nothing, and
    /// pinning it would let whoever claimed the phone (a hostile neighbour
    /// server, say) make this client refuse its real owner later.
    pub async fn verify_broadcast(
        &self,
        b: &crate::protocol::Broadcast,
    ) -> Result<Authorship, ClientError> {
        let from = PhoneNumber::from_canonical(&b.from).map_err(|e| {
            ClientError::Forged(format!("a broadcast claims a malformed phone number: {e}"))
        })?;
        let key = if from == self.me {
            self.identity.public_key()
        } else {
            match self.contacts().pinned(&from).await? {
                Some((key, _)) => key,
                None => return Ok(Authorship::Unverified),
            }
        };
        let bytes = crate::protocol::signed::broadcast_bytes(&b.id, b.sent_at, &b.from, &b.text);
        key.verify(&bytes, &b.signature.0).map_err(|_| {
            ClientError::Forged(format!(
                "a broadcast claiming to be from {} does not verify with the pinned key",
                b.from
            ))
        })?;
        Ok(Authorship::Verified)
    }
}
