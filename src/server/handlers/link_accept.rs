//! `link_accept`: the opening session's sealed answer to a link request,
//! passed to the new device (docs/PROTOCOL.md §5.5).

use super::ApiError;
use crate::protocol::{B64, Response};
use crate::server::ServerState;
use crate::server::session::Session;

pub fn handle(
    state: &ServerState,
    session: &Session,
    rendezvous: &B64,
    response: B64,
) -> Result<Response, ApiError> {
    let user = session.user()?;
    state.router.link_accept(user, &rendezvous.0, response.0)?;
    Ok(Response::LinkAccepted)
}
