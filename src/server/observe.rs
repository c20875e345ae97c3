//! The operator's HTTP endpoint (`[metrics] listen`): `/metrics` in the
//! Prometheus text format, `/healthz` (the process answers) and `/readyz`
//! (the database takes a write). Plain HTTP on an address the operator
//! chooses, loopback by default: it carries no user data.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::{self, Context, Reply};
use crate::metrics::NeighbourLabels;

/// The content type of prometheus-client's text encoding.
const METRICS_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How long a client may take to send a request's head: a client that
/// stalls mid-request is dropped rather than held forever.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections served at once; more are closed at once, so clients of the
/// metrics port cannot take the descriptors the messaging clients need.
const MAX_CONNECTIONS: usize = 16;

/// Answers HTTP requests on `listener` until `shutdown`; then every
/// connection finishes the request it is on and closes, so a scraper that
/// keeps its connection alive does not hold the server's stop up.
pub async fn serve(
    listener: TcpListener,
    cx: Arc<Context>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let mut listener = crate::listen::Listener::new(listener, "metrics");
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let cx = cx.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |req| answer(req, cx.clone()));
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            let served = tokio::select! {
                served = connection.as_mut() => served,
                _ = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = served {
                tracing::debug!(error = %e, "metrics connection failed");
            }
        });
    }
}

async fn answer(
    req: Request<Incoming>,
    cx: Arc<Context>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != Method::GET {
        return Ok(text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n"));
    }
    Ok(match req.uri().path() {
        "/metrics" => {
            refresh(&cx).await;
            let mut r = text(StatusCode::OK, crate::metrics::get().encode());
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static(METRICS_TYPE),
            );
            r
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => match cx.store.probe_write().await {
            Ok(()) => text(StatusCode::OK, "ready\n"),
            Err(e) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: the database does not take writes: {e}\n"),
            ),
        },
        _ => text(StatusCode::NOT_FOUND, "try /metrics, /healthz or /readyz\n"),
    })
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r
}

/// Sets the gauges from the router and the store just before a scrape.
async fn refresh(cx: &Context) {
    let m = crate::metrics::get();
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    m.worker_threads.set(workers as i64);
    if let Some(live) = &cx.live {
        m.sessions.set(live.router.session_count() as i64);
    }
    if let Ok(queues) = cx.store.queue_depths().await {
        m.queue_messages
            .set(queues.iter().map(|q| q.messages).sum());
        m.queue_bytes.set(queues.iter().map(|q| q.bytes).sum());
    }
    if let Ok(Reply::Links(links)) = admin::execute(cx, admin::Request::Links).await {
        // Only the neighbours known now: one a reload removed (and that left
        // no pin or queue behind) disappears from the scrape.
        m.link_up.clear();
        m.outbound_messages.clear();
        m.outbound_oldest_seconds.clear();
        for link in links {
            let Some(neighbour) = link.fingerprint.or(link.address) else {
                continue;
            };
            let labels = NeighbourLabels { neighbour };
            m.link_up
                .get_or_create(&labels)
                .set(i64::from(link.up == Some(true)));
            m.outbound_messages
                .get_or_create(&labels)
                .set(link.outbound_messages);
            m.outbound_oldest_seconds
                .get_or_create(&labels)
                .set(link.oldest_age_secs.unwrap_or(0));
        }
    }
}
