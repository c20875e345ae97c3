//! `send`: queue a sealed envelope for its recipient. The answer (`accepted`)
//! is sent only after the commit, by the connection, so the session can read
//! its next request meanwhile.

use super::ApiError;
use crate::domain::MessageId;
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
    let (sender, _) = session.user()?;
    Ok(state.router.accept(sender, id, to, envelope).await?)
}
