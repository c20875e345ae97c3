//! `link_open`: open a link code's rendezvous for a new device
//! (docs/PROTOCOL.md §5.5).

use super::ApiError;
use crate::protocol::{B64, Response};
use crate::server::ServerState;
use crate::server::session::Session;

pub async fn handle(
    state: &ServerState,
    session: &Session,
    rendezvous: &B64,
) -> Result<Response, ApiError> {
    let user = session.user()?;
    let expires_in_s = state.router.link_open(user, &rendezvous.0).await?;
    Ok(Response::LinkOpened { expires_in_s })
}
