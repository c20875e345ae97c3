//! `device_send`: queue a v2 envelope for one device of its recipient
//! (docs/PROTOCOL.md §5.3). The answer (`accepted`) is sent only after
//! the commit, by the connection, so the session can read its next request
//! meanwhile.

use super::ApiError;
use crate::domain::{MessageId, PhoneNumber};
use crate::protocol::ErrorCode;
use crate::routing::{DeviceSend, PendingSend};
use crate::server::ServerState;
use crate::server::session::Session;

pub async fn handle(
    state: &ServerState,
    session: &Session,
    id: MessageId,
    to: &str,
    device: u32,
    list_version: u64,
    envelope: Vec<u8>,
) -> Result<PendingSend, ApiError> {
    let sender = session.user()?;
    let send = DeviceSend {
        id,
        to: parse_recipient(to)?,
        device,
        list_version,
        envelope,
    };
    Ok(state.router.accept_device(sender, send).await?)
}

/// The canonical form is the common case and cheap to check; anything else
/// goes through the numbering-plan parser for a precise error.
fn parse_recipient(to: &str) -> Result<PhoneNumber, ApiError> {
    PhoneNumber::from_canonical(to)
        .or_else(|_| PhoneNumber::parse(to))
        .map_err(|e| ApiError::new(ErrorCode::InvalidPhone, e.to_string()))
}
