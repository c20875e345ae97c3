//! The web port's HTTP: an accept loop (TLS when configured), the embedded
//! client at `/`, and the WebSocket handshake at `/ws` with its `Origin`
//! check. Connections count against the server's connection limit, as TCP
//! clients do.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::origin::Origins;
use super::socket::Admitted;
use super::{Endpoint, assets};
use crate::server::ServerState;

/// How long a client may take to send a request's head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

type Reply = Response<Full<Bytes>>;

/// What every HTTP connection of the web port shares.
struct Shared {
    state: Arc<ServerState>,
    origins: Origins,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

/// Serves the web port until `shutdown`; then each connection finishes its
/// request, and WebSocket sessions end as TCP sessions do.
pub async fn serve(
    endpoint: Endpoint,
    state: Arc<ServerState>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let mut listener = crate::listen::Listener::new(endpoint.listener, "web");
    let shared = Arc::new(Shared {
        state,
        origins: endpoint.origins,
        shutdown: shutdown.clone(),
        tracker: tracker.clone(),
    });
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        // Never waits here: a connection that must wait for a slot closed
        // for it waits in its own task.
        let Some(claim) = shared.state.claim_slot() else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let shared = shared.clone();
        let tls = endpoint.tls.clone();
        tracker.spawn(async move {
            let Some(slot) = shared.state.connection_slot(claim, peer.ip()).await else {
                return;
            };
            // Counted from the accept, so one address cannot hold every
            // slot with connections that never reach the WebSocket
            // handshake.
            let Some(pending) = shared.state.admit_pending(peer.ip()) else {
                return;
            };
            let evicted = pending.evicted();
            let admitted = Admitted { slot, pending };
            // Closed to make room, the connection ends here until a
            // WebSocket session takes it over (that session then answers
            // `server_busy`).
            let served = async move {
                match tls {
                    None => connection(tcp, peer, shared, admitted).await,
                    Some(acceptor) => {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                            Ok(Ok(stream)) => connection(stream, peer, shared, admitted).await,
                            _ => tracing::debug!(%peer, "web TLS handshake failed"),
                        }
                    }
                }
            };
            tokio::select! {
                () = served => {}
                () = evicted.cancelled() => {
                    tracing::debug!(%peer, "web connection not logged in closed to make room");
                }
            }
        });
    }
}

/// A connection's slot and its not-logged-in count, held by the HTTP
/// connection until a WebSocket session on it takes them over: one
/// connection, one slot and one count, whichever serves it.
type HeldSlot = Arc<Mutex<Option<Admitted>>>;

/// One HTTP/1.1 connection, upgradeable to a WebSocket.
async fn connection<IO>(io: IO, peer: SocketAddr, shared: Arc<Shared>, admitted: Admitted)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let shutdown = shared.shutdown.clone();
    let slot: HeldSlot = Arc::new(Mutex::new(Some(admitted)));
    let service = hyper::service::service_fn(move |req| {
        std::future::ready(answer(req, peer, &shared, &slot))
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    let served = tokio::select! {
        served = conn.as_mut() => served,
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = served {
        tracing::debug!(%peer, error = %e, "web connection failed");
    }
}

fn answer(
    req: Request<Incoming>,
    peer: SocketAddr,
    shared: &Arc<Shared>,
    slot: &HeldSlot,
) -> Result<Reply, Infallible> {
    let reply = match (req.method(), req.uri().path()) {
        (&Method::GET, "/ws") => upgrade(req, peer, shared, slot),
        (&Method::GET | &Method::HEAD, path) => asset(path, req.method() == Method::HEAD),
        _ => text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n"),
    };
    Ok(reply)
}

fn asset(path: &str, head: bool) -> Reply {
    let Some(asset) = assets::get(path) else {
        return text(StatusCode::NOT_FOUND, "not found; the client is at /\n");
    };
    let body = if head {
        Bytes::new()
    } else {
        Bytes::from(asset.body.into_owned())
    };
    let mut r = Response::new(Full::new(body));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(asset.cache_control),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(assets::CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

/// Checks the handshake, takes the connection's slot and not-logged-in
/// count (both taken at accept) for the session, answers `101 Switching Protocols` and runs the
/// session on the upgraded connection.
fn upgrade(
    mut req: Request<Incoming>,
    peer: SocketAddr,
    shared: &Arc<Shared>,
    slot: &HeldSlot,
) -> Reply {
    let headers = req.headers();
    let is_websocket = headers
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
        && headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_some_and(|v| v == "13");
    let Some(key) = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .filter(|_| is_websocket)
    else {
        return text(
            StatusCode::BAD_REQUEST,
            "this is Carrier's WebSocket endpoint: connect with a WebSocket (version 13)\n",
        );
    };
    let origin = headers.get(header::ORIGIN).map(HeaderValue::as_bytes);
    if !shared.origins.allows(origin) {
        tracing::info!(%peer, origin = ?origin.map(String::from_utf8_lossy), "WebSocket from another origin refused");
        return text(
            StatusCode::FORBIDDEN,
            format!(
                "origin_refused: only the Carrier client served by this server may connect here; open {}/\n",
                shared.origins.primary()
            ),
        );
    }
    let accept = derive_accept_key(key.as_bytes());
    // The connection's own slot and count: no other use once upgraded.
    let Some(admitted) = slot.lock().ok().and_then(|mut held| held.take()) else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_busy: the server is serving as many connections as it can; try again later\n",
        );
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let (state, shutdown) = (shared.state.clone(), shared.shutdown.clone());
    let span = tracing::info_span!("ws", %peer);
    shared.tracker.spawn(tracing::Instrument::instrument(
        async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    super::socket::serve(upgraded, peer, admitted, state, shutdown).await
                }
                Err(e) => tracing::debug!(error = %e, "WebSocket upgrade failed"),
            }
        },
        span,
    ));
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    r
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Reply {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
