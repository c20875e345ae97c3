//! `claim`: one-time prekeys of some of a user's devices, each handed out
//! once (docs/PROTOCOL.md §5.2).

use super::{ApiError, parse_phone};
use crate::protocol::{B64, Response};
use crate::server::ServerState;
use crate::server::session::Session;

pub async fn handle(
    state: &ServerState,
    session: &Session,
    phone: &str,
    devices: &[u32],
) -> Result<Response, ApiError> {
    let user = session.user()?;
    let phone = parse_phone(phone)?;
    let claims = state.router.claim(user, &phone, devices).await?;
    Ok(Response::Claimed {
        claims: claims.into_iter().map(B64).collect(),
    })
}
