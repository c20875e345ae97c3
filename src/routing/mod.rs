//! Where a message goes. A `send` is checked against the clear envelope
//! header and committed through the group-commit writer either to the
//! recipient's queue (their home is here) or to the outbound queue of the
//! neighbour that leads to their home. A local message is pushed to the
//! recipient's live sessions at once, while it commits (the sender is
//! answered after the commit); an outbound one wakes its link once committed. Every hop does the same with messages relayed to it, so a message
//! is always held by at least one server until the next one has committed it.
//!
//! Routing never opens an envelope: it has no key to do so.

pub mod directory;
pub mod neighbours;
pub mod registry;

use std::sync::Arc;
use std::time::Duration;

use sqlx::SqlitePool;
use tokio::sync::{Notify, mpsc, oneshot};

use crate::clock::Clock;
use crate::crypto::PublicKey;
use crate::db::DbError;
use crate::db::enqueue::{Destination, Enqueue, EnqueueOutcome};
use crate::db::outbound::{self, NewOutbound, OutboundRow};
use crate::db::queue::{self, NewMessage, QueueRef};
use crate::db::writer::{Committed, QueueWriter};
use crate::domain::{Fingerprint, MessageId, PhoneNumber};
use crate::protocol::link::{self, DirectoryEntry, LinkMessage, Relayed};
use crate::protocol::{self, B64, Broadcast, Delivered, ListedUser, envelope, signed};
use directory::{Applied, Directory, Entry};
use neighbours::Neighbours;
use registry::Registry;

/// How often expired messages are deleted.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// How often a server re-announces who is connected to it.
const PRESENCE_REFRESH: Duration = Duration::from_secs(30);
/// How far ahead of our clock a neighbour's presence report or directory
/// entry may be dated (clocks differ a little; a later date would let it
/// outrank everything that follows).
const FUTURE_LIMIT_MS: i64 = 10 * 60_000;
/// Delay that gathers a burst of logins and logouts into one announcement.
const PRESENCE_DEBOUNCE: Duration = Duration::from_millis(100);
/// Most messages in one `fetch` answer.
pub const MAX_FETCH: u32 = 1000;
/// Most envelope bytes in one `fetch` answer, so it fits the response frame.
const MAX_FETCH_BYTES: usize = protocol::MAX_RESPONSE_FRAME / 2;
/// Directory entries per link frame.
const DIRECTORY_CHUNK: usize = 500;

/// Why a message was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("no user is registered with the number {0}")]
    UnknownRecipient(String),
    #[error("{0}")]
    BadEnvelope(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("the envelope is {0} bytes; the limit is {max} bytes", max = protocol::MAX_ENVELOPE_BYTES)]
    TooLarge(usize),
    #[error("{0}")]
    QuotaFull(String),
    #[error("{0}")]
    Loop(String),
    #[error("{0}")]
    InvalidPhone(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// A message accepted for delivery whose commit is still pending.
pub struct PendingSend {
    recipient: PhoneNumber,
    /// Queued for a neighbour rather than for the recipient here.
    remote: bool,
    outcome: oneshot::Receiver<Result<EnqueueOutcome, DbError>>,
}

impl PendingSend {
    /// Resolves once the message is committed (or refused).
    pub async fn committed(self) -> Result<(), RouteError> {
        let PendingSend {
            recipient,
            remote,
            outcome,
        } = self;
        match outcome.await.map_err(|_| DbError::WriterGone)?? {
            EnqueueOutcome::Stored | EnqueueOutcome::Duplicate => Ok(()),
            EnqueueOutcome::QuotaFull => Err(RouteError::QuotaFull(Self::quota_message(
                &recipient, remote,
            ))),
        }
    }
}

impl PendingSend {
    /// What a sender is told when the queue that would take it is full.
    fn quota_message(recipient: &PhoneNumber, remote: bool) -> String {
        if remote {
            format!("the queue towards {recipient}'s server is full; try again later")
        } else {
            format!(
                "{recipient}'s message queue is full; try again after they have fetched their messages"
            )
        }
    }
}

/// Who this server is, as its neighbours and directory entries know it.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    pub fingerprint: Fingerprint,
    /// SPKI DER of the long-term key.
    pub public_key: Vec<u8>,
    /// The client address people use, e.g. "127.0.0.1:5000".
    pub name: String,
}

/// Delivery rules shared by every session and link.
pub struct Router {
    pool: SqlitePool,
    writer: QueueWriter,
    pub registry: Arc<Registry>,
    pub directory: Directory,
    pub neighbours: Neighbours,
    me: ServerInfo,
    clock: Clock,
    message_ttl_ms: i64,
    presence_changed: Arc<Notify>,
    /// Last sequence number of our own presence reports.
    presence_seq: std::sync::atomic::AtomicU64,
}

impl Router {
    /// Builds the router and starts its background tasks (live push and link
    /// wake-ups in commit order, expiry sweeps, presence announcements).
    /// They end when the router is dropped.
    pub fn start(
        pool: SqlitePool,
        writer: QueueWriter,
        committed: mpsc::UnboundedReceiver<Committed>,
        directory: Directory,
        me: ServerInfo,
        clock: Clock,
        message_ttl_ms: i64,
    ) -> Arc<Self> {
        let router = Arc::new(Self {
            pool,
            writer,
            registry: Arc::new(Registry::default()),
            directory,
            neighbours: Neighbours::default(),
            me,
            clock,
            message_ttl_ms,
            presence_changed: Arc::new(Notify::new()),
            presence_seq: std::sync::atomic::AtomicU64::new(0),
        });
        tokio::spawn(after_commit(committed, Arc::downgrade(&router)));
        tokio::spawn(sweep_expired(Arc::downgrade(&router)));
        tokio::spawn(announce_presence(
            Arc::downgrade(&router),
            router.presence_changed.clone(),
        ));
        router
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    pub fn me(&self) -> &ServerInfo {
        &self.me
    }

    /// Checks a `send` from a logged-in user and hands it to the writer. The
    /// envelope's clear header must name the sender, recipient and id.
    pub async fn accept(
        &self,
        sender: &PhoneNumber,
        id: MessageId,
        to: &str,
        envelope: Vec<u8>,
    ) -> Result<PendingSend, RouteError> {
        if envelope.len() > protocol::MAX_ENVELOPE_BYTES {
            return Err(RouteError::TooLarge(envelope.len()));
        }
        // The canonical form is the common case and cheap to check; anything
        // else goes through the numbering-plan parser for a precise error.
        let recipient = PhoneNumber::from_canonical(to)
            .or_else(|_| PhoneNumber::parse(to))
            .map_err(|e| RouteError::InvalidPhone(e.to_string()))?;
        check_header(&envelope, sender, &recipient, id)?;
        let now = self.clock.now_ms();
        let message = NewMessage {
            id,
            recipient: recipient.clone(),
            sender: sender.clone(),
            envelope,
            received_at: now,
            expires_at: now + self.message_ttl_ms,
        };
        self.route(
            recipient,
            message,
            vec![self.me.fingerprint.to_hex()],
            false,
        )
        .await
    }

    /// Takes a message relayed by neighbour `from`.
    pub async fn relay_in(&self, from: Fingerprint, r: Relayed) -> Result<PendingSend, RouteError> {
        let me = self.me.fingerprint.to_hex();
        if r.path.len() >= link::MAX_HOPS || r.path.contains(&me) {
            return Err(RouteError::Loop(format!(
                "message {} has crossed {} servers or came back",
                r.id,
                r.path.len()
            )));
        }
        // The path is stored and sent on: every element must be a
        // fingerprint, the last one the neighbour that relayed it.
        let well_formed = r
            .path
            .iter()
            .all(|p| p.len() == 64 && Fingerprint::parse(p).is_some());
        if !well_formed || r.path.last() != Some(&from.to_hex()) {
            return Err(RouteError::BadEnvelope(format!(
                "message {} carries a malformed path",
                r.id
            )));
        }
        if r.envelope.0.len() > protocol::MAX_ENVELOPE_BYTES {
            return Err(RouteError::TooLarge(r.envelope.0.len()));
        }
        let sender = PhoneNumber::from_canonical(&r.from)
            .map_err(|_| RouteError::BadEnvelope("bad sender".into()))?;
        let recipient = PhoneNumber::from_canonical(&r.to)
            .map_err(|_| RouteError::BadEnvelope("bad recipient".into()))?;
        check_header(&r.envelope.0, &sender, &recipient, r.id)?;
        let mut path = r.path;
        path.push(me);
        let message = NewMessage {
            id: r.id,
            recipient: recipient.clone(),
            sender,
            envelope: r.envelope.0,
            received_at: r.received_at,
            expires_at: r.expires_at.min(self.clock.now_ms() + self.message_ttl_ms),
        };
        self.route(recipient, message, path, true).await
    }

    /// Commits a message where its recipient's route says.
    async fn route(
        &self,
        recipient: PhoneNumber,
        message: NewMessage,
        path: Vec<String>,
        relayed: bool,
    ) -> Result<PendingSend, RouteError> {
        let entry = self
            .directory
            .get(&recipient)
            .ok_or_else(|| RouteError::UnknownRecipient(recipient.to_string()))?;
        let destination = match entry.via {
            None => Destination::Local,
            Some(via) => {
                if path.contains(&via.to_hex()) {
                    return Err(RouteError::Loop(format!(
                        "the route to {recipient} leads back through a server already crossed"
                    )));
                }
                let path = serde_json::to_string(&path).expect("strings serialise");
                Destination::Neighbour(NewOutbound {
                    neighbour: via,
                    path,
                })
            }
        };
        let remote = !matches!(destination, Destination::Local);
        if !remote {
            // A connected recipient gets it now, while it commits: the sender
            // is still answered only after the commit, and a message pushed
            // but then not stored is harmless (the client drops repeats by id).
            self.registry.push(&message);
        }
        let outcome = self
            .writer
            .submit_enqueue(Enqueue {
                message,
                destination,
                relayed,
            })
            .await?;
        Ok(PendingSend {
            recipient,
            remote,
            outcome,
        })
    }

    /// The oldest waiting messages for `recipient`, and whether more wait.
    pub async fn fetch(
        &self,
        recipient: &PhoneNumber,
        limit: u32,
    ) -> Result<(Vec<Delivered>, bool), RouteError> {
        let limit = limit.clamp(1, MAX_FETCH);
        let rows = queue::fetch(&self.pool, recipient, 0, self.clock.now_ms(), limit + 1).await?;
        let mut more = rows.len() > limit as usize;
        let mut out = Vec::with_capacity(rows.len().min(limit as usize));
        let mut bytes = 0;
        for row in rows.into_iter().take(limit as usize) {
            bytes += row.envelope.len();
            if bytes > MAX_FETCH_BYTES && !out.is_empty() {
                more = true;
                break;
            }
            out.push(Delivered {
                id: row.id,
                from: row.sender,
                envelope: B64(row.envelope),
                received_at: row.received_at,
            });
        }
        Ok((out, more))
    }

    /// How many messages wait for `recipient`.
    pub async fn waiting(&self, recipient: &PhoneNumber) -> Result<u64, RouteError> {
        Ok(queue::waiting(&self.pool, recipient, self.clock.now_ms()).await?)
    }

    /// Deletes acknowledged messages of `recipient`; returns how many existed.
    pub async fn ack(
        &self,
        recipient: &PhoneNumber,
        ids: Vec<MessageId>,
    ) -> Result<u64, RouteError> {
        if ids.is_empty() {
            return Ok(0);
        }
        Ok(self
            .writer
            .delete(QueueRef::Recipient(recipient.clone()), ids)
            .await?)
    }

    /// The next messages waiting for neighbour `peer`, after `after_seq`.
    pub async fn outbound_next(
        &self,
        peer: &Fingerprint,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<OutboundRow>, DbError> {
        outbound::next(&self.pool, peer, after_seq, self.clock.now_ms(), limit).await
    }

    /// Deletes messages neighbour `peer` has committed.
    pub async fn outbound_acked(
        &self,
        peer: &Fingerprint,
        ids: Vec<MessageId>,
    ) -> Result<u64, DbError> {
        self.writer.delete(QueueRef::Neighbour(*peer), ids).await
    }

    /// The key pinned for the neighbour at `address`, if any.
    pub async fn neighbour_pin(&self, address: &str) -> Result<Option<Fingerprint>, DbError> {
        outbound::pinned(&self.pool, address).await
    }

    /// Pins the key a neighbour presented on first contact.
    pub async fn pin_neighbour(&self, address: &str, fp: Fingerprint) -> Result<(), DbError> {
        outbound::pin(&self.pool, address, fp).await
    }

    /// Records and announces one of our own users (after registration).
    pub async fn publish_local(&self, entry: Entry) -> Result<(), DbError> {
        let entry = self.directory.store(&self.pool, entry).await?;
        self.flood_directory(None, vec![entry.to_wire()]);
        Ok(())
    }

    /// Applies directory entries from neighbour `from`; forwards what changed.
    pub async fn directory_in(
        &self,
        from: Fingerprint,
        entries: Vec<DirectoryEntry>,
    ) -> Result<(), DbError> {
        let mut changed = Vec::new();
        for wire in entries {
            let entry = match directory::parse_entry(&wire, from) {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(neighbour = %from, phone = ?wire.phone.chars().take(20).collect::<String>(), error = %e, "directory entry refused");
                    continue;
                }
            };
            if entry.home == self.me.fingerprint {
                continue;
            }
            // A registration dated in the future would outrank every real
            // one, the rightful home's included, for as long as it lasts.
            if entry.info.registered_at > self.clock.now_ms() + FUTURE_LIMIT_MS {
                tracing::warn!(neighbour = %from, phone = ?entry.info.phone, "directory entry dated in the future refused");
                continue;
            }
            let verdict = self.directory.judge(&entry);
            if verdict == Applied::Unchanged {
                continue;
            }
            if verdict == Applied::Updated && directory::verify_signature(&entry).is_err() {
                tracing::warn!(neighbour = %from, phone = ?entry.info.phone, "directory entry with a bad signature refused");
                continue;
            }
            changed.push(self.directory.store(&self.pool, entry).await?.to_wire());
        }
        if !changed.is_empty() {
            self.flood_directory(Some(from), changed);
        }
        Ok(())
    }

    /// The whole directory as link frames, for a neighbour that just linked.
    pub fn directory_frames(&self) -> Vec<Vec<u8>> {
        let entries: Vec<DirectoryEntry> =
            self.directory.all().iter().map(|e| e.to_wire()).collect();
        entries
            .chunks(DIRECTORY_CHUNK)
            .map(|c| {
                link_frame(&LinkMessage::Directory {
                    entries: c.to_vec(),
                })
            })
            .collect()
    }

    fn flood_directory(&self, except: Option<Fingerprint>, entries: Vec<DirectoryEntry>) {
        for chunk in entries.chunks(DIRECTORY_CHUNK) {
            let frame = link_frame(&LinkMessage::Directory {
                entries: chunk.to_vec(),
            });
            self.neighbours.send_all_except(except, &frame);
        }
    }

    /// A broadcast from one of our logged-in users: checks its signature and
    /// floods it.
    pub fn broadcast_local(&self, from: &PhoneNumber, b: Broadcast) -> Result<(), RouteError> {
        if b.from != from.as_str() {
            return Err(RouteError::Forbidden(format!(
                "this session is logged in as {from}, not {}",
                b.from
            )));
        }
        if b.text.len() > protocol::MAX_TEXT_BYTES {
            return Err(RouteError::TooLarge(b.text.len()));
        }
        let entry = self
            .directory
            .get(from)
            .ok_or_else(|| RouteError::UnknownRecipient(from.to_string()))?;
        let key = PublicKey::from_spki_der_typed(entry.info.key_type, &entry.info.public_key.0)
            .map_err(|e| RouteError::BadEnvelope(e.to_string()))?;
        let bytes = signed::broadcast_bytes(&b.id, b.sent_at, &b.from, &b.text);
        key.verify(&bytes, &b.signature.0).map_err(|_| {
            RouteError::Forbidden("the broadcast's signature does not verify with your key".into())
        })?;
        self.broadcast_in(None, b);
        Ok(())
    }

    /// Delivers a broadcast to our live sessions and floods it onward, once.
    pub fn broadcast_in(&self, from: Option<Fingerprint>, b: Broadcast) {
        if b.text.len() > protocol::MAX_TEXT_BYTES || !self.neighbours.first_sight(b.id) {
            return;
        }
        self.neighbours
            .send_all_except(from, &link_frame(&LinkMessage::Broadcast(b.clone())));
        self.registry.broadcast(b);
    }

    /// A presence report from the neighbourhood; floods it on if it is news.
    pub fn presence_in(&self, from: Fingerprint, origin: String, seq: u64, online: Vec<String>) {
        let Some(origin_fp) = Fingerprint::parse(&origin) else {
            return;
        };
        // Sequence numbers are the origin's clock in milliseconds; one far in
        // the future would freeze that server's presence until restart.
        if seq > (self.clock.now_ms() + FUTURE_LIMIT_MS).max(0) as u64 {
            return;
        }
        if origin_fp == self.me.fingerprint
            || !self.neighbours.presence_in(origin_fp, seq, online.clone())
        {
            return;
        }
        let frame = link_frame(&LinkMessage::Presence {
            origin,
            seq,
            online,
        });
        self.neighbours.send_all_except(Some(from), &frame);
    }

    /// Our users logged in or out: announce it soon.
    pub fn presence_changed(&self) {
        self.presence_changed.notify_one();
    }

    /// Presence frames for a neighbour that just linked: ours and every
    /// recent one we know.
    pub fn presence_frames(&self) -> Vec<Vec<u8>> {
        let mut frames = vec![self.own_presence_frame()];
        for (origin, seq, online) in self.neighbours.presence_reports() {
            frames.push(link_frame(&LinkMessage::Presence {
                origin: origin.to_hex(),
                seq,
                online,
            }));
        }
        frames
    }

    /// Our clock in milliseconds, or one more than the last report if that
    /// is later: strictly increasing, and comparable across restarts.
    fn next_presence_seq(&self) -> u64 {
        use std::sync::atomic::Ordering;
        let now = self.clock.now_ms().max(0) as u64;
        let step = |prev: u64| Some(prev.max(now) + 1);
        let prev = self
            .presence_seq
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, step);
        prev.map_or(now + 1, |p| p.max(now) + 1)
    }

    fn own_presence_frame(&self) -> Vec<u8> {
        link_frame(&LinkMessage::Presence {
            origin: self.me.fingerprint.to_hex(),
            seq: self.next_presence_seq(),
            online: self.registry.online(),
        })
    }

    /// Every user of the neighbourhood with their home and presence.
    pub fn list(&self) -> Vec<ListedUser> {
        self.directory
            .all()
            .iter()
            .map(|e| {
                let online = match e.via {
                    None => self.registry.is_connected(&e.info.phone),
                    Some(_) => self.neighbours.is_online_at(&e.home, &e.info.phone),
                };
                ListedUser {
                    phone: e.info.phone.clone(),
                    fingerprint: e.info.fingerprint.clone(),
                    home: e.home_name.clone(),
                    home_fingerprint: e.home.to_hex(),
                    online,
                }
            })
            .collect()
    }
}

/// Encodes a link message as a frame body.
pub fn link_frame(m: &LinkMessage) -> Vec<u8> {
    serde_json::to_vec(m).expect("a link message always serialises")
}

/// The clear header must agree with the request and the session.
fn check_header(
    bytes: &[u8],
    sender: &PhoneNumber,
    recipient: &PhoneNumber,
    id: MessageId,
) -> Result<(), RouteError> {
    let view = envelope::parse(bytes)
        .map_err(|e| RouteError::BadEnvelope(format!("bad envelope: {e}")))?;
    if &view.header.sender != sender {
        return Err(RouteError::Forbidden(format!(
            "the envelope names {} as its sender but this session is logged in as {sender}",
            view.header.sender
        )));
    }
    if &view.header.recipient != recipient {
        return Err(RouteError::BadEnvelope(
            "the envelope is addressed to someone else than \"to\"".into(),
        ));
    }
    if view.header.id != id {
        return Err(RouteError::BadEnvelope(
            "the envelope's message id differs from \"id\"".into(),
        ));
    }
    Ok(())
}

/// Wakes the link that carries each committed outbound message.
async fn after_commit(
    mut committed: mpsc::UnboundedReceiver<Committed>,
    router: std::sync::Weak<Router>,
) {
    while let Some(c) = committed.recv().await {
        let Some(router) = router.upgrade() else {
            return;
        };
        match c.destination {
            Destination::Local => {}
            Destination::Neighbour(o) => router.neighbours.wake(o.neighbour),
        }
    }
}

async fn sweep_expired(router: std::sync::Weak<Router>) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    loop {
        tick.tick().await;
        // Sweep in bounded steps until nothing more has expired, letting
        // other writes in between.
        loop {
            let Some(router) = router.upgrade() else {
                return;
            };
            match router.writer.sweep(router.clock.now_ms()).await {
                Ok(0) => break,
                Ok(n) => tracing::info!(expired = n, "expired messages deleted"),
                Err(e) => {
                    tracing::warn!(error = %e, "expiry sweep failed");
                    break;
                }
            }
        }
    }
}

/// Announces who is connected here: soon after a change, and periodically
/// so neighbours can tell a silent server from an empty one.
async fn announce_presence(router: std::sync::Weak<Router>, changed: Arc<Notify>) {
    let mut refresh = tokio::time::interval(PRESENCE_REFRESH);
    loop {
        // Holds no reference to the router while it waits, so a shutdown
        // need not wait for the next refresh.
        let was_change = tokio::select! {
            _ = refresh.tick() => false,
            _ = changed.notified() => true,
        };
        if was_change {
            tokio::time::sleep(PRESENCE_DEBOUNCE).await;
        }
        let Some(router) = router.upgrade() else {
            return;
        };
        router
            .neighbours
            .send_all_except(None, &router.own_presence_frame());
    }
}
