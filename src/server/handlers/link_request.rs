//! `link_request`: a new device, not logged in, asks through a rendezvous
//! to be linked (docs/PROTOCOL.md §5.5). Its answer, `linked`, comes
//! when the opening session accepts, so nothing is answered now.

use super::{ApiError, parse_phone};
use crate::protocol::B64;
use crate::server::ServerState;
use crate::server::session::Session;

pub fn handle(
    state: &ServerState,
    session: &Session,
    seq: Option<u64>,
    phone: &str,
    rendezvous: &B64,
    request: B64,
) -> Result<(), ApiError> {
    let phone = parse_phone(phone)?;
    let outbox = session.outbox.clone();
    state
        .router
        .link_request(&phone, &rendezvous.0, request.0, outbox, seq)?;
    Ok(())
}
