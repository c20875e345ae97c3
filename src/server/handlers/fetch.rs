//! `fetch`: the oldest waiting messages, or those after a cursor an earlier
//! answer gave. They stay queued until acknowledged, so a client that dies
//! before `ack` gets them again, and one that keeps some back reads past
//! them with the cursor.

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
    after: Option<u64>,
) -> Result<Response, ApiError> {
    let user = session.user()?;
    let (messages, more, cursor) = state
        .router
        .fetch(user, limit.unwrap_or(DEFAULT_LIMIT), after.unwrap_or(0))
        .await?;
    Ok(Response::Messages {
        messages,
        more,
        cursor,
    })
}
