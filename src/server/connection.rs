//! One connection: TLS handshake, then a loop reading request frames and a
//! writer task sending response frames (batched into as few TLS records as
//! the queue allows). A failing connection logs its cause and ends alone.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::ServerState;
use super::answers::Pending;
use super::handlers::{self, Outcome};
use super::pre_login::{PRE_LOGIN_BURST, PreLoginBudget};
use super::session::Session;
use crate::listen::{Claim, Proof, Slot};
use crate::protocol::{
    self, ErrorCode, FrameError, Outbox, OutboxError, RequestFrame, Response, ResponseFrame,
    classify_request_error,
};

/// A connection that has not logged in this long after connecting is closed
/// (long enough for a person to type a code that came by SMS).
const LOGIN_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// A logged-in connection silent this long is closed (clients ping).
const IDLE_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Frames waiting to be written before answers wait and a push closes the
/// session (the byte bound is `[limits] max_session_backlog_bytes`).
const OUTBOX_CAPACITY: usize = 1024;
/// How long an answer may wait for room in a peer's outbox (the peer is not
/// reading) before the connection is closed.
const STALL_LIMIT: Duration = Duration::from_secs(30);
/// Connections past the limit being told `server_busy` at once; past these,
/// further ones are closed without a word.
pub const MAX_BUSY_ANSWERS: usize = 32;
/// How long a connection told `server_busy` is read (and what it sent
/// dropped) before it is closed, and how many bytes at most.
const BUSY_LINGER: Duration = Duration::from_secs(2);
const BUSY_LINGER_BYTES: u64 = 64 * 1024;
/// How long the answer to a connection closed to make room may take to
/// leave. The newcomer waits for this connection's slot, so it is only
/// long enough for a frame that fits the send buffer to be written: a
/// peer that does not read is not waited for.
const EVICTED_FLUSH: Duration = Duration::from_millis(50);
/// How long a session closed for a change to its account (a device
/// removed, the account's key replaced) has to read what was queued for it
/// and its farewell.
const FAREWELL_FLUSH: Duration = Duration::from_secs(5);
/// What a connection not logged in is told when it is closed to make room
/// for a newer one.
const EVICTED: &str = "the server is serving as many connections as it can, and this one had not logged in; it was closed to make room. Reconnect and log in";

type Stream = TlsStream<TcpStream>;

/// Serves one accepted TCP connection to the end.
///
/// Not an `async fn`: the connection's whole life is one spawned task, and
/// an `async fn` awaiting the instrumented block can hold the block twice
/// (once as the value moved into the span, once as the future awaited).
/// The task is part of every idle connection's memory.
pub fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    state: Arc<ServerState>,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> + Send {
    let span = tracing::info_span!("conn", %peer);
    async move {
        let Some(pending) = state.admit_pending(peer.ip()) else {
            return;
        };
        let evicted = pending.evicted();
        let _ = tcp.set_nodelay(true);
        // The TLS stream lives only in this block: it is borrowed here, and
        // a borrowed local keeps its place in the task (over a kilobyte)
        // for as long as it is in scope, though it has moved into the
        // reader and writer.
        let (reader, writer, exporter) = {
            let acceptor = tokio_rustls::TlsAcceptor::from(state.tls.clone());
            // Boxed: the handshake's state (a whole TLS connection in the
            // making) would otherwise be part of the task for the
            // connection's whole life, though it is only needed until the
            // handshake ends.
            let handshake = Box::pin(crate::tls::accept(&acceptor, tcp, crate::tls::ALPN));
            let stream = tokio::select! {
                // A handshake done is kept though it ended as the close came.
                biased;
                stream = handshake => stream,
                _ = evicted.cancelled() => return tracing::debug!("closed before its TLS handshake ended, to make room"),
            };
            let stream = match stream {
                Ok(s) => s,
                Err(e) => return tracing::debug!(error = %e, "connection not served"),
            };
            let exporter = match crate::tls::auth_exporter(stream.get_ref().1) {
                Ok(e) => e,
                Err(e) => return tracing::warn!(error = %e, "no TLS exporter"),
            };
            let (reader, writer) = tokio::io::split(stream);
            (reader, writer, exporter)
        };
        let writer =
            move |rx: protocol::OutboxReceiver| tokio::spawn(protocol::write_loop(writer, rx));
        run_session(
            reader,
            writer,
            peer.ip(),
            exporter,
            state,
            shutdown,
            pending,
        )
        .await;
    }
    .instrument(span)
}

/// Where a session's request frames come from: length-prefixed frames on
/// the TCP port, WebSocket messages on `/ws`. The one seam between the
/// transports and the session: everything after a frame is read is shared.
pub(crate) trait FrameSource: Send {
    /// The next request frame, of at most `max` bytes; `Ok(None)` when the
    /// peer has closed.
    fn next_frame(
        &mut self,
        max: usize,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, FrameError>> + Send;
}

impl FrameSource for ReadHalf<Stream> {
    fn next_frame(
        &mut self,
        max: usize,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, FrameError>> + Send {
        protocol::read_frame(self, max)
    }
}

/// Runs one session over either transport once its peer is admitted and
/// its login binding (`binding`: the TLS exporter, or the WebSocket
/// binding) is known; `spawn_writer` starts the task that writes the
/// outbox's frames.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run_session(
    source: impl FrameSource,
    spawn_writer: impl FnOnce(protocol::OutboxReceiver) -> tokio::task::JoinHandle<()>,
    peer: std::net::IpAddr,
    binding: [u8; 32],
    state: Arc<ServerState>,
    shutdown: CancellationToken,
    pending: super::session::PendingSlot,
) {
    let backlog = state.router.limits().session_backlog_bytes;
    let (outbox, rx) = Outbox::new(OUTBOX_CAPACITY, backlog);
    let mut writer_task = spawn_writer(rx);
    let mut session = Session::new(peer, binding, outbox);
    let mut sends = Pending::default();
    let evicted = pending.evicted();
    read_loop(source, &mut session, &state, &shutdown, &mut sends, pending).await;
    answer_the_rest(&session, &mut sends).await;
    // A session closed because it stopped reading is not waited for; one
    // closed for a change to its account has a little while to read its
    // farewell.
    let closed = session.user.as_ref().filter(|u| u.closed().is_cancelled());
    let closed_by_server = closed.is_some_and(|u| u.farewell().is_none());
    let told_farewell = closed.is_some_and(|u| u.farewell().is_some());
    session.log_out(&state.router);
    // Nothing more is this connection's to send; handles to its outbox
    // that live on (a link code's rendezvous) must not hold it open.
    session.outbox.finish();
    drop(session);
    // A peer that stopped reading cannot hold the task (or a shutdown),
    // nor the slot of a connection closed to make room for another.
    let stall = if evicted.is_cancelled() {
        EVICTED_FLUSH
    } else if told_farewell {
        FAREWELL_FLUSH
    } else {
        STALL_LIMIT
    };
    if closed_by_server {
        writer_task.abort();
    } else if tokio::time::timeout(stall, &mut writer_task).await.is_err() {
        tracing::info!("the peer stopped reading; closing");
        writer_task.abort();
    }
}

/// Logs `message` unless `throttle` holds it back. Closing a connection to
/// make room and turning one away have a throttle each, so neither is
/// counted in the other's `held_back`; the two ways of turning one away
/// (no place to wait, no slot freed) share theirs.
fn warn(throttle: &crate::telemetry::Throttle, message: &str) {
    if let Some(held_back) = throttle.ready() {
        tracing::warn!(held_back, "{message}");
    }
}

impl ServerState {
    /// What a new connection (TCP port or `/ws`) takes at accept, without
    /// waiting: a free connection slot or a place to wait for one. `None`
    /// when neither is left: the connection is turned away at once.
    pub(crate) fn claim_slot(&self) -> Option<Claim> {
        let claim = Claim::take(&self.connection_slots, &self.slot_waiters);
        if claim.is_none() {
            warn(
                &self.refusing,
                "every connection slot is taken (server.max_connections, or the open-file limit) and as many new connections are already waiting for one; turning new connections away",
            );
        }
        claim
    }

    /// The slot of a new connection from `ip`, in its own task: the
    /// claimed one, or the slot of a connection not logged in closed for
    /// it (its own address's oldest when that address is at its limit,
    /// else the oldest of all). `None` when logged-in sessions, or
    /// connections closed and not gone yet, hold every slot.
    pub(crate) async fn connection_slot(
        &self,
        claim: Claim,
        ip: std::net::IpAddr,
    ) -> Option<tokio::sync::OwnedSemaphorePermit> {
        match claim
            .slot(&self.connection_slots, &self.pending_logins, ip)
            .await
        {
            Slot::Free(permit) => Some(permit),
            Slot::FreedOwn(permit) => {
                self.warn_crowded(ip);
                Some(permit)
            }
            Slot::Freed(permit) => {
                warn(
                    &self.slots_freed,
                    "every connection slot is taken (server.max_connections, or the open-file limit); closed the oldest connection not logged in",
                );
                Some(permit)
            }
            Slot::Full => {
                warn(
                    &self.refusing,
                    "every connection slot is taken by logged-in sessions or by connections closed to make room and not gone yet (server.max_connections, or the open-file limit); turning new connections away",
                );
                None
            }
        }
    }

    /// Counts a connection from `ip` as not logged in; when that address
    /// has the most allowed already, its oldest such connection is closed.
    /// `None` while the address's connections closed that way and not
    /// gone yet fill its limit by themselves.
    pub(crate) fn admit_pending(
        &self,
        ip: std::net::IpAddr,
    ) -> Option<super::session::PendingSlot> {
        let Some((pending, evicted)) = self.pending_logins.admit(ip) else {
            tracing::debug!(peer = %ip, "this address's connections closed to make room have not let go yet; refused");
            return None;
        };
        if evicted {
            self.warn_crowded(ip);
        }
        Some(pending)
    }

    fn warn_crowded(&self, ip: std::net::IpAddr) {
        if let Some(held_back) = self.crowded.ready() {
            tracing::warn!(
                held_back,
                peer = %ip,
                "too many connections from this address are not logged in; closed its oldest"
            );
        }
    }
}

/// Completes the handshake only to answer `server_busy` and close, so a
/// client past the connection limit learns at once why it is not served.
pub async fn turn_away(tcp: TcpStream, tls: Arc<rustls::ServerConfig>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let Ok(mut stream) = crate::tls::accept(&acceptor, tcp, crate::tls::ALPN).await else {
        return;
    };
    let busy = encode(
        None,
        error(
            ErrorCode::ServerBusy,
            "the server is serving as many connections as it can; try again later",
        ),
    );
    let _ = tokio::time::timeout(STALL_LIMIT, async {
        protocol::write_frame(&mut stream, &busy).await?;
        stream.shutdown().await
    })
    .await;
    // A client may have sent its first request already: closing with its
    // bytes unread would reset the connection, and a reset can destroy the
    // answer before the client reads it. Its bytes are read and dropped
    // until it closes too (or for a bounded time and amount).
    let (tcp, _) = stream.into_inner();
    let _ = tokio::time::timeout(
        BUSY_LINGER,
        tokio::io::copy(&mut tcp.take(BUSY_LINGER_BYTES), &mut tokio::io::sink()),
    )
    .await;
}

async fn read_loop(
    mut reader: impl FrameSource,
    session: &mut Session,
    state: &Arc<ServerState>,
    shutdown: &CancellationToken,
    sends: &mut Pending,
    pending: super::session::PendingSlot,
) {
    let mut pending = Some(pending);
    let login_deadline = tokio::time::Instant::now() + LOGIN_TIMEOUT;
    let mut budget = PreLoginBudget::new(std::time::Instant::now());
    loop {
        let (timeout, max) = match session.user {
            Some(_) => (IDLE_TIMEOUT, protocol::MAX_REQUEST_FRAME),
            None => (
                login_deadline.saturating_duration_since(tokio::time::Instant::now()),
                protocol::MAX_PRE_LOGIN_FRAME,
            ),
        };
        // The read lives only in this block, so its state does not stay
        // part of the connection's task beside the request's handling.
        let frame = {
            let read = tokio::time::timeout(timeout, reader.next_frame(max));
            tokio::pin!(read);
            // Answers to earlier sends go out while the next frame is read;
            // the read itself is polled on until it completes (a frame half
            // read is never dropped).
            loop {
                let closed = session.user.as_ref().map(|u| u.closed());
                let evicted = pending.as_ref().map(|p| p.evicted());
                tokio::select! {
                    // A shutdown or a close wins over the next request.
                    biased;
                    _ = shutdown.cancelled() => {
                        reply(session, None, error(ErrorCode::ShuttingDown, "the server is shutting down; reconnect later")).await;
                        return;
                    }
                    // The registry closed the session and logged why. Its
                    // farewell is queued only if there is room now: a peer
                    // that stopped reading must not hold the slot for it.
                    _ = cancelled(closed) => {
                        answer_if_room(session, sends).await;
                        if let Some(f) = session.user.as_ref().and_then(|u| u.farewell()) {
                            let farewell = encode(None, error(f.code, f.message.clone()));
                            let _ = session.outbox.try_send(farewell);
                        }
                        return;
                    }
                    _ = cancelled(evicted) => {
                        tracing::debug!("closed before logging in, to make room");
                        reply(session, None, error(ErrorCode::ServerBusy, EVICTED)).await;
                        return;
                    }
                    answered = sends.next() => {
                        if !reply(session, answered.seq, answered.response).await {
                            return sends.abandon();
                        }
                    }
                    f = &mut read, if sends.has_room() => break f,
                }
            }
        };
        let frame = match frame {
            Err(_) => return tracing::debug!("connection idle; closing"),
            Ok(Ok(None)) => return,
            Ok(Ok(Some(f))) => f,
            Ok(Err(FrameError::TooLarge { len, max })) => {
                let msg = format!(
                    "frame of {len} bytes exceeds the limit of {max} bytes; closing the connection"
                );
                reply(session, None, error(ErrorCode::FrameTooLarge, msg)).await;
                return;
            }
            Ok(Err(FrameError::Empty)) => {
                if over_budget(session, &mut budget, &[]).await {
                    return;
                }
                reply(
                    session,
                    None,
                    error(ErrorCode::MalformedJson, "empty frame"),
                )
                .await;
                continue;
            }
            Ok(Err(e)) => return tracing::debug!(error = %e, "read failed"),
        };
        if over_budget(session, &mut budget, &frame).await {
            return;
        }
        let (seq, request) = match serde_json::from_slice::<RequestFrame>(&frame) {
            Ok(f) => (f.seq, f.request),
            Err(e) => {
                let (seq, code, message) = classify_request_error(&frame, &e);
                if !reply(session, seq, error(code, message)).await {
                    return sends.abandon();
                }
                continue;
            }
        };
        drop(frame);
        // The request is borrowed for its kind, so it lives only in this
        // block: out of it, it would keep its place in the task beside the
        // handling it has moved into.
        let (kind, handling) = {
            let kind = request.kind();
            // Boxed: the handlers' largest state would otherwise be part
            // of every connection's task, idle or not.
            (
                kind,
                Box::pin(handlers::dispatch(state, session, seq, request)),
            )
        };
        let outcome = handling.await;
        if session.user.is_some() {
            pending.take();
        }
        // A user reading a code sent to them is the last to be closed to
        // make room.
        if let (Some(pending), Outcome::Reply(Response::CodeSent { .. })) = (&pending, &outcome) {
            pending.proved(Proof::AwaitingCode);
        }
        match outcome {
            Outcome::Reply(r) => {
                log_refusal(kind, &r);
                crate::metrics::get().answered(kind, &r);
                if !reply(session, seq, r).await {
                    return sends.abandon();
                }
            }
            Outcome::Close(r) => {
                reply(session, seq, r).await;
                return;
            }
            Outcome::Later => {}
            Outcome::Deferred(id, pending) => sends.add(seq, id, pending),
        }
    }
}

/// Answers every send still awaiting its commit once the connection stops
/// reading: a send that was accepted for delivery is answered whatever
/// ended the session (unless the peer stopped reading its answers).
async fn answer_the_rest(session: &Session, sends: &mut Pending) {
    while !sends.is_empty() {
        let answered = sends.next().await;
        if !reply(session, answered.seq, answered.response).await {
            return;
        }
    }
}

/// Answers the sends still in flight, each only if there is room for it
/// now: a session the server closed may have stopped reading, and must not
/// hold its connection while it waits. Its farewell comes after them.
async fn answer_if_room(session: &Session, sends: &mut Pending) {
    while !sends.is_empty() {
        let answered = sends.next().await;
        let _ = session
            .outbox
            .try_send(encode(answered.seq, answered.response));
    }
}

/// Takes one request of `frame` from the budget of a session not logged
/// in; once it is spent, answers `rate_limited` and returns true (the
/// caller closes the connection).
async fn over_budget(session: &Session, budget: &mut PreLoginBudget, frame: &[u8]) -> bool {
    if session.user.is_some() || budget.take(std::time::Instant::now()) {
        return false;
    }
    let seq = serde_json::from_slice::<RequestFrame>(frame)
        .ok()
        .and_then(|f| f.seq);
    let msg =
        format!("more than {PRE_LOGIN_BURST} requests before logging in; closing the connection");
    tracing::info!("too many requests before login; closing");
    reply(session, seq, error(ErrorCode::RateLimited, msg)).await;
    true
}

async fn cancelled(token: Option<CancellationToken>) {
    match token {
        Some(t) => t.cancelled().await,
        None => std::future::pending().await,
    }
}

fn log_refusal(kind: &str, r: &Response) {
    if let Response::Error { code, .. } = r {
        tracing::debug!(request = kind, ?code, "request refused");
    }
}

fn error(code: ErrorCode, message: impl Into<String>) -> Response {
    Response::Error {
        code,
        message: message.into(),
        retry_after_ms: None,
        tries_left: None,
        devices: None,
    }
}

fn encode(seq: Option<u64>, response: Response) -> Vec<u8> {
    serde_json::to_vec(&ResponseFrame { re: seq, response }).expect("a response always serialises")
}

/// Queues an answer; false if the peer has not been reading for
/// [`STALL_LIMIT`] (the caller then closes the connection).
///
/// The answer is encoded and queued before the returned future is made,
/// and only an answer that finds no room waits, in a boxed future: the
/// reply is awaited inside the read loop, so whatever it holds across that
/// await is part of every connection's task, idle or not.
fn reply(
    session: &Session,
    seq: Option<u64>,
    response: Response,
) -> impl Future<Output = bool> + Send + '_ {
    let queued = session.outbox.try_send_or_return(encode(seq, response));
    async move {
        match queued {
            Ok(()) => true,
            Err((OutboxError::Closed, _)) => false,
            Err((OutboxError::Full, body)) => {
                let sent = tokio::time::timeout(STALL_LIMIT, session.outbox.send(body));
                matches!(Box::pin(sent).await, Ok(Ok(())))
            }
        }
    }
}
