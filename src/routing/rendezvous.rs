//! Link codes' rendezvous (docs/PROTOCOL.md §16, §5.5): a device
//! holding the account key opens a rendezvous id for 10 minutes; a new
//! device, not logged in, sends its sealed link request to it, which is
//! pushed to the opening session; that session's sealed answer goes back
//! to the new device as the answer to its request, and the rendezvous is
//! gone. The opening session may instead refuse (it cannot complete the
//! link, say the account is full): the new device is told `no_link` at
//! once rather than at the expiry. The server only passes opaque bytes along: it never sees the code
//! or the link key, so it can neither read nor forge either side.
//!
//! In a cluster the two devices may be connected to different members.
//! Each rendezvous is then also a row of the shared database
//! ([`crate::db::rendezvous`]): a request is claimed there (so a
//! rendezvous is asked through once, on whichever member), and the member
//! holding the opening session hears of it by notification, reads the
//! request and pushes it; the answer travels back the same way to the
//! member where the new device waits. A lone server (SQLite) keeps
//! everything in memory as before.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use super::registry::SessionLink;
use super::{RouteError, Router};
use crate::db::DbError;
use crate::db::rendezvous::LinkAnswer;
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
const _: () = assert!(MAX_OPEN_PER_ACCOUNT == 4, "the refusal's message names 4");

type RendezvousId = [u8; RENDEZVOUS_LEN];

/// One rendezvous opened by a session here.
struct Open {
    phone: PhoneNumber,
    opener: SessionLink,
    expires_at: i64,
    /// Who asked through it, once someone did.
    requester: Option<Requester>,
}

/// The new device that asked through a rendezvous.
enum Requester {
    /// Connected here: its connection and request number.
    Here(Outbox, Option<u64>),
    /// Connected to another member, which waits for the answer in the
    /// database.
    Elsewhere,
}

/// A new device connected here that asked through a rendezvous another
/// member opened: its connection and request number.
type Waiting = (Outbox, Option<u64>);

/// Open rendezvous by id, and the new devices here waiting on another
/// member's. Std mutexes: nothing awaits while one is held.
#[derive(Default)]
pub(super) struct Rendezvous {
    open: Mutex<HashMap<RendezvousId, Open>>,
    waiting: Mutex<HashMap<RendezvousId, Waiting>>,
}

impl Rendezvous {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RendezvousId, Open>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<RendezvousId, Waiting>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
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
    /// seconds it stays open. In a cluster the row is written before the
    /// answer, so a new device that asks at once (on any member) finds it.
    pub async fn link_open(
        &self,
        session: &SessionLink,
        rendezvous: &[u8],
    ) -> Result<u64, RouteError> {
        let id = rendezvous_id(rendezvous)?;
        let now = self.clock.now_ms();
        let expires_at = now + LINK_CODE_TTL_MS;
        self.open_here(id, session, expires_at, now)?;
        if self.store.is_shared() {
            let shared = self
                .store
                .rendezvous_open(&id, session.phone(), expires_at, now)
                .await;
            if !matches!(shared, Ok(true)) {
                self.rendezvous.lock().remove(&id);
            }
            if !shared? {
                return Err(RouteError::BadLink("this rendezvous is already open"));
            }
        }
        Ok((LINK_CODE_TTL_MS / 1000) as u64)
    }

    /// Records rendezvous `id` as opened by `session` on this server,
    /// within the per-account limit.
    fn open_here(
        &self,
        id: RendezvousId,
        session: &SessionLink,
        expires_at: i64,
        now: i64,
    ) -> Result<(), RouteError> {
        let mut open = self.rendezvous.lock();
        open.retain(|_, o| o.expires_at > now);
        let mine = open
            .values()
            .filter(|o| &o.phone == session.phone())
            .count();
        if mine >= MAX_OPEN_PER_ACCOUNT {
            return Err(RouteError::BadLink(
                "this account has 4 link codes open already, the most it may hold at once; \
                 use one, or wait until one expires 10 minutes after it was made",
            ));
        }
        if open.contains_key(&id) {
            return Err(RouteError::BadLink("this rendezvous is already open"));
        }
        open.insert(
            id,
            Open {
                phone: session.phone().clone(),
                opener: session.clone(),
                expires_at,
                requester: None,
            },
        );
        Ok(())
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
        if self.store.is_shared() {
            tokio::spawn(
                self.clone()
                    .request_shared(id, phone.clone(), request, outbox, seq),
            );
            return Ok(());
        }
        let requester = Requester::Here(outbox, seq);
        let expires_at = self
            .offer_here(id, phone, request, requester)
            .ok_or(RouteError::NoLink)?;
        self.expire_later(id, expires_at);
        Ok(())
    }

    /// `link_request` in a cluster: claims the rendezvous in the database
    /// (so it is asked through once, whichever member the new device
    /// reached), then offers the request to the opening session if it is
    /// here, or waits for the member that holds it to answer.
    async fn request_shared(
        self: Arc<Self>,
        id: RendezvousId,
        phone: PhoneNumber,
        request: Vec<u8>,
        outbox: Outbox,
        seq: Option<u64>,
    ) {
        let now = self.clock.now_ms();
        let claimed = self
            .store
            .rendezvous_request(&id, &phone, &request, now)
            .await;
        let expires_at = match claimed {
            Ok(Some(expires_at)) => expires_at,
            Ok(None) => {
                let unknown = no_link(&RouteError::NoLink.to_string());
                let _ = outbox.try_send(frame(seq, unknown));
                return;
            }
            Err(e) => {
                let _ = outbox.try_send(frame(seq, unavailable(&e)));
                return;
            }
        };
        let requester = Requester::Here(outbox.clone(), seq);
        if self.offer_here(id, &phone, request, requester).is_none() {
            self.rendezvous.waiting().insert(id, (outbox, seq));
        }
        self.expire_later(id, expires_at);
    }

    /// Pushes a request to the session here that opened rendezvous `id`
    /// for `phone`, if there is one and nobody asked yet; returns when
    /// the rendezvous expires.
    fn offer_here(
        &self,
        id: RendezvousId,
        phone: &PhoneNumber,
        request: Vec<u8>,
        requester: Requester,
    ) -> Option<i64> {
        let now = self.clock.now_ms();
        let mut open = self.rendezvous.lock();
        let entry = open
            .get_mut(&id)
            .filter(|o| o.expires_at > now && &o.phone == phone && o.requester.is_none())?;
        entry.requester = Some(requester);
        let pushed = Response::LinkRequested {
            rendezvous: B64(id.to_vec()),
            request: B64(request),
        };
        entry.opener.offer(&frame(None, pushed));
        Some(entry.expires_at)
    }

    /// Ends rendezvous `id` at `expires_at` if it is still waiting then.
    fn expire_later(self: &Arc<Self>, id: RendezvousId, expires_at: i64) {
        let now = self.clock.now_ms();
        let router = Arc::downgrade(self);
        let wait = Duration::from_millis((expires_at - now).max(0) as u64);
        tokio::spawn(expire(router, id, wait));
    }

    /// Another member stored a request for rendezvous `id`: if it was
    /// opened here, its session is pushed the request.
    pub(super) async fn link_requested_elsewhere(&self, id: &[u8]) -> Result<(), DbError> {
        let Ok(id) = rendezvous_id(id) else {
            return Ok(());
        };
        if !self.rendezvous.lock().contains_key(&id) {
            return Ok(());
        }
        let Some((phone, request)) = self.store.rendezvous_asked(&id).await? else {
            return Ok(());
        };
        if let Ok(phone) = PhoneNumber::from_canonical(&phone) {
            self.offer_here(id, &phone, request, Requester::Elsewhere);
        }
        Ok(())
    }

    /// The opening device, on another member, answered rendezvous `id`:
    /// a new device waiting on it here gets the answer.
    pub(super) async fn link_answered_elsewhere(&self, id: &[u8]) -> Result<(), DbError> {
        let Ok(id) = rendezvous_id(id) else {
            return Ok(());
        };
        if !self.rendezvous.waiting().contains_key(&id) {
            return Ok(());
        }
        let Some(answer) = self.store.rendezvous_take_answer(&id).await? else {
            return Ok(());
        };
        let Some((outbox, seq)) = self.rendezvous.waiting().remove(&id) else {
            return Ok(());
        };
        let response = match answer {
            LinkAnswer::Linked(bytes) => Response::Linked {
                response: B64(bytes),
            },
            LinkAnswer::Refused => no_link(REFUSED),
        };
        let _ = outbox.try_send(frame(seq, response));
        Ok(())
    }

    /// Hands the opening device's answer to the new device: on its
    /// connection here, or through the database to the member it waits on.
    fn answer(&self, id: RendezvousId, requester: Option<Requester>, answer: LinkAnswer) {
        let shared = self.store.is_shared();
        match requester {
            Some(Requester::Here(outbox, seq)) => {
                let response = match answer {
                    LinkAnswer::Linked(bytes) => Response::Linked {
                        response: B64(bytes),
                    },
                    LinkAnswer::Refused => no_link(REFUSED),
                };
                let _ = outbox.try_send(frame(seq, response));
                if shared {
                    self.close_shared(id);
                }
            }
            Some(Requester::Elsewhere) => {
                let store = self.store.clone();
                tokio::spawn(async move {
                    if let Err(e) = store.rendezvous_answer(&id, &answer).await {
                        tracing::warn!(error = %e, "could not pass a link answer to another member");
                    }
                });
            }
            None if shared => self.close_shared(id),
            None => {}
        }
    }

    /// Deletes rendezvous `id` from the database, without waiting.
    fn close_shared(&self, id: RendezvousId) {
        let store = self.store.clone();
        tokio::spawn(async move {
            if let Err(e) = store.rendezvous_close(&id).await {
                tracing::debug!(error = %e, "could not close a link rendezvous");
            }
        });
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
        drop(open);
        self.answer(id, entry.requester, LinkAnswer::Linked(response));
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
        drop(open);
        self.answer(id, entry.requester, LinkAnswer::Refused);
        Ok(())
    }
}

/// What a new device is told when the opening device refused.
const REFUSED: &str = "the device that showed the link code could not complete the link and \
                       refused it (it says why); nothing was linked";
/// What a new device is told when its rendezvous expired unanswered.
const EXPIRED: &str = "the link code expired before it was accepted; make a new one";

/// The answer to a request the database could not take.
fn unavailable(e: &DbError) -> Response {
    Response::Error {
        code: ErrorCode::StorageUnavailable,
        message: format!("the link request could not be stored: {e}"),
        retry_after_ms: None,
        tries_left: None,
        devices: None,
    }
}

/// The answer to a waiting `link_request` that will not be linked.
fn no_link(message: &str) -> Response {
    Response::Error {
        code: ErrorCode::NoLink,
        message: message.into(),
        retry_after_ms: None,
        tries_left: None,
        devices: None,
    }
}

/// Ends a requested rendezvous nobody accepted in time: its new device is
/// told `no_link`.
/// In a cluster the member where the new device waits tells it, and the
/// row is deleted.
async fn expire(router: Weak<Router>, id: RendezvousId, wait: Duration) {
    tokio::time::sleep(wait).await;
    let Some(router) = router.upgrade() else {
        return;
    };
    let opened = router.rendezvous.lock().remove(&id);
    let waiting = router.rendezvous.waiting().remove(&id);
    let here = match opened.and_then(|o| o.requester) {
        Some(Requester::Here(outbox, seq)) => Some((outbox, seq)),
        Some(Requester::Elsewhere) | None => waiting,
    };
    if let Some((outbox, seq)) = here {
        let _ = outbox.try_send(frame(seq, no_link(EXPIRED)));
        if router.store.is_shared() {
            router.close_shared(id);
        }
    }
}

fn frame(re: Option<u64>, response: Response) -> Vec<u8> {
    serde_json::to_vec(&ResponseFrame { re, response }).expect("a response always serialises")
}
