//! Neighbour links: the listener for servers that reach us, one dialer per
//! configured neighbour, and the session that runs on each established link
//! (whichever side opened it). Links are mutual TLS 1.3; each server presents
//! its long-term key and pins the other's. In a cluster one member at a
//! time runs each neighbour's link ([`hold`]). A neighbour that stays
//! unreachable is reported at a falling rate (`unreachable`). [`Links`] is
//! the running set, which a configuration reload changes one neighbour at a
//! time.

mod dial;
mod hold;
mod session;
mod unreachable;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use zeroize::Zeroizing;

use crate::config::NeighbourConfig;
use crate::domain::Fingerprint;
use crate::listen::Slot;
use crate::routing::Router;

/// Most connections on the link port at once (handshaking or linked): a
/// neighbourhood has a handful of servers, and strangers must not be able
/// to take every file descriptor. When all are taken, a new connection
/// closes the oldest one still in its handshake, so strangers cannot hold
/// them against a neighbour.
const MAX_LINK_CONNECTIONS: usize = 64;
/// Most connections on the link port from one address (an IPv4 address,
/// an IPv6 /64) still in their TLS handshake. A neighbour dials one link
/// at a time, so a few cover two dialling at once and a retry; a stranger
/// at one address then holds a few slots, not all of them, and a neighbour
/// dialling from its own address still gets in. Past it, a new connection
/// closes that address's oldest unfinished handshake. A connection stops
/// counting once its handshake has shown a configured key.
const MAX_HANDSHAKES_PER_ADDRESS: usize = 4;
/// How long the listener waits for a link's TLS handshake: neighbours are
/// servers, which finish in a few round trips, and every idle handshake
/// holds one of the port's slots until then.
const LINK_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

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

/// The configured neighbours now: set at start-up and by each reload, read
/// by the admin commands and the metrics.
#[derive(Clone, Default)]
pub struct Configured(Arc<RwLock<Vec<NeighbourConfig>>>);

impl Configured {
    pub fn new(neighbours: Vec<NeighbourConfig>) -> Self {
        Self(Arc::new(RwLock::new(neighbours)))
    }

    pub fn get(&self) -> Vec<NeighbourConfig> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, neighbours: Vec<NeighbourConfig>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = neighbours;
    }
}

/// The running links, as a reload changes them: each configured
/// neighbour's dialer runs under a token of its own, so one neighbour can
/// be dropped or added while every other link and session stays up.
pub struct Links {
    ctx: Arc<LinkContext>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    configured: Configured,
    /// Each dialer by the neighbour's address; a tokio mutex, so two
    /// reloads apply one after the other.
    dialers: tokio::sync::Mutex<HashMap<String, Dialer>>,
}

/// One neighbour's dialer: the configuration it runs with and its token.
struct Dialer {
    config: NeighbourConfig,
    stop: CancellationToken,
}

/// Starts the link listener (if any) and a dialer per configured neighbour;
/// their tasks run on `tracker` until `shutdown` is cancelled. The handle
/// returned adds and removes neighbours later ([`Links::reconcile`]).
pub async fn start(
    router: Arc<Router>,
    key_der: Zeroizing<Vec<u8>>,
    listener: Option<TcpListener>,
    configured: Configured,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) -> Result<Links, crate::tls::TlsError> {
    let neighbours = configured.get();
    let allowed = allowed_keys(&router, &neighbours).await;
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
    let links = Links {
        ctx,
        tracker: tracker.clone(),
        shutdown,
        configured,
        dialers: tokio::sync::Mutex::default(),
    };
    {
        let mut dialers = links.dialers.lock().await;
        for n in neighbours {
            links.spawn_dialer(&mut dialers, n);
        }
    }
    Ok(links)
}

/// The keys of `neighbours`: configured fingerprints, or the pins of
/// their addresses.
async fn allowed_keys(router: &Router, neighbours: &[NeighbourConfig]) -> HashSet<Fingerprint> {
    let mut allowed = HashSet::new();
    for n in neighbours {
        allowed.extend(key_of(router, n).await);
    }
    allowed
}

async fn key_of(router: &Router, n: &NeighbourConfig) -> Option<Fingerprint> {
    match n.fingerprint {
        Some(fp) => Some(fp),
        None => router.neighbour_pin(&n.address).await.ok().flatten(),
    }
}

impl Links {
    /// Makes the running neighbours those of `wanted`: dials each one
    /// added, ends the dialer and the link of each one removed (a changed
    /// address or fingerprint is both), and allows only the keys of the
    /// neighbours that remain. A removed neighbour's outbound queue is
    /// kept: its messages leave if it is configured again.
    pub async fn reconcile(&self, wanted: Vec<NeighbourConfig>) {
        let mut dialers = self.dialers.lock().await;
        let router = &self.ctx.router;
        let removed: Vec<Dialer> = {
            let gone: Vec<String> = dialers
                .iter()
                .filter(|(_, d)| !wanted.contains(&d.config))
                .map(|(address, _)| address.clone())
                .collect();
            gone.iter().filter_map(|a| dialers.remove(a)).collect()
        };
        let allowed = allowed_keys(router, &wanted).await;
        *self.ctx.allowed.write().unwrap_or_else(|p| p.into_inner()) = allowed.clone();
        for d in removed {
            d.stop.cancel();
            let key = key_of(router, &d.config).await;
            let waiting = match key {
                Some(fp) if !allowed.contains(&fp) => {
                    router.close_link(&fp);
                    router.outbound_waiting(&fp).await.unwrap_or(0)
                }
                _ => 0,
            };
            tracing::info!(
                neighbour = %d.config.address,
                fingerprint = key.map(tracing::field::display),
                messages_left_waiting = waiting,
                "neighbour removed; its messages stay queued in case it is configured again"
            );
        }
        let added: Vec<NeighbourConfig> = wanted
            .iter()
            .filter(|n| !dialers.contains_key(&n.address))
            .cloned()
            .collect();
        for n in added {
            tracing::info!(
                neighbour = %n.address,
                fingerprint = n.fingerprint.map(tracing::field::display),
                "neighbour added"
            );
            self.spawn_dialer(&mut dialers, n);
        }
        self.configured.set(wanted);
    }

    fn spawn_dialer(&self, dialers: &mut HashMap<String, Dialer>, n: NeighbourConfig) {
        let stop = self.shutdown.child_token();
        self.tracker
            .spawn(dial::run(n.clone(), self.ctx.clone(), stop.clone()));
        if let Some(earlier) = dialers.insert(n.address.clone(), Dialer { config: n, stop }) {
            earlier.stop.cancel();
        }
    }
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
    let waiting = Arc::new(tokio::sync::Semaphore::new(crate::listen::MAX_WAITING));
    let handshakes = crate::listen::Unproven::new(MAX_HANDSHAKES_PER_ADDRESS, MAX_LINK_CONNECTIONS);
    let mut listener = crate::listen::Listener::new(listener, "link");
    // One throttle per message, so none is counted in another's held_back.
    let freed = Arc::new(crate::telemetry::Throttle::new(crate::listen::WARN_EVERY));
    let refusing = Arc::new(crate::telemetry::Throttle::new(crate::listen::WARN_EVERY));
    let crowded = Arc::new(crate::telemetry::Throttle::new(crate::listen::WARN_EVERY));
    loop {
        let (tcp, peer_addr) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        // Never waits here: a connection that must wait for a slot closed
        // for it waits in its own task.
        let Some(claim) = crate::listen::Claim::take(&slots, &waiting) else {
            if let Some(held_back) = refusing.ready() {
                tracing::warn!(held_back, peer = %peer_addr,
                    "every link connection slot is taken and as many new connections are already waiting for one; closing new connections");
            }
            continue;
        };
        let acceptor = acceptor.clone();
        let (ctx, shutdown) = (ctx.clone(), shutdown.clone());
        let (slots, handshakes) = (slots.clone(), handshakes.clone());
        let (freed, refusing, crowded) = (freed.clone(), refusing.clone(), crowded.clone());
        tracker.spawn(async move {
            // A stranger's unfinished handshake yields to a newcomer, which
            // may be a neighbour; linked neighbours never do.
            let _permit = match claim.slot(&slots, &handshakes, peer_addr.ip()).await {
                Slot::Free(permit) => permit,
                Slot::FreedOwn(permit) => {
                    warn_crowded(&crowded, peer_addr);
                    permit
                }
                Slot::Freed(permit) => {
                    if let Some(held_back) = freed.ready() {
                        tracing::warn!(held_back, peer = %peer_addr,
                            "every link connection slot is taken; closed the oldest unfinished handshake");
                    }
                    permit
                }
                Slot::Full => {
                    if let Some(held_back) = refusing.ready() {
                        tracing::warn!(held_back, peer = %peer_addr,
                            "every link connection slot is taken by linked neighbours or by handshakes closed and not ended yet; closing new connections");
                    }
                    return;
                }
            };
            // Its closed handshakes not ended yet fill the address's limit.
            let Some((handshaking, evicted)) = handshakes.admit(peer_addr.ip()) else {
                return;
            };
            if evicted {
                warn_crowded(&crowded, peer_addr);
            }
            let closed = handshaking.evicted();
            let stream = tokio::select! {
                // A handshake done is kept though it ended as the close came.
                biased;
                stream = handshake(&acceptor, tcp, peer_addr) => stream,
                _ = closed.cancelled() => {
                    return tracing::debug!(peer = %peer_addr, "link handshake closed to make room for a newer connection");
                }
            };
            drop(handshaking);
            let Some(stream) = stream else {
                return;
            };
            let Some(peer) = crate::tls::peer_fingerprint(stream.get_ref().1) else {
                return;
            };
            session::run(stream, peer, peer, ctx, shutdown).await;
        });
    }
}

fn warn_crowded(crowded: &crate::telemetry::Throttle, peer_addr: SocketAddr) {
    if let Some(held_back) = crowded.ready() {
        tracing::warn!(held_back, peer = %peer_addr,
            "too many link handshakes from this address; closed its oldest unfinished one");
    }
}

/// The server side of a link's TLS handshake, within
/// [`LINK_HANDSHAKE_TIMEOUT`]; `None` (logged) when it fails.
async fn handshake(
    acceptor: &tokio_rustls::TlsAcceptor,
    tcp: TcpStream,
    peer_addr: SocketAddr,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let _ = tcp.set_nodelay(true);
    let accept = crate::tls::accept(acceptor, tcp, crate::tls::LINK_ALPN);
    let error = match tokio::time::timeout(LINK_HANDSHAKE_TIMEOUT, accept).await {
        Ok(Ok(stream)) => return Some(stream),
        Ok(Err(e)) => e,
        Err(_) => crate::tls::AcceptError::Timeout,
    };
    tracing::info!(peer = %peer_addr, error = %error, "link not accepted");
    None
}
