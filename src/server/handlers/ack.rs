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
    let (phone, link) = session.user()?;
    if ids.len() > MAX_ACK {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("acknowledge at most {MAX_ACK} ids at a time"),
        ));
    }
    let owned: Vec<MessageId> = {
        let mut given = link.given().lock().unwrap_or_else(|p| p.into_inner());
        ids.into_iter().filter(|id| given.remove(id)).collect()
    };
    match state.router.ack(phone, owned.clone()).await {
        Ok(deleted) => Ok(Response::Acked { deleted }),
        Err(e) => {
            // Nothing was deleted: the client may acknowledge these again.
            let mut given = link.given().lock().unwrap_or_else(|p| p.into_inner());
            given.extend(owned);
            Err(e.into())
        }
    }
}
