//! One dialer per configured neighbour: connect, pin or check its key, run
//! the link, and when it ends reconnect with exponential backoff and jitter,
//! capped at [`MAX_BACKOFF`]. Its token is cancelled at shutdown or when a
//! reload removes the neighbour, which also ends a link it dialled. The backoff starts over whenever a link to the
//! neighbour comes up, including one the neighbour opened.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::unreachable::Outage;
use super::{LinkContext, session};
use crate::config::NeighbourConfig;
use crate::domain::Fingerprint;
use crate::tls::{ConnectError, Pin};

/// First wait after a failed attempt.
const MIN_BACKOFF: Duration = Duration::from_millis(250);
/// A link that lasted this long counts as having worked.
const STABLE_LINK: Duration = Duration::from_secs(5);
/// Longest wait between attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(120);
/// How often a member of a cluster checks whether the member running a
/// neighbour's link is gone, so it can take the link over.
const TAKEOVER_CHECK: Duration = Duration::from_secs(2);

pub async fn run(n: NeighbourConfig, ctx: Arc<LinkContext>, shutdown: CancellationToken) {
    let mut backoff = MIN_BACKOFF;
    let mut outage = Outage::default();
    let mut known = n.fingerprint;
    if known.is_none() {
        known = ctx.router.neighbour_pin(&n.address).await.ok().flatten();
    }
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        if let Some(fp) = known
            && ctx.router.link_is_up(&fp)
        {
            wait_until_down(&ctx, fp, &shutdown).await;
            backoff = MIN_BACKOFF;
            continue;
        }
        // Another member of the cluster may run this link: wait for it to
        // go (its lock with it) rather than knock on the neighbour.
        let held = match known {
            Some(fp) => match ctx.holds.take(&ctx.router, fp).await {
                Some(held) => Some(held),
                None => {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(jitter(TAKEOVER_CHECK)) => continue,
                    }
                }
            },
            None => None,
        };
        let pin = known.map(Pin::Expect).unwrap_or(Pin::AcceptAny);
        // A reload that removes the neighbour cancels `shutdown`; a link
        // completed after that is not started.
        let connected = tokio::select! {
            _ = shutdown.cancelled() => return,
            connected = crate::tls::connect_link(&n.address, &ctx.key_der, pin) => connected,
        };
        match connected {
            Ok((_, fp)) if fp == ctx.router.me().fingerprint => {
                return tracing::error!(neighbour = %n.address,
                    "this neighbour address leads back to this server itself; not dialling it again");
            }
            Ok((stream, fp)) => {
                if let Some(down) = outage.reached(Instant::now()) {
                    tracing::info!(neighbour = %n.address, down_secs = down.as_secs(), "the neighbour is reachable again");
                }
                if known.is_none() {
                    pin_on_first_contact(&ctx, &n.address, fp).await;
                    known = Some(fp);
                }
                let me = ctx.router.me().fingerprint;
                let started = std::time::Instant::now();
                session::run(stream, fp, me, ctx.clone(), shutdown.clone()).await;
                // A link refused or dropped at once is a failure, not a
                // success: keep backing off instead of knocking in a loop.
                if started.elapsed() >= STABLE_LINK {
                    backoff = MIN_BACKOFF;
                }
            }
            Err(ConnectError::KeyChanged {
                expected,
                presented,
            }) => {
                tracing::error!(neighbour = %n.address, %expected, %presented,
                    "refused the neighbour: it presented an unexpected key (fix its fingerprint in the configuration if the change is legitimate)");
            }
            Err(e) => {
                tracing::debug!(neighbour = %n.address, error = %e, "cannot reach the neighbour");
                if let Some(down) = outage.failed(Instant::now()) {
                    warn_unreachable(&ctx, &n.address, known, down, &e).await;
                }
            }
        }
        drop(held);
        let up = known.map(|fp| ctx.router.watch_link(fp));
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(jitter(backoff)) => {}
            _ = reached_us(up) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// The warning an operator sees while a neighbour stays unreachable.
async fn warn_unreachable(
    ctx: &LinkContext,
    address: &str,
    fp: Option<Fingerprint>,
    down: Duration,
    error: &ConnectError,
) {
    let waiting = match fp {
        Some(fp) => ctx.router.outbound_waiting(&fp).await.unwrap_or(0),
        None => 0,
    };
    tracing::warn!(
        neighbour = %address,
        unreachable_secs = down.as_secs(),
        messages_waiting = waiting,
        %error,
        "a neighbour stays unreachable; messages for its users wait here until it is back"
    );
}

async fn pin_on_first_contact(ctx: &LinkContext, address: &str, fp: Fingerprint) {
    tracing::warn!(neighbour = %address, fingerprint = %fp, "pinned the neighbour's key on first contact");
    ctx.allow(fp);
    if let Err(e) = ctx.router.pin_neighbour(address, fp).await {
        tracing::error!(error = %e, "could not save the neighbour's pinned key");
    }
}

async fn wait_until_down(ctx: &LinkContext, fp: Fingerprint, shutdown: &CancellationToken) {
    let mut up = ctx.router.watch_link(fp);
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = up.wait_for(|up| !*up) => {}
    }
}

/// Resolves when the neighbour links to us while we wait to retry.
async fn reached_us(up: Option<tokio::sync::watch::Receiver<bool>>) {
    match up {
        Some(mut up) => {
            let _ = up.wait_for(|up| *up).await;
        }
        None => std::future::pending().await,
    }
}

/// Spreads retries over ±25% so restarted servers do not knock in step.
fn jitter(d: Duration) -> Duration {
    use rand::TryRng;
    let r = rand::rngs::SysRng.try_next_u32().unwrap_or(0);
    let factor = 0.75 + (r as f64 / u32::MAX as f64) * 0.5;
    d.mul_f64(factor)
}
