//! Carrying out one [`Request`] against a store, and, when the server runs,
//! its router.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use super::{AdminError, LinkState, Reply, Request, Status, UserSummary};
use crate::clock::Clock;
use crate::db::Store;
use crate::db::admin::QueueDepth;
use crate::db::directory::WithdrawalRow;
use crate::domain::PhoneNumber;
use crate::routing::Router;

/// What a request runs against.
pub struct Context {
    pub store: Store,
    pub clock: Clock,
    pub data_dir: PathBuf,
    /// The configured neighbours (a reload of a running server changes them).
    pub neighbours: crate::link::Configured,
    /// The running server's parts; `None` for a stopped server.
    pub live: Option<Live>,
}

/// A running server's router and start time.
#[derive(Clone)]
pub struct Live {
    pub router: Arc<Router>,
    pub started: Instant,
    /// Signs with the server's key (withdrawals of deleted users).
    pub sign: Signer,
}

/// A signature by the server's long-term key over a statement's bytes.
pub type Signer = Arc<dyn Fn(&[u8]) -> Vec<u8> + Send + Sync>;

/// Carries out `request`.
pub async fn execute(cx: &Context, request: Request) -> Result<Reply, AdminError> {
    match request {
        Request::Status => status(cx).await.map(Reply::Status),
        Request::UsersList => users(cx).await.map(Reply::Users),
        Request::UsersShow { phone } => {
            let phone = parse_phone(&phone)?;
            let found = users(cx)
                .await?
                .into_iter()
                .find(|u| u.phone == phone.as_str());
            found.map(Reply::User).ok_or_else(|| not_registered(&phone))
        }
        Request::UsersDelete { phone } => delete(cx, &parse_phone(&phone)?).await,
        Request::UsersDisable { phone } => set_disabled(cx, &parse_phone(&phone)?, true).await,
        Request::UsersEnable { phone } => set_disabled(cx, &parse_phone(&phone)?, false).await,
        Request::OtpReset { phone } => {
            let phone = parse_phone(&phone)?;
            let removed = cx.store.otp_reset(&phone).await?;
            Ok(done(if removed == 0 {
                format!("{phone} had no pending code or code counters")
            } else {
                format!("Reset the pending code and code counters of {phone}")
            }))
        }
        Request::QueueStats => Ok(Reply::Queues(cx.store.queue_depths().await?)),
        Request::QueuePurge { phone } => {
            let phone = parse_phone(&phone)?;
            let purged = cx.store.purge_queue(&phone).await?;
            Ok(done(format!(
                "Purged {purged} messages waiting for {phone}"
            )))
        }
        Request::Links => links(cx).await.map(Reply::Links),
        Request::PinsList => Ok(Reply::Pins(cx.store.pins().await?)),
        Request::PinsForget { address } => {
            if cx.store.forget_pin(&address).await? {
                Ok(done(format!(
                    "Forgot the key pinned for {address}; its next contact pins a new one"
                )))
            } else {
                Err(AdminError::Refused(format!(
                    "no key is pinned for {address}"
                )))
            }
        }
        Request::Backup { file } => super::backup::backup(cx, &file).await.map(done),
    }
}

fn done(sentence: String) -> Reply {
    Reply::Done(sentence)
}

fn parse_phone(phone: &str) -> Result<PhoneNumber, AdminError> {
    PhoneNumber::parse(phone).map_err(|e| AdminError::Refused(format!("{phone}: {e}")))
}

fn not_registered(phone: &PhoneNumber) -> AdminError {
    AdminError::Refused(format!("{phone} is not registered on this server"))
}

async fn status(cx: &Context) -> Result<Status, AdminError> {
    let users = cx.store.users().await?;
    let queues = cx.store.queue_depths().await?;
    Ok(Status {
        version: env!("CARGO_PKG_VERSION").into(),
        running: cx.live.is_some(),
        uptime_secs: cx.live.as_ref().map(|l| l.started.elapsed().as_secs()),
        users: users.len(),
        disabled_users: cx.store.disabled_users().await?.len(),
        sessions: cx.live.as_ref().map(|l| l.router.session_count()),
        queued_messages: queues.iter().map(|q| q.messages).sum(),
        queued_bytes: queues.iter().map(|q| q.bytes).sum(),
        links: links(cx).await?,
    })
}

async fn users(cx: &Context) -> Result<Vec<UserSummary>, AdminError> {
    let disabled = cx.store.disabled_users().await?;
    let queues = cx.store.queue_depths().await?;
    let rows = cx.store.users().await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let queue = queues.iter().find(|q| q.owner == row.phone);
            let sessions = cx.live.as_ref().and_then(|l| {
                let phone = PhoneNumber::from_canonical(&row.phone).ok()?;
                Some(l.router.sessions_of(&phone))
            });
            UserSummary {
                disabled: disabled.contains(&row.phone),
                queued_messages: queue.map_or(0, |q| q.messages),
                queued_bytes: queue.map_or(0, |q| q.bytes),
                sessions,
                phone: row.phone,
                key_type: row.key_type,
                fingerprint: row.fingerprint,
                registered_at: row.registered_at,
            }
        })
        .collect())
}

/// Deletes the user and withdraws their directory entry: recorded here
/// first, signed and flooded at once by a running server, or at the next
/// start by a stopped one.
async fn delete(cx: &Context, phone: &PhoneNumber) -> Result<Reply, AdminError> {
    let Some(user) = cx.store.user(phone).await? else {
        return Err(not_registered(phone));
    };
    // The withdrawal is recorded before the user is deleted: a crash in
    // between leaves a user the operator can delete again, never a deleted
    // user whose entry the neighbourhood keeps.
    let withdrawal = WithdrawalRow {
        phone: phone.as_str().to_owned(),
        registered_at: user.registered_at,
        withdrawn_at: cx.clock.now_ms(),
        home_key: Vec::new(),
        signature: Vec::new(),
    };
    cx.store.store_withdrawal(&withdrawal, false).await?;
    if !cx.store.delete_user(phone).await? {
        return Err(not_registered(phone));
    }
    let flooded = match &cx.live {
        Some(live) => {
            live.router.remove_local_user(phone, true);
            live.router.publish_withdrawals(&*live.sign).await?;
            "withdrew their directory entry from the neighbourhood"
        }
        None => "their directory entry is withdrawn from the neighbourhood at the next start",
    };
    tracing::info!(%phone, "user deleted by the operator");
    Ok(done(format!(
        "Deleted {phone} with their queues, devices and pending codes; {flooded}"
    )))
}

async fn set_disabled(
    cx: &Context,
    phone: &PhoneNumber,
    disabled: bool,
) -> Result<Reply, AdminError> {
    if cx.store.user(phone).await?.is_none() {
        return Err(not_registered(phone));
    }
    let changed = cx
        .store
        .set_disabled(phone, disabled, cx.clock.now_ms())
        .await?;
    if disabled && let Some(live) = &cx.live {
        live.router.remove_local_user(phone, false);
    }
    let what = if disabled { "disabled" } else { "enabled" };
    if changed {
        tracing::info!(%phone, "user {what} by the operator");
        Ok(done(format!("{phone} is now {what}")))
    } else {
        Ok(done(format!("{phone} was already {what}")))
    }
}

/// Every neighbour worth showing: configured ones, pinned ones and those
/// with messages waiting, merged by fingerprint or address.
async fn links(cx: &Context) -> Result<Vec<LinkState>, AdminError> {
    let pins = cx.store.pins().await?;
    let outbound = cx.store.outbound_depths().await?;
    let mut links: Vec<LinkState> = Vec::new();
    for n in &cx.neighbours.get() {
        let fingerprint = n.fingerprint.map(|f| f.to_hex()).or_else(|| {
            pins.iter()
                .find(|p| p.address == n.address)
                .map(|p| p.fingerprint.clone())
        });
        links.push(link(Some(n.address.clone()), fingerprint));
    }
    for pin in &pins {
        if !links
            .iter()
            .any(|l| l.address.as_deref() == Some(&pin.address))
        {
            links.push(link(
                Some(pin.address.clone()),
                Some(pin.fingerprint.clone()),
            ));
        }
    }
    let now = cx.clock.now_ms();
    for depth in outbound {
        let at = match links
            .iter()
            .position(|l| l.fingerprint.as_deref() == Some(&depth.owner))
        {
            Some(at) => at,
            None => {
                links.push(link(None, Some(depth.owner.clone())));
                links.len() - 1
            }
        };
        fill(&mut links[at], &depth, now);
    }
    if let Some(live) = &cx.live {
        let up: Vec<String> = live
            .router
            .linked_neighbours()
            .iter()
            .map(|f| f.to_hex())
            .collect();
        for l in &mut links {
            l.up = Some(l.fingerprint.as_ref().is_some_and(|f| up.contains(f)));
        }
    }
    Ok(links)
}

fn link(address: Option<String>, fingerprint: Option<String>) -> LinkState {
    LinkState {
        fingerprint,
        address,
        up: None,
        outbound_messages: 0,
        outbound_bytes: 0,
        oldest_age_secs: None,
    }
}

fn fill(link: &mut LinkState, depth: &QueueDepth, now: i64) {
    link.outbound_messages = depth.messages;
    link.outbound_bytes = depth.bytes;
    link.oldest_age_secs = Some((now - depth.oldest_at).max(0) / 1000);
}
