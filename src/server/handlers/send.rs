//! `send`: queue a sealed envelope for its recipient. The answer (`accepted`)
//! is sent only after the commit, by the connection, so the session can read
//! its next request meanwhile.

use super::ApiError;
use crate::domain::{MessageId, PhoneNumber};
use crate::protocol::ErrorCode;
use crate::routing::PendingSend;
use crate::server::ServerState;
use crate::server::session::Session;

pub async fn handle(
    state: &ServerState,
    session: &Session,
    id: MessageId,
    to: &str,
    envelope: Vec<u8>,
) -> Result<PendingSend, ApiError> {
    let sender = session.user()?;
    let recipient = parse_recipient(to)?;
    Ok(state.router.accept(sender, id, recipient, envelope).await?)
}

/// The canonical form is the common case and cheap to check; anything else
/// goes through the numbering-plan parser for a precise error.
pub(super) fn parse_recipient(to: &str) -> Result<PhoneNumber, ApiError> {
    PhoneNumber::from_canonical(to)
        .or_else(|_| PhoneNumber::parse(to))
        .map_err(|e| ApiError::new(ErrorCode::InvalidPhone, e.to_string()))
}
