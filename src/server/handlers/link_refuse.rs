//! `link_refuse`: the opening session will not complete a link; its
//! rendezvous closes and a waiting new device is told `no_link` at once
//! (docs/PROTOCOL.md §5.5).

use super::ApiError;
use crate::protocol::{B64, Response};
use crate::server::ServerState;
use crate::server::session::Session;

pub fn handle(
    state: &ServerState,
    session: &Session,
    rendezvous: &B64,
) -> Result<Response, ApiError> {
    let user = session.user()?;
    state.router.link_refuse(user, &rendezvous.0)?;
    Ok(Response::LinkRefused)
}
