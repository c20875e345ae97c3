//! `device_send`: queue a v2 envelope for one device of its recipient
//! (docs/PROTOCOL.md §5.3). As with `send`, the answer (`accepted`) is
//! sent by the connection after the commit.

use super::ApiError;
use super::send::parse_recipient;
use crate::domain::MessageId;
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
