//! Link codes' rendezvous (docs/PROTOCOL.md §16, §5.5): a device
//! holding the account key opens a rendezvous id for 10 minutes; a new
//! device, not logged in, sends its sealed link request to it, which is
//! pushed to the opening session; that session's sealed answer goes back
//! to the new device as the answer to its request, and the rendezvous is
//! gone. The opening session may instead refuse (it cannot complete the
//! link, say the account is full): the new device is told `no_link` at
//! once rather than at the expiry. The server only passes opaque bytes along: it never sees the code
//! or the link key, so it can neither read nor forge either side.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use super::registry::SessionLink;
use super::{RouteError, Router};
use crate::domain::PhoneNumber;
use crate::protocol::{B64, ErrorCode, Outbox, Response, ResponseFrame};

/// How long an opened rendezvous waits for its new device.
pub const LINK_CODE_TTL_MS: i64 = 10 * 60_000;
/// Length of a rendezvous id.
const RENDEZVOUS_LEN: usize = 16;
/// Largest sealed link request or response (a certificate, a list and an
/// RSA-4096 account key's PKCS#8 with room to spare).
pub const MAX_LINK_MESSAGE: usize = 16 * 1024;
/// Rendezvous one account may hold open at once.
const MAX_OPEN_PER_ACCOUNT: usize = 4;

type RendezvousId = [u8; RENDEZVOUS_LEN];

/// One open rendezvous.
struct Open {
    phone: PhoneNumber,
    opener: SessionLink,
    expires_at: i64,
    /// The new device's connection and request number, once it asked.
    requester: Option<(Outbox, Option<u64>)>,
}

/// Open rendezvous by id. A std mutex: nothing awaits while it is held.
#[derive(Default)]
pub(super) struct Rendezvous {
    open: Mutex<HashMap<RendezvousId, Open>>,
}

impl Rendezvous {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RendezvousId, Open>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn rendezvous_id(bytes: &[u8]) -> Result<RendezvousId, RouteError> {
    bytes
        .try_into()
        .map_err(|_| RouteError::BadLink("a rendezvous id is 16 bytes"))
}

fn check_size(bytes: &[u8]) -> Result<(), RouteError> {
    if bytes.len() > MAX_LINK_MESSAGE {
        return Err(RouteError::BadLink(
            "a sealed link message is at most 16384 bytes",
        ));
    }
    Ok(())
}

impl Router {
    /// Opens a rendezvous for the session's account; returns how many
    /// seconds it stays open.
    pub fn link_open(&self, session: &SessionLink, rendezvous: &[u8]) -> Result<u64, RouteError> {
        let id = rendezvous_id(rendezvous)?;
        let now = self.clock.now_ms();
        let mut open = self.rendezvous.lock();
        open.retain(|_, o| o.expires_at > now);
        let mine = open
            .values()
            .filter(|o| &o.phone == session.phone())
            .count();
        if mine >= MAX_OPEN_PER_ACCOUNT {
            return Err(RouteError::TooMany {
                what: "open link codes",
                max: MAX_OPEN_PER_ACCOUNT,
            });
        }
        if open.contains_key(&id) {
            return Err(RouteError::BadLink("this rendezvous is already open"));
        }
        open.insert(
            id,
            Open {
                phone: session.phone().clone(),
                opener: session.clone(),
                expires_at: now + LINK_CODE_TTL_MS,
                requester: None,
            },
        );
        Ok((LINK_CODE_TTL_MS / 1000) as u64)
    }

    /// Passes a new device's sealed request to the session that opened
    /// the rendezvous. The answer to request `seq` is written to `outbox`
    /// once that session accepts, or `no_link` when the rendezvous expires
    /// first.
    pub fn link_request(
        self: &Arc<Self>,
        phone: &PhoneNumber,
        rendezvous: &[u8],
        request: Vec<u8>,
        outbox: Outbox,
        seq: Option<u64>,
    ) -> Result<(), RouteError> {
        let id = rendezvous_id(rendezvous)?;
        check_size(&request)?;
        let now = self.clock.now_ms();
        let expires_at = {
            let mut open = self.rendezvous.lock();
            let entry = open
                .get_mut(&id)
                .filter(|o| o.expires_at > now && &o.phone == phone && o.requester.is_none())
                .ok_or(RouteError::NoLink)?;
            entry.requester = Some((outbox, seq));
            let pushed = Response::LinkRequested {
                rendezvous: B64(id.to_vec()),
                request: B64(request),
            };
            entry.opener.offer(&frame(None, pushed));
            entry.expires_at
        };
        let router = Arc::downgrade(self);
        let wait = Duration::from_millis((expires_at - now).max(0) as u64);
        tokio::spawn(expire(router, id, wait));
        Ok(())
    }

    /// Sends the opening session's sealed answer to the new device and
    /// closes the rendezvous.
    pub fn link_accept(
        &self,
        session: &SessionLink,
        rendezvous: &[u8],
        response: Vec<u8>,
    ) -> Result<(), RouteError> {
        let id = rendezvous_id(rendezvous)?;
        check_size(&response)?;
        let now = self.clock.now_ms();
        let mut open = self.rendezvous.lock();
        let waiting = open.get(&id).is_some_and(|o| {
            o.expires_at > now && &o.phone == session.phone() && o.requester.is_some()
        });
        if !waiting {
            return Err(RouteError::NoLink);
        }
        let entry = open.remove(&id).expect("checked above");
        if let Some((outbox, seq)) = entry.requester {
            let linked = Response::Linked {
                response: B64(response),
            };
            let _ = outbox.try_send(frame(seq, linked));
        }
        Ok(())
    }

    /// Closes a rendezvous the opening session will not complete; a new
    /// device waiting on it is answered `no_link` now, not at the expiry.
    pub fn link_refuse(&self, session: &SessionLink, rendezvous: &[u8]) -> Result<(), RouteError> {
        let id = rendezvous_id(rendezvous)?;
        let now = self.clock.now_ms();
        let mut open = self.rendezvous.lock();
        let mine = open
            .get(&id)
            .is_some_and(|o| o.expires_at > now && &o.phone == session.phone());
        if !mine {
            return Err(RouteError::NoLink);
        }
        let entry = open.remove(&id).expect("checked above");
        if let Some((outbox, seq)) = entry.requester {
            let refused = no_link(
                "the device that showed the link code could not complete the link and \
                 refused it (it says why); nothing was linked",
            );
            let _ = outbox.try_send(frame(seq, refused));
        }
        Ok(())
    }
}

/// The answer to a waiting `link_request` that will not be linked.
fn no_link(message: &str) -> Response {
    Response::Error {
        code: ErrorCode::NoLink,
        message: message.into(),
        retry_after_ms: None,
        devices: None,
    }
}

/// Ends a requested rendezvous nobody accepted in time: its new device is
/// told `no_link`.
async fn expire(router: Weak<Router>, id: RendezvousId, wait: Duration) {
    tokio::time::sleep(wait).await;
    let Some(router) = router.upgrade() else {
        return;
    };
    let Some(entry) = router.rendezvous.lock().remove(&id) else {
        return;
    };
    if let Some((outbox, seq)) = entry.requester {
        let refused = no_link("the link code expired before it was accepted; make a new one");
        let _ = outbox.try_send(frame(seq, refused));
    }
}

fn frame(re: Option<u64>, response: Response) -> Vec<u8> {
    serde_json::to_vec(&ResponseFrame { re, response }).expect("a response always serialises")
}
