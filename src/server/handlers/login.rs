//! `login`: prove possession of the registered key for this connection.

use super::{ApiError, home_user, parse_phone};
use crate::auth::proof;
use crate::crypto::{PublicKey, Purpose};
use crate::protocol::{ErrorCode, Response};
use crate::server::ServerState;
use crate::server::session::Session;

pub async fn handle(
    state: &ServerState,
    session: &mut Session,
    phone: &str,
    signature: Vec<u8>,
) -> Result<Response, ApiError> {
    session.refuse_if_logged_in()?;
    let phone = parse_phone(phone)?;
    let nonce = session.take_nonce()?;
    let user = home_user(state, &phone).await?;
    let key = PublicKey::from_spki_der_typed(user.info.key_type, &user.info.public_key.0)
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("stored key unusable: {e}")))?;
    proof::check(
        Purpose::Login,
        session.exporter,
        nonce,
        &phone,
        key,
        signature,
    )
    .await?;
    if state.router.is_disabled(&phone).await? {
        return Err(ApiError::new(
            ErrorCode::AccountDisabled,
            format!("{phone} has been disabled by this server's operator"),
        ));
    }
    let account = user.info.fingerprint.clone();
    session
        .log_in(&state.router, phone.clone(), 0, account, None)
        .await?;
    let queued = state.router.waiting(&phone, 0).await?;
    Ok(Response::LoggedIn {
        phone: phone.to_string(),
        device: None,
        fingerprint: user.info.fingerprint.clone(),
        queued,
    })
}
