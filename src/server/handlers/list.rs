//! `list`: the users of the neighbourhood, their keys' fingerprints, home
//! servers, and whether they are connected now, a page at a time in phone
//! order, so that no answer outgrows the 4 MiB response frame however large
//! the neighbourhood.

use super::ApiError;
use crate::domain::PhoneNumber;
use crate::protocol::{ErrorCode, Response};
use crate::server::ServerState;
use crate::server::session::Session;

/// Users in one page: the default and the most a client may ask for. A
/// listed user takes at most about 1 800 bytes of JSON (a 255-byte home
/// name escaped in full), so a page stays under 2 MiB.
const MAX_LIST: u32 = 1000;

pub fn handle(
    state: &ServerState,
    session: &Session,
    after: Option<String>,
    limit: Option<u32>,
) -> Result<Response, ApiError> {
    session.user()?;
    let after = after.as_deref().map(parse_after).transpose()?;
    let limit = match limit.unwrap_or(MAX_LIST) {
        n @ 1..=MAX_LIST => n as usize,
        n => {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                format!("\"limit\" must be 1 to {MAX_LIST}, not {n}"),
            ));
        }
    };
    let (users, more) = state.router.list(after.as_ref(), limit);
    let next = if more {
        users.last().map(|u| u.phone.clone())
    } else {
        None
    };
    Ok(Response::Users { users, next })
}

/// `after` is a phone exactly as an earlier answer wrote it (E.164).
fn parse_after(after: &str) -> Result<PhoneNumber, ApiError> {
    PhoneNumber::from_canonical(after).map_err(|_| {
        ApiError::new(
            ErrorCode::BadRequest,
            "\"after\" must be a phone in E.164 form, as an earlier answer's \"next\"",
        )
    })
}
