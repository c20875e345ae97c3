//! `verify`: finish registration with the code and a proof of possession of
//! the key being registered. On success the session is logged in.

use super::{ApiError, parse_phone};
use crate::auth::otp::PendingKey;
use crate::auth::proof::{self, NONCE_LEN};
use crate::crypto::{PublicKey, Purpose};
use crate::domain::PhoneNumber;
use crate::protocol::{B64, ErrorCode, Response, UserInfo};
use crate::server::ServerState;
use crate::server::session::Session;

pub async fn handle(
    state: &ServerState,
    session: &mut Session,
    phone: &str,
    code: &str,
    signature: Vec<u8>,
) -> Result<Response, ApiError> {
    session.refuse_if_logged_in()?;
    let phone = parse_phone(phone)?;
    let nonce = session.take_nonce()?;
    if state.router.is_disabled(&phone).await? {
        return Err(ApiError::new(
            ErrorCode::AccountDisabled,
            format!("{phone} has been disabled by this server's operator"),
        ));
    }
    let (pending, key) = proven_key(state, session, nonce, &phone, signature).await?;
    let fingerprint = key.fingerprint().to_hex();
    // Registering logs this session in: better refused before the code
    // is spent than after. Only the sessions under the key proved count:
    // those under another key close when it replaces it, so a stolen old
    // device holding every session cannot keep the owner out.
    state.router.session_room(&phone, &fingerprint)?;
    let (replaced, registered_at) = state.otp.redeem(&phone, code, &pending.spki).await?;
    let info = UserInfo {
        phone: phone.to_string(),
        key_type: pending.key_type,
        public_key: B64(pending.spki),
        fingerprint: fingerprint.clone(),
        registered_at,
        devices: None,
    };
    state
        .router
        .publish_local(state.local_entry(phone.clone(), info))
        .await?;
    tracing::info!(%phone, replaced, "user registered");
    if replaced {
        // The old key's devices are gone; so are their sessions.
        state.router.close_replaced(&phone);
        session
            .log_in_new_key(&state.router, phone.clone(), fingerprint.clone())
            .await?;
    } else {
        session
            .log_in(&state.router, phone.clone(), 0, fingerprint.clone(), None)
            .await?;
    }
    Ok(Response::Registered {
        phone: phone.to_string(),
        fingerprint,
        replaced_key: replaced,
    })
}

/// The pending key whose possession `signature` proves. Several keys may
/// be pending for one phone (anyone may ask for a code for any phone); the
/// proof tells which one this client holds, so another's request for the
/// same phone cannot get in its way.
async fn proven_key(
    state: &ServerState,
    session: &Session,
    nonce: [u8; NONCE_LEN],
    phone: &PhoneNumber,
    signature: Vec<u8>,
) -> Result<(PendingKey, PublicKey), ApiError> {
    let mut candidates = Vec::new();
    for pending in state.otp.pending_keys(phone).await? {
        // A stored key that no longer parses can prove nothing.
        if let Ok(key) = PublicKey::from_spki_der_typed(pending.key_type, &pending.spki) {
            candidates.push((pending, key));
        }
    }
    let keys = candidates.iter().map(|(_, key)| key.clone()).collect();
    let purpose = Purpose::Register;
    let found = proof::find(purpose, session.exporter, nonce, phone, keys, signature).await?;
    Ok(candidates.swap_remove(found))
}
