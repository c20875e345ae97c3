//! `lookup`: a registered user's public key, for sealing to them. Only
//! logged-in users may look others up, so the directory is not an open
//! oracle of who uses Carrier.

use super::{ApiError, parse_phone};
use crate::protocol::{ErrorCode, Response};
use crate::server::ServerState;
use crate::server::session::Session;

pub async fn handle(
    state: &ServerState,
    session: &Session,
    phone: &str,
) -> Result<Response, ApiError> {
    session.user()?;
    let phone = parse_phone(phone)?;
    let user = state.router.user(&phone).await.ok_or_else(|| {
        ApiError::new(
            ErrorCode::UnknownUser,
            format!("no user is registered with the number {phone}"),
        )
    })?;
    Ok(Response::User(user.info.clone()))
}
