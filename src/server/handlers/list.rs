//! `list`: the users of the neighbourhood, their keys' fingerprints, home
//! servers, and whether they are connected now.

use super::ApiError;
use crate::protocol::Response;
use crate::server::ServerState;
use crate::server::session::Session;

pub fn handle(state: &ServerState, session: &Session) -> Result<Response, ApiError> {
    session.user()?;
    Ok(Response::Users {
        users: state.router.list(),
    })
}
