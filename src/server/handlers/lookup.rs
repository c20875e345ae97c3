//! `lookup`: a registered user's public key, for sealing to them, and for
//! a local user with devices, their current list and bundles. Only
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
    let mut info = user.info.clone();
    info.devices = state.router.current_devices(&phone).await?;
    Ok(Response::User(info))
}
