//! `devices`: the logged-in account's device list, certificates and when
//! each device was last seen (docs/PROTOCOL.md §5.2).

use super::ApiError;
use crate::protocol::{ErrorCode, Response};
use crate::server::ServerState;
use crate::server::session::Session;

pub async fn handle(state: &ServerState, session: &Session) -> Result<Response, ApiError> {
    let user = session.user()?;
    let (device_list, certificates, last_seen) =
        state.router.own_devices(user).await?.ok_or_else(|| {
            ApiError::new(
                ErrorCode::UnknownDevice,
                "this account has no devices yet; publish a device list first",
            )
        })?;
    Ok(Response::Devices {
        device_list,
        certificates,
        last_seen,
    })
}
