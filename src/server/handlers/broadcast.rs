//! `broadcast`: a public message, signed by its author, to every connected
//! user of the neighbourhood. It is not stored: only those connected now
//! receive it.

use super::ApiError;
use crate::domain::MessageId;
use crate::protocol::{B64, Broadcast, Response};
use crate::server::ServerState;
use crate::server::session::Session;

pub fn handle(
    state: &ServerState,
    session: &Session,
    id: MessageId,
    sent_at: u64,
    text: String,
    signature: B64,
) -> Result<Response, ApiError> {
    let from = session.user()?.phone();
    let b = Broadcast {
        id,
        from: from.to_string(),
        sent_at,
        text,
        signature,
    };
    state.router.broadcast_local(from, b)?;
    Ok(Response::BroadcastSent { id })
}
