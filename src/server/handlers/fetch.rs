//! `fetch`: the oldest waiting messages. They stay queued until acknowledged,
//! so a client that dies before `ack` gets them again.

use super::ApiError;
use crate::protocol::Response;
use crate::server::ServerState;
use crate::server::session::Session;

/// Messages per fetch when the client names no limit.
const DEFAULT_LIMIT: u32 = 100;

pub async fn handle(
    state: &ServerState,
    session: &Session,
    limit: Option<u32>,
) -> Result<Response, ApiError> {
    let user = session.user()?;
    let (messages, more) = state
        .router
        .fetch(user, limit.unwrap_or(DEFAULT_LIMIT))
        .await?;
    Ok(Response::Messages { messages, more })
}
