//! `ack`: delete messages the client has stored. Only messages this session
//! was given (by fetch or push) are deleted; other ids are ignored.

use super::ApiError;
use crate::domain::MessageId;
use crate::protocol::{ErrorCode, Response};
use crate::server::ServerState;
use crate::server::session::Session;

/// Most ids in one `ack`.
const MAX_ACK: usize = 1000;

pub async fn handle(
    state: &ServerState,
    session: &Session,
    ids: Vec<MessageId>,
) -> Result<Response, ApiError> {
    let user = session.user()?;
    if ids.len() > MAX_ACK {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("acknowledge at most {MAX_ACK} ids at a time"),
        ));
    }
    let deleted = state.router.ack(user, &ids).await?;
    Ok(Response::Acked { deleted })
}
