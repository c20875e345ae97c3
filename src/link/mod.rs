//! Neighbour links: the listener for servers that reach us, one dialer per
//! configured neighbour, and the session that runs on each established link
//! (whichever side opened it). Links are mutual TLS 1.3; each server presents
//! its long-term key and pins the other's. In a cluster one member at a
//! time runs each neighbour's link ([`hold`]). A neighbour that stays
//! unreachable is reported at a falling rate (`unreachable`).

mod dial;
mod hold;
mod session;
mod unreachable;

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use zeroize::Zeroizing;

use crate::config::NeighbourConfig;
use crate::domain::Fingerprint;
use crate::routing::Router;

/// Most connections on the link port at once (handshaking or linked): a
/// neighbourhood has a handful of servers, and strangers must not be able
/// to take every file descriptor.
const MAX_LINK_CONNECTIONS: usize = 64;

/// What every link task shares.
pub struct LinkContext {
    pub router: Arc<Router>,
    /// Our long-term key (PKCS#8 DER), presented on every link.
    key_der: Zeroizing<Vec<u8>>,
    /// Servers allowed to link to us: configured fingerprints and pins.
    allowed: Arc<RwLock<HashSet<Fingerprint>>>,
    /// The neighbours whose links this member of a cluster may run.
    holds: hold::Holds,
}

impl LinkContext {
    fn allow(&self, fp: Fingerprint) {
        self.allowed
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(fp);
    }
}

/// Starts the link listener (if any) and a dialer per neighbour; their tasks
/// run on `tracker` until `shutdown` is cancelled.
pub async fn start(
    router: Arc<Router>,
    key_der: Zeroizing<Vec<u8>>,
    listener: Option<TcpListener>,
    neighbours: Vec<NeighbourConfig>,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) -> Result<(), crate::tls::TlsError> {
    let mut allowed = HashSet::new();
    for n in &neighbours {
        let pinned = match n.fingerprint {
            Some(fp) => Some(fp),
            None => router.neighbour_pin(&n.address).await.ok().flatten(),
        };
        allowed.extend(pinned);
    }
    let ctx = Arc::new(LinkContext {
        router,
        key_der,
        allowed: Arc::new(RwLock::new(allowed)),
        holds: hold::Holds::default(),
    });
    if let Some(listener) = listener {
        let config = crate::tls::link_server_config(&ctx.key_der, peer_check(&ctx))?;
        tracker.spawn(accept_loop(
            listener,
            config,
            ctx.clone(),
            shutdown.clone(),
            tracker.clone(),
        ));
    }
    for n in neighbours {
        tracker.spawn(dial::run(n, ctx.clone(), shutdown.clone()));
    }
    Ok(())
}

/// Accepts a server's client certificate only if its key is allowed; logs
/// any refusal so an operator sees which key knocked.
fn peer_check(ctx: &Arc<LinkContext>) -> crate::tls::PeerCheck {
    let allowed = ctx.allowed.clone();
    Arc::new(move |fp: &Fingerprint| {
        let ok = allowed
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(fp);
        if !ok {
            tracing::warn!(presented = %fp, "refused a server link: its key is not a configured or pinned neighbour");
        }
        ok
    })
}

async fn accept_loop(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    ctx: Arc<LinkContext>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_LINK_CONNECTIONS));
    let mut listener = crate::listen::Listener::new(listener, "link");
    let full = crate::telemetry::Throttle::new(crate::listen::WARN_EVERY);
    loop {
        let (tcp, peer_addr) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        // Past the limit a connection is closed at once, not left waiting.
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            if let Some(held_back) = full.ready() {
                tracing::warn!(held_back, peer = %peer_addr, "every link connection slot is taken; closing new ones");
            }
            continue;
        };
        let acceptor = acceptor.clone();
        let (ctx, shutdown) = (ctx.clone(), shutdown.clone());
        tracker.spawn(async move {
            let _permit = permit;
            let _ = tcp.set_nodelay(true);
            let stream = match crate::tls::accept(&acceptor, tcp, crate::tls::LINK_ALPN).await {
                Ok(s) => s,
                Err(e) => return tracing::info!(peer = %peer_addr, error = %e, "link not accepted"),
            };
            let Some(peer) = crate::tls::peer_fingerprint(stream.get_ref().1) else {
                return;
            };
            session::run(stream, peer, peer, ctx, shutdown).await;
        });
    }
}
