//! One file per request kind; [`dispatch`] is the one closed `match` that
//! routes a decoded request to its handler.

mod ack;
mod broadcast;
mod challenge;
mod claim;
mod device_login;
mod device_send;
mod devices;
mod fetch;
mod link_accept;
mod link_open;
mod link_refuse;
mod link_request;
mod list;
mod login;
mod lookup;
mod publish_devices;
mod publish_prekeys;
mod register;
mod send;
mod verify;

use super::ServerState;
use super::error::ApiError;
use super::session::Session;
use crate::domain::{MessageId, PhoneNumber};
use crate::protocol::{ErrorCode, Request, Response};
use crate::routing::PendingSend;

/// What the connection does after a request.
pub enum Outcome {
    /// Answer now.
    Reply(Response),
    /// Answer once this message is committed; meanwhile read the next request.
    Deferred(MessageId, PendingSend),
    /// Answer, then close the connection.
    Close(Response),
    /// Nothing now: the answer is written to the connection later, by
    /// whoever completes the request (a link request, by the accepting
    /// session).
    Later,
}

impl From<Result<Response, ApiError>> for Outcome {
    fn from(r: Result<Response, ApiError>) -> Self {
        Outcome::Reply(r.unwrap_or_else(ApiError::into_response))
    }
}

/// Runs one request, numbered `seq` by the client.
pub async fn dispatch(
    state: &ServerState,
    session: &mut Session,
    seq: Option<u64>,
    request: Request,
) -> Outcome {
    match request {
        Request::Challenge => challenge::handle(session).into(),
        Request::Register {
            phone,
            key_type,
            public_key,
        } => register::handle(state, session, &phone, key_type, &public_key.0)
            .await
            .into(),
        Request::Verify {
            phone,
            code,
            signature,
        } => verify::handle(state, session, &phone, code.as_str(), signature.0)
            .await
            .into(),
        Request::Login { phone, signature } => login::handle(state, session, &phone, signature.0)
            .await
            .into(),
        Request::Lookup { phone } => lookup::handle(state, session, &phone).await.into(),
        Request::Send { .. } => Outcome::Reply(send::handle().into_response()),
        Request::Fetch { limit, after } => fetch::handle(state, session, limit, after).await.into(),
        Request::Ack { ids } => ack::handle(state, session, ids).await.into(),
        Request::List { after, limit } => list::handle(state, session, after, limit).into(),
        Request::Broadcast {
            id,
            sent_at,
            text,
            signature,
        } => broadcast::handle(state, session, id, sent_at, text, signature).into(),
        Request::PublishDevices { list, certificates } => {
            publish_devices::handle(state, session, list, certificates)
                .await
                .into()
        }
        Request::PublishPrekeys { prekeys } => publish_prekeys::handle(state, session, prekeys)
            .await
            .into(),
        Request::DeviceLogin {
            phone,
            device,
            signature,
        } => device_login::handle(state, session, &phone, device, &signature.0)
            .await
            .into(),
        Request::DeviceSend {
            id,
            to,
            device,
            list_version,
            envelope,
        } => {
            let sent =
                device_send::handle(state, session, id, &to, device, list_version, envelope.0);
            match sent.await {
                Ok(pending) => Outcome::Deferred(id, pending),
                Err(e) => Outcome::Reply(e.into_response()),
            }
        }
        Request::Claim { phone, devices } => {
            claim::handle(state, session, &phone, &devices).await.into()
        }
        Request::Devices => devices::handle(state, session).await.into(),
        Request::LinkOpen { rendezvous } => {
            link_open::handle(state, session, &rendezvous).await.into()
        }
        Request::LinkRequest {
            phone,
            rendezvous,
            request,
        } => match link_request::handle(state, session, seq, &phone, &rendezvous, request) {
            Ok(()) => Outcome::Later,
            Err(e) => Outcome::Reply(e.into_response()),
        },
        Request::LinkAccept {
            rendezvous,
            response,
        } => link_accept::handle(state, session, &rendezvous, response).into(),
        Request::LinkRefuse { rendezvous } => {
            link_refuse::handle(state, session, &rendezvous).into()
        }
        Request::Ping => Outcome::Reply(Response::Pong),
        Request::Quit => Outcome::Close(Response::Bye),
    }
}

/// The directory entry of `phone`, a user at home on this server. Anyone
/// else is `unknown_user`, and one at home on another server is told
/// which, so a client that logs in (with the account key or as a device)
/// learns where to go.
async fn home_user(
    state: &ServerState,
    phone: &PhoneNumber,
) -> Result<std::sync::Arc<crate::routing::directory::Entry>, ApiError> {
    let unknown = |message: String| ApiError::new(ErrorCode::UnknownUser, message);
    let user = state
        .router
        .user(phone)
        .await
        .ok_or_else(|| unknown(format!("{phone} is not registered here")))?;
    if user.via.is_some() {
        return Err(unknown(format!(
            "{phone} is registered on the server {}; connect to it",
            user.home_name
        )));
    }
    Ok(user)
}

/// Parses a phone number from a request, answering `invalid_phone`.
fn parse_phone(input: &str) -> Result<PhoneNumber, ApiError> {
    PhoneNumber::parse(input).map_err(|e| ApiError::new(ErrorCode::InvalidPhone, e.to_string()))
}
