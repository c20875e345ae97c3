//! `challenge`: a fresh nonce for the next `verify` or `login` proof.

use super::ApiError;
use crate::auth::proof;
use crate::protocol::{B64, Response};
use crate::server::session::Session;

pub fn handle(session: &mut Session) -> Result<Response, ApiError> {
    session.refuse_if_logged_in()?;
    let nonce = proof::fresh_nonce();
    session.nonce = Some(nonce);
    Ok(Response::Challenge {
        nonce: B64(nonce.to_vec()),
    })
}
