//! Where a message goes. A `send` is checked against the clear envelope
//! header, committed to the recipient's queue through the group-commit
//! writer, and, once committed, pushed to the recipient's live sessions.
//! Routing never opens an envelope: it has no key to do so.

pub mod directory;
pub mod registry;

use std::sync::Arc;
use std::time::Duration;

use sqlx::SqlitePool;
use tokio::sync::{mpsc, oneshot};

use crate::clock::Clock;
use crate::db::queue::{self, NewMessage};
use crate::db::writer::{Committed, EnqueueOutcome, QueueWriter};
use crate::db::DbError;
use crate::domain::{MessageId, PhoneNumber};
use crate::protocol::{self, B64, Delivered, envelope};
use directory::Directory;
use registry::Registry;

/// How often expired messages are deleted.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// Most messages in one `fetch` answer.
pub const MAX_FETCH: u32 = 1000;
/// Most envelope bytes in one `fetch` answer, so it fits the response frame.
const MAX_FETCH_BYTES: usize = protocol::MAX_RESPONSE_FRAME / 2;

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
    #[error("{0}'s message queue is full; try again after they have fetched their messages")]
    QuotaFull(PhoneNumber),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// A message accepted for delivery whose commit is still pending.
pub struct PendingSend {
    recipient: PhoneNumber,
    outcome: oneshot::Receiver<Result<EnqueueOutcome, DbError>>,
}

impl PendingSend {
    /// Resolves once the message is committed (or refused).
    pub async fn committed(self) -> Result<(), RouteError> {
        match self.outcome.await.map_err(|_| DbError::WriterGone)?? {
            EnqueueOutcome::Stored | EnqueueOutcome::Duplicate => Ok(()),
            EnqueueOutcome::QuotaFull => Err(RouteError::QuotaFull(self.recipient)),
        }
    }
}

/// Delivery rules shared by every session.
pub struct Router {
    pool: SqlitePool,
    writer: QueueWriter,
    pub registry: Arc<Registry>,
    pub directory: Directory,
    clock: Clock,
    message_ttl_ms: i64,
}

impl Router {
    /// Builds the router and starts its background tasks (live push in
    /// commit order, expiry sweeps). They end when the router is dropped.
    pub fn start(
        pool: SqlitePool,
        writer: QueueWriter,
        committed: mpsc::UnboundedReceiver<Committed>,
        directory: Directory,
        clock: Clock,
        message_ttl_ms: i64,
    ) -> Arc<Self> {
        let registry = Arc::new(Registry::default());
        tokio::spawn(push_committed(committed, registry.clone()));
        let router = Arc::new(Self { pool, writer, registry, directory, clock, message_ttl_ms });
        tokio::spawn(sweep_expired(Arc::downgrade(&router)));
        router
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Checks a `send` and hands it to the writer. The envelope's clear
    /// header must name the logged-in sender, the requested recipient and id.
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
        let recipient = PhoneNumber::from_canonical(to)
            .map_err(|_| RouteError::BadEnvelope(format!("'{to}' is not an E.164 phone number")))?;
        check_header(&envelope, sender, &recipient, id)?;
        if !self.directory.contains(&recipient) {
            return Err(RouteError::UnknownRecipient(recipient.to_string()));
        }
        let now = self.clock.now_ms();
        let message = NewMessage {
            id: *id.as_bytes(),
            recipient: recipient.to_string(),
            sender: sender.to_string(),
            envelope,
            received_at: now,
            expires_at: now + self.message_ttl_ms,
        };
        let outcome = self.writer.submit_enqueue(message).await?;
        Ok(PendingSend { recipient, outcome })
    }

    /// The oldest waiting messages for `recipient`, and whether more wait.
    pub async fn fetch(&self, recipient: &PhoneNumber, limit: u32) -> Result<(Vec<Delivered>, bool), RouteError> {
        let limit = limit.clamp(1, MAX_FETCH);
        let rows = queue::fetch(&self.pool, recipient.as_str(), 0, self.clock.now_ms(), limit + 1).await?;
        let mut more = rows.len() > limit as usize;
        let mut out = Vec::with_capacity(rows.len().min(limit as usize));
        let mut bytes = 0;
        for row in rows.into_iter().take(limit as usize) {
            bytes += row.envelope.len();
            if bytes > MAX_FETCH_BYTES && !out.is_empty() {
                more = true;
                break;
            }
            let id = MessageId::from_slice(&row.id)
                .ok_or_else(|| DbError::Corrupt(format!("message id of length {}", row.id.len())))?;
            out.push(Delivered { id, from: row.sender, envelope: B64(row.envelope), received_at: row.received_at });
        }
        Ok((out, more))
    }

    /// How many messages wait for `recipient`.
    pub async fn waiting(&self, recipient: &PhoneNumber) -> Result<u64, RouteError> {
        Ok(queue::waiting(&self.pool, recipient.as_str(), self.clock.now_ms()).await?)
    }

    /// Deletes acknowledged messages of `recipient`; returns how many existed.
    pub async fn ack(&self, recipient: &PhoneNumber, ids: Vec<[u8; 16]>) -> Result<u64, RouteError> {
        if ids.is_empty() {
            return Ok(0);
        }
        Ok(self.writer.delete(recipient.to_string(), ids).await?)
    }
}

/// The clear header must agree with the request and the session.
fn check_header(bytes: &[u8], sender: &PhoneNumber, recipient: &PhoneNumber, id: MessageId) -> Result<(), RouteError> {
    let view = envelope::parse(bytes).map_err(|e| RouteError::BadEnvelope(format!("bad envelope: {e}")))?;
    if &view.header.sender != sender {
        return Err(RouteError::Forbidden(format!(
            "the envelope names {} as its sender but this session is logged in as {sender}",
            view.header.sender
        )));
    }
    if &view.header.recipient != recipient {
        return Err(RouteError::BadEnvelope("the envelope is addressed to someone else than \"to\"".into()));
    }
    if view.header.id != id {
        return Err(RouteError::BadEnvelope("the envelope's message id differs from \"id\"".into()));
    }
    Ok(())
}

/// Pushes each committed message to its recipient's live sessions, in
/// commit order.
async fn push_committed(mut committed: mpsc::UnboundedReceiver<Committed>, registry: Arc<Registry>) {
    while let Some(c) = committed.recv().await {
        registry.push(c.message);
    }
}

async fn sweep_expired(router: std::sync::Weak<Router>) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    loop {
        tick.tick().await;
        let Some(router) = router.upgrade() else { return };
        match router.writer.sweep(router.clock.now_ms()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(expired = n, "expired messages deleted"),
            Err(e) => tracing::warn!(error = %e, "expiry sweep failed"),
        }
    }
}
