//! `/ws`: one client session over a WebSocket, one protocol frame per
//! WebSocket message. After the `hello` frame, the session is the TCP
//! port's own (`server::run_session`): same handlers, limits, errors and
//! rules; only how a frame is read and written differs here.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::CapacityError;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_util::sync::CancellationToken;

use super::binding::Hello;
use crate::protocol::{FrameError, MAX_REQUEST_FRAME, OutboxReceiver, Queued};
use crate::server::{FrameSource, PendingSlot, ServerState};

type Ws = WebSocketStream<TokioIo<Upgraded>>;

/// What a connection holds while it is served: one of the server's
/// connection slots (shared with the TCP port) and its count among its
/// address's connections not logged in yet. Fields drop in order: the
/// count goes before the slot, so a newcomer from the same address that
/// waits for this slot finds the count gone with it.
pub struct Admitted {
    pub pending: PendingSlot,
    pub slot: tokio::sync::OwnedSemaphorePermit,
}

/// Messages and frames past the request limit are refused before they are
/// gathered, as oversized TCP frames are. The read buffer starts small: the
/// layer's default of 128 KiB would be held by every connection, idle or
/// not logged in, where the TCP port holds a few KiB. (Unlike the TCP
/// port's, the layer makes room for a whole frame once its header says how
/// long it is.)
fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_REQUEST_FRAME))
        .max_frame_size(Some(MAX_REQUEST_FRAME))
        .read_buffer_size(READ_BUFFER)
}

/// What each WebSocket connection's read buffer starts with.
const READ_BUFFER: usize = 4 * 1024;

/// How long the `hello` frame may take to leave: it is small, so only a
/// peer that does not read takes longer.
const HELLO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves one upgraded connection to the end.
pub async fn serve(
    upgraded: Upgraded,
    peer: SocketAddr,
    admitted: Admitted,
    state: Arc<ServerState>,
    shutdown: CancellationToken,
) {
    let ws = Ws::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config())).await;
    let (mut sink, stream) = ws.split();
    let hello = Hello::fresh(state.router.me().fingerprint);
    // A peer that does not read could hold the send, and with it a slot
    // it has proved nothing for, until it is closed to make room or the
    // send times out.
    let evicted = admitted.pending.evicted();
    let sent = tokio::select! {
        // A hello sent is kept though it went as the close came.
        biased;
        sent = tokio::time::timeout(HELLO_TIMEOUT, sink.send(Message::text(hello.frame()))) => sent,
        () = evicted.cancelled() => return tracing::debug!("closed before its hello was sent, to make room"),
    };
    if !matches!(sent, Ok(Ok(()))) {
        return tracing::debug!("the hello could not be sent; closing");
    }
    let closing = Arc::new(OnceLock::new());
    let reason = closing.clone();
    let writer = move |rx| tokio::spawn(write_loop(sink, rx, reason));
    crate::server::run_session(
        Incoming(stream, closing),
        writer,
        peer.ip(),
        hello.binding(),
        state,
        shutdown,
        admitted.pending,
    )
    .await;
    drop(admitted.slot);
}

/// Why the reading half ended the session, when the close frame should say.
type Closing = Arc<OnceLock<CloseFrame>>;

/// The reading half: each text (or binary) message is one request frame.
/// A text message that is not UTF-8 ends the session with close code 1007.
struct Incoming(SplitStream<Ws>, Closing);

impl FrameSource for Incoming {
    async fn next_frame(&mut self, max: usize) -> Result<Option<Vec<u8>>, FrameError> {
        loop {
            let body = match self.0.next().await {
                None | Some(Ok(Message::Close(_))) => return Ok(None),
                Some(Ok(Message::Text(text))) => Vec::from(text.as_str()),
                Some(Ok(Message::Binary(bytes))) => bytes.to_vec(),
                // Pings are answered by the WebSocket layer itself.
                Some(Ok(_)) => continue,
                Some(Err(WsError::Capacity(CapacityError::MessageTooLong { size, max_size }))) => {
                    return Err(FrameError::TooLarge {
                        len: size,
                        max: max_size,
                    });
                }
                Some(Err(WsError::Utf8(e))) => {
                    let _ = self.1.set(CloseFrame {
                        code: CloseCode::Invalid,
                        reason: "text message is not UTF-8".into(),
                    });
                    return Err(FrameError::Io(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("text message is not UTF-8: {e}"),
                    )));
                }
                Some(Err(WsError::Io(e))) => return Err(FrameError::Io(e)),
                Some(Err(e)) => return Err(FrameError::Io(std::io::Error::other(e))),
            };
            if body.is_empty() {
                return Err(FrameError::Empty);
            }
            // The WebSocket layer holds a message to the request frame limit;
            // before login the lower one applies once it is whole.
            if body.len() > max {
                return Err(FrameError::TooLarge {
                    len: body.len(),
                    max,
                });
            }
            return Ok(Some(body));
        }
    }
}

/// The writing half: every queued frame as one text message, those waiting
/// together sent with one flush; each frame keeps its outbox charge until
/// flushed. Closes the WebSocket when the session ends, with the reading
/// half's reason if it gave one. Like the TCP port's writer, it keeps no
/// room for frames while it waits for the next.
async fn write_loop(mut sink: SplitSink<Ws, Message>, mut rx: OutboxReceiver, closing: Closing) {
    let mut gathered = Vec::new();
    loop {
        let frame = match rx.try_recv() {
            Some(frame) => frame,
            None => {
                gathered = Vec::new();
                match rx.recv().await {
                    Some(frame) => frame,
                    None => break,
                }
            }
        };
        let mut fed = sink.feed(message(&frame)).await;
        gathered.push(frame);
        while fed.is_ok() {
            let Some(frame) = rx.try_recv() else { break };
            fed = sink.feed(message(&frame)).await;
            gathered.push(frame);
        }
        if fed.is_err() || sink.flush().await.is_err() {
            return;
        }
        gathered.clear();
    }
    if let Some(frame) = closing.get() {
        let _ = sink.send(Message::Close(Some(frame.clone()))).await;
    }
    let _ = sink.close().await;
}

/// Frames are JSON, so UTF-8; anything else would go as binary rather than
/// be altered.
fn message(frame: &Queued) -> Message {
    match std::str::from_utf8(frame.as_ref()) {
        Ok(text) => Message::text(text),
        Err(_) => Message::binary(frame.as_ref().to_vec()),
    }
}
