//! `register`: start registration of a phone with a public key; the server
//! sends a one-time code through its configured channel.

use super::{ApiError, parse_phone};
use crate::crypto::PublicKey;
use crate::domain::ClientPrefix;
use crate::protocol::{ErrorCode, KeyType, Response};
use crate::server::ServerState;
use crate::server::session::Session;

pub async fn handle(
    state: &ServerState,
    session: &Session,
    phone: &str,
    key_type: KeyType,
    public_key: &[u8],
) -> Result<Response, ApiError> {
    session.refuse_if_logged_in()?;
    state.count_register(session.peer)?;
    let phone = parse_phone(phone)?;
    let key = PublicKey::from_spki_der_typed(key_type, public_key)
        .map_err(|e| ApiError::new(ErrorCode::InvalidKey, e.to_string()))?;
    let ttl_ms = state
        .otp
        .issue(
            &phone,
            key_type,
            &key.to_spki_der(),
            ClientPrefix::of(session.peer),
        )
        .await?;
    Ok(Response::CodeSent {
        phone: phone.to_string(),
        expires_in_s: (ttl_ms / 1000) as u64,
    })
}
