//! `device_login`: prove possession of a listed device's key for this
//! connection (docs/PROTOCOL.md §5.1). The session then reaches that
//! device's queue.

use super::{ApiError, home_user, parse_phone};
use crate::auth::proof;
use crate::crypto::v2::DeviceId;
use crate::protocol::{ErrorCode, Response};
use crate::server::ServerState;
use crate::server::session::Session;

pub async fn handle(
    state: &ServerState,
    session: &mut Session,
    phone: &str,
    device: u32,
    signature: &[u8],
) -> Result<Response, ApiError> {
    session.refuse_if_logged_in()?;
    let phone = parse_phone(phone)?;
    let nonce = session.take_nonce()?;
    let user = home_user(state, &phone).await?;
    let unknown = || {
        ApiError::new(
            ErrorCode::UnknownDevice,
            format!("{phone} has no device {device} in its current list"),
        )
    };
    let id = DeviceId::new(device).map_err(|_| unknown())?;
    let key = state
        .router
        .device_key(&phone, device)
        .await?
        .ok_or_else(unknown)?;
    proof::check_device(&session.exporter, &nonce, &phone, id, &key, signature)?;
    if state.router.is_disabled(&phone).await? {
        return Err(ApiError::new(
            ErrorCode::AccountDisabled,
            format!("{phone} has been disabled by this server's operator"),
        ));
    }
    let account = user.info.fingerprint.clone();
    session
        .log_in(&state.router, phone.clone(), device, account, Some(&key))
        .await?;
    state.router.device_seen(&phone, device).await?;
    let queued = state.router.waiting(&phone, device).await?;
    Ok(Response::LoggedIn {
        phone: phone.to_string(),
        device: Some(device),
        fingerprint: user.info.fingerprint.clone(),
        queued,
    })
}
