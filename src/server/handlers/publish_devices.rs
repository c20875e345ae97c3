//! `publish_devices`: store the account's new signed device list with a
//! certificate per listed device (docs/PROTOCOL.md §5.2). Devices left
//! off lose their queue and prekeys, and their sessions end.

use super::ApiError;
use crate::protocol::{B64, Response};
use crate::server::ServerState;
use crate::server::session::Session;

pub async fn handle(
    state: &ServerState,
    session: &Session,
    list: B64,
    certificates: Vec<B64>,
) -> Result<Response, ApiError> {
    let user = session.user()?;
    let certificates = certificates.into_iter().map(|c| c.0).collect();
    let version = state
        .router
        .publish_devices(user, list.0, certificates)
        .await?;
    Ok(Response::DevicesPublished { version })
}
