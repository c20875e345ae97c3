//! `publish_prekeys`: store prekeys of the logged-in device, each checked
//! against its key (docs/PROTOCOL.md §5.2).

use super::ApiError;
use crate::protocol::{B64, Response};
use crate::server::ServerState;
use crate::server::session::Session;

pub async fn handle(
    state: &ServerState,
    session: &Session,
    prekeys: Vec<B64>,
) -> Result<Response, ApiError> {
    let user = session.user()?;
    let prekeys = prekeys.into_iter().map(|p| p.0).collect();
    let pools = state.router.publish_prekeys(user, prekeys).await?;
    Ok(Response::PrekeysPublished {
        one_time: pools.one_time,
        kem_one_time: pools.kem_one_time,
    })
}
