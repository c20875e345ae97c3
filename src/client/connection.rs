//! A client connection: TLS with a pinned server key, a background task that
//! reads frames and routes each response to its caller by `re` and each
//! pushed message to the bounded event queue (`events`). Requests may be
//! pipelined.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncWriteExt, BufReader, ReadHalf, WriteHalf};
use tokio::sync::oneshot;

use super::ClientError;
use super::events::{self, Event, Events, Missed, Pusher};
use crate::crypto::{self, Identity, Purpose};
use crate::domain::{Fingerprint, PhoneNumber};
use crate::protocol::{self, Request, RequestFrame, Response, ResponseFrame};
use crate::tls::{self, ClientTlsStream, Pin};

/// Link requests kept until `devices add` takes them; an account has at
/// most 4 link codes open.
const MAX_LINK_REQUESTS: usize = 4;

/// Requests waiting for their answer, and whether the reader has ended (then
/// no new request may wait: nobody would ever answer it).
#[derive(Default)]
struct Pending {
    waiting: HashMap<u64, oneshot::Sender<Response>>,
    closed: bool,
    /// The connection-level error the server reported before closing.
    ended_by: Option<(protocol::ErrorCode, String)>,
}

type Waiters = Arc<Mutex<Pending>>;

/// An open, not necessarily logged-in, connection to a server.
pub struct Connection {
    writer: tokio::sync::Mutex<WriteHalf<ClientTlsStream>>,
    waiters: Waiters,
    next_seq: AtomicU64,
    events: Events,
    /// Pushed `link_requested` events (rendezvous, sealed request), apart
    /// from messages: only `carrier devices add` waits for them.
    link_requests: tokio::sync::Mutex<tokio::sync::mpsc::Receiver<(Vec<u8>, Vec<u8>)>>,
    exporter: [u8; 32],
    server_fingerprint: Fingerprint,
    reader_task: tokio::task::JoinHandle<()>,
}

impl Connection {
    /// Connects to `addr` and checks the server's key against `pin`.
    pub async fn connect(addr: &str, pin: Pin) -> Result<Self, ClientError> {
        let (stream, server_fingerprint) = tls::connect(addr, pin).await?;
        let exporter = tls::auth_exporter(stream.get_ref().1)
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let (reader, writer) = tokio::io::split(stream);
        let waiters: Waiters = Arc::default();
        let (events_tx, events) = events::queue();
        let (links_tx, link_requests) = tokio::sync::mpsc::channel(MAX_LINK_REQUESTS);
        let reader_task = tokio::spawn(read_loop(
            BufReader::new(reader),
            waiters.clone(),
            events_tx,
            links_tx,
        ));
        Ok(Self {
            writer: tokio::sync::Mutex::new(writer),
            waiters,
            next_seq: AtomicU64::new(1),
            events,
            link_requests: tokio::sync::Mutex::new(link_requests),
            exporter,
            server_fingerprint,
            reader_task,
        })
    }

    /// The fingerprint of the key the server presented.
    pub fn server_fingerprint(&self) -> Fingerprint {
        self.server_fingerprint
    }

    /// This connection's TLS exporter value, which login proofs sign.
    pub fn exporter(&self) -> &[u8; 32] {
        &self.exporter
    }

    /// Sends a request and waits for its answer; a server error becomes
    /// [`ClientError::Server`].
    pub async fn call(&self, request: Request) -> Result<Response, ClientError> {
        let rx = self.start(request).await?;
        match rx.await.map_err(|_| ClientError::Disconnected)? {
            error @ Response::Error { .. } => Err(super::refused(error)),
            other => Ok(other),
        }
    }

    /// Sends a request without waiting: the answer arrives on the returned
    /// receiver (possibly as `Response::Error`). Lets callers pipeline.
    pub async fn start(
        &self,
        request: Request,
    ) -> Result<oneshot::Receiver<Response>, ClientError> {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let body = serde_json::to_vec(&RequestFrame {
            seq: Some(seq),
            request,
        })
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
            if pending.closed {
                return Err(ClientError::Disconnected);
            }
            pending.waiting.insert(seq, tx);
        }
        let mut w = self.writer.lock().await;
        let sent = async {
            protocol::write_frame(&mut *w, &body).await?;
            w.flush().await
        }
        .await;
        if sent.is_err() {
            self.waiters
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .waiting
                .remove(&seq);
            return Err(ClientError::Disconnected);
        }
        Ok(rx)
    }

    /// Asks for a challenge and signs the proof that registers or logs in
    /// `phone` with `identity` on this connection.
    pub async fn prove(
        &self,
        identity: &Identity,
        purpose: Purpose,
        phone: &PhoneNumber,
    ) -> Result<Vec<u8>, ClientError> {
        let Response::Challenge { nonce } = self.call(Request::Challenge).await? else {
            return Err(ClientError::Protocol("expected a challenge".into()));
        };
        let nonce: [u8; 32] = nonce
            .0
            .try_into()
            .map_err(|_| ClientError::Protocol("the challenge is not 32 bytes".into()))?;
        Ok(crypto::sign_proof(
            identity,
            purpose,
            &self.exporter,
            &nonce,
            phone,
        ))
    }

    /// The next `link_requested` push as (rendezvous, sealed request);
    /// `None` once the connection closed.
    pub async fn next_link_request(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        self.link_requests.lock().await.recv().await
    }

    /// The next thing the server pushed; `None` once the connection closed.
    pub async fn next_event(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// A pushed event if one is waiting now.
    pub fn try_next_event(&mut self) -> Option<Event> {
        self.events.try_recv()
    }

    /// Pushes dropped since the last call because events were not taken
    /// fast enough (see [`events`](super::events)).
    pub fn missed_events(&self) -> Missed {
        self.events.take_missed()
    }

    /// The connection-level error (shutting down, a frame too large) the
    /// server reported before it closed, if it did: what a person is told
    /// instead of only "connection lost".
    pub fn ended_by(&self) -> Option<(protocol::ErrorCode, String)> {
        let pending = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        pending.ended_by.clone()
    }

    /// Says goodbye and closes the connection.
    pub async fn close(self) {
        let _ = self.call(Request::Quit).await;
        let mut w = self.writer.lock().await;
        let _ = w.shutdown().await;
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader_task.abort();
    }
}

async fn read_loop(
    mut reader: BufReader<ReadHalf<ClientTlsStream>>,
    waiters: Waiters,
    events: Pusher,
    links: tokio::sync::mpsc::Sender<(Vec<u8>, Vec<u8>)>,
) {
    while let Ok(Some(frame)) =
        protocol::read_frame(&mut reader, protocol::MAX_RESPONSE_FRAME).await
    {
        let size = frame.len();
        let Ok(frame) = serde_json::from_slice::<ResponseFrame>(&frame) else {
            tracing::warn!("the server sent a frame this client does not understand");
            continue;
        };
        match (frame.re, frame.response) {
            (None, Response::Message(m)) => events.push(Event::Message(m), size),
            (None, Response::Broadcast(b)) => events.push(Event::Broadcast(b), size),
            (
                None,
                Response::LinkRequested {
                    rendezvous,
                    request,
                },
            ) => {
                // At most a few are open at once; more are dropped and
                // their new devices wait for the code's expiry.
                let _ = links.try_send((rendezvous.0, request.0));
            }
            (Some(re), response) => {
                if let Some(tx) = waiters
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .waiting
                    .remove(&re)
                {
                    let _ = tx.send(response);
                }
            }
            (None, Response::Error { code, message, .. }) => {
                // A diagnostic only (RUST_LOG): what a person must know
                // of it, `chat` says in its own words (`ended_by`).
                tracing::warn!(?code, %message, "the server reported an error");
                // Each of these comes just before the server closes the
                // connection (`unknown_device`: this device was removed,
                // or the account registered again with another key).
                if matches!(
                    code,
                    protocol::ErrorCode::FrameTooLarge
                        | protocol::ErrorCode::ShuttingDown
                        | protocol::ErrorCode::UnknownDevice
                ) {
                    fail_all(&waiters, code, &message);
                }
            }
            (None, _) => {}
        }
    }
    let mut pending = waiters.lock().unwrap_or_else(|p| p.into_inner());
    pending.closed = true;
    pending.waiting.clear();
}

/// A connection-level error (frame too large, shutting down, this device
/// closed by a change to its account) answers every
/// request still waiting, and is kept for [`Connection::ended_by`].
fn fail_all(waiters: &Waiters, code: protocol::ErrorCode, message: &str) {
    let mut w = waiters.lock().unwrap_or_else(|p| p.into_inner());
    w.ended_by = Some((code, message.to_owned()));
    for (_, tx) in w.waiting.drain() {
        let _ = tx.send(Response::Error {
            code,
            message: message.to_owned(),
            retry_after_ms: None,
            tries_left: None,
            devices: None,
        });
    }
}
