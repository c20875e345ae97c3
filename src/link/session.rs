//! One established link, whichever side opened it: say hello, send our
//! directory and presence, drain the outbound queue for this neighbour in
//! order, take what it relays to us (acknowledging each message only after
//! it is committed here), and notice a dead link by its silence.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, BufReader};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::LinkContext;
use crate::db::outbound::OutboundRow;
use crate::domain::{Fingerprint, MessageId, PhoneNumber};
use crate::protocol::link::{LinkMessage, MAX_LINK_FRAME, Relayed};
use crate::protocol::{self, B64, ErrorCode, HELLO_VERSION};
use crate::routing::{Feed, Next, PendingSend, RouteError, Router, link_frame};

/// Interval between heartbeats.
const HEARTBEAT: Duration = Duration::from_secs(10);
/// A link silent for this long is considered dead.
const SILENCE_LIMIT: Duration = Duration::from_secs(30);
/// Frames queued for the writer before senders wait.
const OUTBOX_CAPACITY: usize = 4096;
/// Relayed messages whose commit is pending before we stop reading.
const PENDING_ACKS: usize = 4096;
/// Outbound messages read from the database per batch.
const DRAIN_BATCH: u32 = 512;
/// Acknowledgements (frames to send, or received ones to delete) handled
/// in one go.
const MAX_ACKS_AT_ONCE: usize = 1024;
/// How long a drained queue stays idle before it is read from the start.
const RESCAN_WHEN_IDLE: Duration = Duration::from_secs(5);

/// Runs the link to `peer` until it fails, goes silent, is replaced by a
/// better link, or the server shuts down.
pub async fn run<S>(
    stream: S,
    peer: Fingerprint,
    dialer: Fingerprint,
    ctx: Arc<LinkContext>,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let span = tracing::info_span!("link", peer = %short(&peer));
    async move {
        let router = ctx.router.clone();
        if peer == router.me().fingerprint {
            return tracing::error!(
                "a neighbour address leads back to this server itself; not linking to it"
            );
        }
        let Some(held) = ctx.holds.take(&router, peer).await else {
            return tracing::info!(
                "another member of the cluster runs the link to this neighbour; closing this one"
            );
        };
        let (reader, writer) = tokio::io::split(stream);
        let (outbox, rx) = mpsc::channel(OUTBOX_CAPACITY);
        let writer_task = tokio::spawn(protocol::write_loop(writer, rx));
        let closed = shutdown.child_token();
        tokio::spawn(end_when_lost(held.lost.clone(), closed.clone()));
        let Some(link_id) = router.link_up(peer, dialer, outbox.clone(), closed.clone()) else {
            tracing::debug!("a link to this server already exists; closing the new one");
            return;
        };
        tracing::debug!("link established; waiting for the neighbour's first frame");
        greet(&router, &outbox).await;
        let drainer = tokio::spawn(drain(router.clone(), peer, outbox.clone(), closed.clone()));
        let (acks_tx, acks_rx) = mpsc::channel(PENDING_ACKS);
        let acker = tokio::spawn(acknowledge(acks_rx, outbox.clone(), peer));
        let (acked_tx, acked_rx) = mpsc::channel(PENDING_ACKS);
        let deleter = tokio::spawn(delete_acked(router.clone(), peer, acked_rx));
        let links = Channels {
            outbox: &outbox,
            acks: &acks_tx,
            acked: &acked_tx,
        };
        let accepted = read_loop(BufReader::new(reader), &router, peer, links, &closed).await;
        router.link_down(peer, link_id);
        closed.cancel();
        // Whatever was not acknowledged is sent again on the next link, so
        // nothing here needs to finish: a neighbour that stopped reading
        // must not hold this task or a shutdown.
        acker.abort();
        drainer.abort();
        deleter.abort();
        drop((acks_tx, acked_tx, outbox));
        let mut writer_task = writer_task;
        if tokio::time::timeout(SILENCE_LIMIT, &mut writer_task)
            .await
            .is_err()
        {
            writer_task.abort();
        }
        drop(held);
        if accepted {
            tracing::info!("link down");
        } else {
            tracing::warn!(
                "the neighbour closed the link without accepting it; check that this server's key is configured or pinned there (its log says why)"
            );
        }
    }
    .instrument(span)
    .await
}

/// Ends the link (`closed`) if its lock is `lost`: another member may run
/// it now.
async fn end_when_lost(lost: CancellationToken, closed: CancellationToken) {
    tokio::select! {
        _ = lost.cancelled() => closed.cancel(),
        _ = closed.cancelled() => {}
    }
}

fn short(fp: &Fingerprint) -> String {
    fp.to_hex()[..16].to_owned()
}

async fn greet(router: &Router, outbox: &mpsc::Sender<Vec<u8>>) {
    let hello = LinkMessage::Hello {
        name: router.me().name.clone(),
        version: HELLO_VERSION.into(),
    };
    let mut frames = vec![link_frame(&hello)];
    frames.extend(router.directory_frames());
    frames.extend(router.presence_frames());
    frames.extend(router.device_frames().await);
    for f in frames {
        let _ = outbox.send(f).await;
    }
}

/// Where the read loop passes what it reads on to.
#[derive(Clone, Copy)]
struct Channels<'a> {
    /// Frames to the neighbour.
    outbox: &'a mpsc::Sender<Vec<u8>>,
    /// Relayed messages whose commit is pending, to acknowledge.
    acks: &'a mpsc::Sender<(RelayKey, Result<PendingSend, RouteError>)>,
    /// The neighbour's acknowledgements, to delete.
    acked: &'a mpsc::Sender<Acked>,
}

async fn read_loop<R: AsyncRead + Unpin + Send + 'static>(
    mut reader: R,
    router: &Arc<Router>,
    peer: Fingerprint,
    links: Channels<'_>,
    closed: &CancellationToken,
) -> bool {
    let outbox = links.outbox;
    // Frames are read by their own task: a read interrupted halfway (by a
    // heartbeat, say) would lose the framing.
    let (frames_tx, mut frames) = mpsc::channel(64);
    let reader_task = tokio::spawn(async move {
        loop {
            match protocol::read_frame(&mut reader, MAX_LINK_FRAME).await {
                Ok(Some(f)) => {
                    if frames_tx.send(f).await.is_err() {
                        return;
                    }
                }
                Ok(None) => return,
                Err(e) => return tracing::info!(error = %e, "link read failed"),
            }
        }
    });
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    let mut last_heard = tokio::time::Instant::now();
    // "link up" only once the neighbour has spoken: in TLS 1.3 the dialer
    // finishes its handshake before the other side has judged its key.
    let mut accepted = false;
    loop {
        let frame = tokio::select! {
            _ = closed.cancelled() => break,
            _ = heartbeat.tick() => {
                let _ = outbox.try_send(link_frame(&LinkMessage::Ping));
                continue;
            }
            f = tokio::time::timeout_at(last_heard + SILENCE_LIMIT, frames.recv()) => f,
        };
        let frame = match frame {
            Err(_) => {
                tracing::warn!("the neighbour went silent; dropping the link");
                break;
            }
            Ok(None) => break,
            Ok(Some(f)) => f,
        };
        last_heard = tokio::time::Instant::now();
        if !accepted {
            accepted = true;
            tracing::info!("link up");
        }
        let message = match LinkMessage::parse(&frame) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "the neighbour sent a frame this server does not understand; skipped");
                continue;
            }
        };
        let keep = if runs_to_end(&message) {
            handle_message(router, peer, links, message).await
        } else {
            tokio::select! {
                _ = closed.cancelled() => false,
                keep = handle_message(router, peer, links, message) => keep,
            }
        };
        if !keep {
            break;
        }
    }
    reader_task.abort();
    accepted
}

/// Whether `message` is handled to its end even if the link closes
/// meanwhile (a better link replaced it): what it changes here is passed
/// on to the other neighbours only at its end, and a copy arriving later
/// changes nothing, so cut short it would never be passed on. It waits on
/// nothing but the database.
fn runs_to_end(message: &LinkMessage) -> bool {
    matches!(
        message,
        LinkMessage::Directory { .. } | LinkMessage::Devices { .. } | LinkMessage::Withdrawn { .. }
    )
}

/// Acts on one message from the neighbour; returns false to end the link.
async fn handle_message(
    router: &Arc<Router>,
    peer: Fingerprint,
    links: Channels<'_>,
    message: LinkMessage,
) -> bool {
    let Channels {
        outbox,
        acks,
        acked,
    } = links;
    match message {
        LinkMessage::Hello { name, version } => {
            // Only logged: a long name is cut, not carried along.
            let name = protocol::link::cut_server_name(&name);
            if !protocol::link::speaks_hello_version(version) {
                tracing::warn!(
                    ?name,
                    version,
                    "the neighbour speaks a link protocol version this server does not ({HELLO_VERSION}); closing the link"
                );
                return false;
            }
            tracing::info!(?name, version, "the neighbour introduced itself");
        }
        LinkMessage::Directory { entries } => {
            if let Err(e) = router.directory_in(peer, entries).await {
                tracing::error!(error = %e, "could not store directory entries");
            }
        }
        LinkMessage::Relay(r) => {
            let key = (r.id, r.to.clone(), r.device);
            let pending = router.relay_in(peer, r).await;
            if acks.send((key, pending)).await.is_err() {
                return false;
            }
        }
        LinkMessage::RelayAck { ids, device, to } => {
            let Some(to) = recipient(to) else {
                return true;
            };
            // Deleted by their own task, with whatever else arrives
            // meanwhile, in one transaction.
            if acked.send((device, to, ids)).await.is_err() {
                return false;
            }
        }
        LinkMessage::RelayRefused {
            id,
            code,
            message,
            device,
            path,
            to,
            from,
            sender_device,
        } => {
            let Some(to) = recipient(to) else {
                return true;
            };
            let refusal = crate::routing::Refusal {
                id,
                device,
                to,
                code,
                message,
                sender: from.map(|f| (f, sender_device)),
            };
            router.relay_refused(peer, refusal, path).await
        }
        LinkMessage::Broadcast(b) => router.broadcast_in(peer, b),
        LinkMessage::Presence {
            origin,
            seq,
            online,
        } => router.presence_in(peer, origin, seq, online),
        LinkMessage::Ping => {
            let _ = outbox.try_send(link_frame(&LinkMessage::Pong));
        }
        LinkMessage::Pong => {}
        LinkMessage::Devices { entries } => router.devices_in(peer, entries).await,
        LinkMessage::Claim(c) => router.claim_in(peer, c).await,
        LinkMessage::Claimed(a) => router.claim_answer_in(peer, a),
        LinkMessage::Withdrawn { withdrawals } => {
            if let Err(e) = router.withdrawals_in(peer, withdrawals).await {
                tracing::error!(error = %e, "could not store directory withdrawals");
            }
        }
    }
    true
}

/// The recipient an ack or refusal names: `Some(None)` when it names none
/// (an older neighbour), `None` when the name is not a phone number (the
/// frame is skipped: it cannot match a message we sent).
fn recipient(to: Option<String>) -> Option<Option<PhoneNumber>> {
    match to.map(|to| PhoneNumber::from_canonical(&to)) {
        None => Some(None),
        Some(Ok(phone)) => Some(Some(phone)),
        Some(Err(_)) => {
            tracing::warn!("the neighbour named a recipient that is not a phone number; skipped");
            None
        }
    }
}

/// A relayed message as acknowledged: its id, recipient and recipient
/// device (ids are unique per recipient only).
type RelayKey = (MessageId, String, u32);

/// Answers relayed messages once their commits are done: what is ready
/// together is acknowledged together, one frame per recipient device
/// however their messages were interleaved (the neighbour deletes each
/// frame's ids in one statement). A message waiting for its sender's
/// device list is answered on its own when its wait ends, so it holds back
/// no other. A refusal is logged with `peer`'s fingerprint, so the
/// operator knows which neighbour sent what was refused.
async fn acknowledge(
    mut pending: mpsc::Receiver<(RelayKey, Result<PendingSend, RouteError>)>,
    outbox: mpsc::Sender<Vec<u8>>,
    peer: Fingerprint,
) {
    let mut ready = Vec::with_capacity(MAX_ACKS_AT_ONCE);
    while pending.recv_many(&mut ready, MAX_ACKS_AT_ONCE).await > 0 {
        let mut groups: Vec<((String, u32), Vec<MessageId>)> = Vec::new();
        for ((id, to, device), p) in ready.drain(..) {
            let key = (to, device);
            let outcome = match p {
                Ok(p) if p.waits() => {
                    tokio::spawn(answer_alone(id, key, p, outbox.clone(), peer));
                    continue;
                }
                Ok(p) => p.committed().await,
                Err(e) => Err(e),
            };
            match outcome {
                Ok(()) => match groups.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, ids)) => ids.push(id),
                    None => groups.push((key, vec![id])),
                },
                Err(e) => {
                    if let Some(refusal) = refusal_frame(id, e, &key, &peer) {
                        let _ = outbox.send(refusal).await;
                    }
                }
            }
        }
        for (key, ids) in groups {
            if outbox.send(ack_frame(ids, &key)).await.is_err() {
                return;
            }
        }
    }
}

/// A neighbour's acknowledgement: the recipient device, the recipient
/// (when named) and the ids it committed.
type Acked = (u32, Option<PhoneNumber>, Vec<MessageId>);

/// Deletes what the neighbour acknowledged, everything that arrived
/// together in one transaction. A failure leaves the messages queued: they
/// are sent again on the next link and acknowledged again.
async fn delete_acked(router: Arc<Router>, peer: Fingerprint, mut acked: mpsc::Receiver<Acked>) {
    let mut ready = Vec::with_capacity(MAX_ACKS_AT_ONCE);
    while acked.recv_many(&mut ready, MAX_ACKS_AT_ONCE).await > 0 {
        let mut groups: Vec<Acked> = Vec::new();
        for (device, to, ids) in ready.drain(..) {
            match groups.iter_mut().find(|g| g.0 == device && g.1 == to) {
                Some(g) => g.2.extend(ids),
                None => groups.push((device, to, ids)),
            }
        }
        if let Err(e) = router.outbound_acked_many(&peer, groups).await {
            tracing::error!(error = %e, "could not delete acknowledged messages; they will be sent again");
        }
    }
}

/// Answers one relayed message once its commit is done (acks name ids,
/// so it need not keep its place among the others).
async fn answer_alone(
    id: MessageId,
    key: (String, u32),
    p: PendingSend,
    outbox: mpsc::Sender<Vec<u8>>,
    peer: Fingerprint,
) {
    let frame = match p.committed().await {
        Ok(()) => Some(ack_frame(vec![id], &key)),
        Err(e) => refusal_frame(id, e, &key, &peer),
    };
    if let Some(frame) = frame {
        let _ = outbox.send(frame).await;
    }
}

/// The refusal of relayed message `id`, or `None` when it is left
/// unacknowledged: the neighbour keeps it and sends it again (a full or
/// unreachable store is logged by the store; too many waiting messages
/// clear with time). A refusal is logged once, here, naming the neighbour
/// `peer` that relayed the message.
fn refusal_frame(
    id: MessageId,
    e: RouteError,
    (to, device): &(String, u32),
    peer: &Fingerprint,
) -> Option<Vec<u8>> {
    match e {
        RouteError::Db(e) => {
            if e.code() == ErrorCode::Internal {
                tracing::error!(%id, error = %e, "could not commit a relayed message");
            }
            None
        }
        RouteError::TryLater => None,
        e => {
            tracing::warn!(%id, neighbour = %peer, code = e.code().as_str(), error = %e, "refusing a relayed message");
            Some(link_frame(&LinkMessage::RelayRefused {
                id,
                code: e.code(),
                message: e.to_string(),
                device: *device,
                path: Vec::new(),
                to: Some(to.clone()),
                from: None,
                sender_device: 0,
            }))
        }
    }
}

/// A `relay_ack` for `ids`, all to one recipient and device.
fn ack_frame(ids: Vec<MessageId>, (to, device): &(String, u32)) -> Vec<u8> {
    link_frame(&LinkMessage::RelayAck {
        ids,
        device: *device,
        to: Some(to.clone()),
    })
}

/// Sends this neighbour's outbound queue in order, then what is committed
/// to it: from memory while the feed keeps up, from the table after a
/// start, a fall behind, or a change the feed does not hold. Everything
/// not yet acknowledged is sent again on the next link.
async fn drain(
    router: Arc<Router>,
    peer: Fingerprint,
    outbox: mpsc::Sender<Vec<u8>>,
    closed: CancellationToken,
) {
    let feed = router.outbound_feed(peer);
    let ticket = feed.listen();
    let _stop = StopListening(&feed, ticket);
    let mut cursor = 0i64;
    loop {
        let rows = match feed.next(ticket) {
            Next::ReadTable => {
                if !send_table(&router, peer, &mut cursor, &outbox, &closed).await {
                    return;
                }
                continue;
            }
            Next::Send(rows) => rows,
        };
        if rows.is_empty() {
            tokio::select! {
                _ = closed.cancelled() => return,
                _ = feed.changed() => continue,
                // Members of a cluster commit to this queue concurrently, so
                // a message may commit after one with a later position was
                // read: once idle, look again from the start (what the
                // neighbour has already is acknowledged again, not stored).
                _ = tokio::time::sleep(RESCAN_WHEN_IDLE) => {
                    cursor = 0;
                    feed.wake();
                    continue;
                }
            }
        }
        for row in rows {
            if row.seq <= cursor {
                continue;
            }
            cursor = row.seq;
            if !send_row(&router, peer, row, &outbox, &closed).await {
                return;
            }
        }
    }
}

/// Ends a drain's turn on its feed however the drain ends.
struct StopListening<'a>(&'a Feed, u64);

impl Drop for StopListening<'_> {
    fn drop(&mut self) {
        self.0.stop(self.1);
    }
}

/// Sends the queue's rows after `cursor` until none are left; false once
/// the link has closed.
async fn send_table(
    router: &Router,
    peer: Fingerprint,
    cursor: &mut i64,
    outbox: &mpsc::Sender<Vec<u8>>,
    closed: &CancellationToken,
) -> bool {
    loop {
        let rows = match router.outbound_next(&peer, *cursor, DRAIN_BATCH).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the outbound queue");
                return true;
            }
        };
        if rows.is_empty() {
            return true;
        }
        for row in rows {
            *cursor = row.seq;
            if !send_row(router, peer, row, outbox, closed).await {
                return false;
            }
        }
    }
}

/// Relays one queued message, remembering it so that a refusal can be
/// matched to a copy really sent; false once the link has closed.
async fn send_row(
    router: &Router,
    peer: Fingerprint,
    row: OutboundRow,
    outbox: &mpsc::Sender<Vec<u8>>,
    closed: &CancellationToken,
) -> bool {
    router.relayed_to(peer, &row);
    let relayed = Relayed {
        id: row.id,
        from: row.sender,
        to: row.recipient,
        device: u32::try_from(row.device).unwrap_or_default(),
        sender_device: u32::try_from(row.sender_device).unwrap_or_default(),
        envelope: B64(row.envelope),
        received_at: row.received_at,
        expires_at: row.expires_at,
        path: serde_json::from_str(&row.path).unwrap_or_default(),
    };
    tokio::select! {
        _ = closed.cancelled() => false,
        sent = outbox.send(link_frame(&LinkMessage::Relay(relayed))) => sent.is_ok(),
    }
}
