//! Local delivery: a message committed where its recipient's route says
//! (a device's `device_send` is checked in `device_send`), the recipient's
//! `fetch` and `ack`, and the sweep of expired messages.

use std::collections::HashMap;
use std::sync::Weak;
use std::time::Duration;

use tokio::sync::oneshot;

use super::registry::{self, SessionLink};
use super::{RouteError, Router};
use crate::db::DbError;
use crate::db::enqueue::{Destination, Enqueue, EnqueueOutcome};
use crate::db::lock::Lock;
use crate::db::outbound::NewOutbound;
use crate::db::queue::{NewMessage, QueueRef};
use crate::domain::{MessageId, PhoneNumber};
use crate::protocol::{self, B64, Delivered};

/// How often expired messages are deleted.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// Most messages in one `fetch` answer.
pub const MAX_FETCH: u32 = 1000;
/// Most envelope bytes in one `fetch` answer, so it fits the response frame.
const MAX_FETCH_BYTES: usize = protocol::MAX_RESPONSE_FRAME / 2;

/// A message accepted for delivery whose commit is still pending.
pub struct PendingSend {
    recipient: PhoneNumber,
    /// Queued for a neighbour rather than for the recipient here.
    remote: bool,
    outcome: Outcome,
}

enum Outcome {
    /// Handed to the writer.
    Submitted(oneshot::Receiver<Result<EnqueueOutcome, DbError>>),
    /// Not yet handed over: waiting for something first (a relayed
    /// message for its sender's device list, `remote_senders`).
    Later(oneshot::Receiver<Result<PendingSend, RouteError>>),
    /// Taken but not kept: a relayed message already past its lifetime.
    Expired,
}

impl PendingSend {
    /// A message that is handed to the writer (or refused) once `later`
    /// resolves.
    pub(super) fn later(
        recipient: PhoneNumber,
        later: oneshot::Receiver<Result<PendingSend, RouteError>>,
    ) -> Self {
        Self {
            recipient,
            remote: false,
            outcome: Outcome::Later(later),
        }
    }

    /// A relayed message that had expired when it arrived: answered as
    /// committed, so its neighbour drops it, but never stored or pushed.
    pub(super) fn expired(recipient: PhoneNumber) -> Self {
        Self {
            recipient,
            remote: false,
            outcome: Outcome::Expired,
        }
    }

    /// Whether the message still waits for something before it is handed
    /// to the writer (and so may take seconds to resolve).
    pub fn waits(&self) -> bool {
        matches!(self.outcome, Outcome::Later(_))
    }

    /// Resolves once the message is committed (or refused).
    pub async fn committed(self) -> Result<(), RouteError> {
        let PendingSend {
            recipient,
            remote,
            outcome,
        } = self;
        let outcome = match outcome {
            Outcome::Submitted(outcome) => outcome,
            Outcome::Later(later) => {
                let pending = later
                    .await
                    .map_err(|_| RouteError::Interrupted("waiting to deliver"))??;
                return Box::pin(pending.committed()).await;
            }
            Outcome::Expired => return Ok(()),
        };
        match outcome.await.map_err(|_| DbError::WriterGone)?? {
            EnqueueOutcome::Stored | EnqueueOutcome::Duplicate => Ok(()),
            EnqueueOutcome::IdInUse => Err(RouteError::IdInUse(recipient)),
            EnqueueOutcome::QuotaFull if remote => Err(RouteError::NeighbourQueueFull(recipient)),
            EnqueueOutcome::QuotaFull => Err(RouteError::QueueFull(recipient)),
            EnqueueOutcome::SenderShareFull => Err(RouteError::SenderShareFull(recipient)),
        }
    }
}

impl Router {
    /// Commits a message where its recipient's route says.
    pub(super) async fn route(
        &self,
        recipient: PhoneNumber,
        message: NewMessage,
        path: Vec<String>,
        relayed: bool,
    ) -> Result<PendingSend, RouteError> {
        let entry = self
            .user(&recipient)
            .await
            .ok_or_else(|| RouteError::UnknownRecipient(recipient.clone()))?;
        let destination = match entry.via {
            None => Destination::Local,
            Some(via) => {
                if path.contains(&via.to_hex()) {
                    return Err(RouteError::RouteLoop(recipient));
                }
                let path = serde_json::to_string(&path).expect("strings serialise");
                Destination::Neighbour(NewOutbound {
                    neighbour: via,
                    path,
                })
            }
        };
        let remote = !matches!(destination, Destination::Local);
        let push = (!remote).then(|| (message.device, registry::delivered(&message)));
        let outcome = self
            .store
            .submit_enqueue(Enqueue {
                message,
                destination,
                relayed,
            })
            .await?;
        // A connected recipient gets it now, while it commits: the sender is
        // still answered only after the commit, and a message pushed but then
        // not stored is harmless (the client drops repeats by id). Pushed
        // only once submitted: a session that joins later and fetches waits
        // for the writer first, so it either finds the message or is pushed it.
        if let Some((device, delivered)) = push {
            self.registry.push_delivered(&recipient, device, delivered);
        }
        Ok(PendingSend {
            recipient,
            remote,
            outcome: Outcome::Submitted(outcome),
        })
    }

    /// The oldest messages waiting for a session's user after queue
    /// position `after` (0: from the start), whether more wait, and the
    /// position of the last one returned. The session may acknowledge them
    /// from now on.
    pub async fn fetch(
        &self,
        session: &SessionLink,
        limit: u32,
        after: u64,
    ) -> Result<(Vec<Delivered>, bool, Option<u64>), RouteError> {
        let limit = limit.clamp(1, MAX_FETCH);
        if after == 0 || !session.is_settled() {
            // Messages submitted before this session joined were not pushed
            // to it: its first fetch waits for their commit, whatever its
            // cursor (one kept from an earlier session reads past them
            // too), or it would miss them while later ones are pushed.
            self.store.settled().await?;
            session.mark_settled();
        }
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let rows = self
            .store
            .fetch(
                session.phone(),
                session.device(),
                after,
                self.clock.now_ms(),
                limit + 1,
            )
            .await?;
        let mut more = rows.len() > limit as usize;
        let mut out = Vec::with_capacity(rows.len().min(limit as usize));
        let mut cursor = None;
        let mut bytes = 0;
        for row in rows.into_iter().take(limit as usize) {
            bytes += row.envelope.len();
            if bytes > MAX_FETCH_BYTES && !out.is_empty() {
                more = true;
                break;
            }
            cursor = u64::try_from(row.seq).ok();
            out.push(Delivered {
                id: row.id,
                from: row.sender,
                envelope: B64(row.envelope),
                received_at: row.received_at,
                device: u32::try_from(row.sender_device).ok().filter(|d| *d != 0),
            });
        }
        session.give(out.iter().map(|m| (m.id, m.from.clone())));
        Ok((out, more, cursor))
    }

    /// How many messages wait for `recipient`'s `device` (0: the queue of
    /// an account without devices).
    pub async fn waiting(&self, recipient: &PhoneNumber, device: u32) -> Result<u64, RouteError> {
        Ok(self
            .store
            .waiting(recipient, device, self.clock.now_ms())
            .await?)
    }

    /// Deletes acknowledged messages of a session's user; only those the
    /// session was given count (each listing of an id, the message given
    /// earliest under it), other ids are ignored. Returns how many existed.
    pub async fn ack(&self, session: &SessionLink, ids: &[MessageId]) -> Result<u64, RouteError> {
        let owned = session.take_given(ids);
        if owned.is_empty() {
            return Ok(0);
        }
        match self.delete_given(session, &owned).await {
            Ok(deleted) => {
                crate::metrics::get().delivered.inc_by(deleted);
                Ok(deleted)
            }
            Err(e) => {
                // Nothing was deleted: the client may acknowledge these again.
                session.give(owned);
                Err(e.into())
            }
        }
    }

    /// Deletes (id, sender) pairs from the session's queue: one delete per
    /// sender, all submitted before any is awaited so they share the
    /// writer's transaction.
    async fn delete_given(
        &self,
        session: &SessionLink,
        owned: &[(MessageId, String)],
    ) -> Result<u64, DbError> {
        let mut by_sender: HashMap<&str, Vec<MessageId>> = HashMap::new();
        for (id, sender) in owned {
            by_sender.entry(sender.as_str()).or_default().push(*id);
        }
        let mut pending = Vec::with_capacity(by_sender.len());
        for (sender, ids) in by_sender {
            // Every stored sender is canonical; anything else names no row.
            let Ok(sender) = PhoneNumber::from_canonical(sender) else {
                continue;
            };
            let queue = QueueRef::Sent(session.phone().clone(), session.device(), sender);
            pending.push(self.store.submit_delete(queue, ids).await?);
        }
        let mut deleted = 0;
        for rx in pending {
            deleted += rx.await.map_err(|_| DbError::WriterGone)??;
        }
        Ok(deleted)
    }
}

/// Deletes expired messages every [`SWEEP_INTERVAL`] while the router
/// lives; in a cluster, only on the member holding the sweep's lock.
pub(super) async fn sweep_expired(router: Weak<Router>) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    let mut lock = None;
    loop {
        tick.tick().await;
        let Some(r) = router.upgrade() else {
            return;
        };
        if !sweeps_here(&r, &mut lock).await {
            continue;
        }
        let (store, clock) = (r.store.clone(), r.clock.clone());
        drop(r);
        let (swept, result) = store.sweep_until_finished(|| clock.now_ms()).await;
        if swept.expired > 0 {
            crate::metrics::get().expired.inc_by(swept.expired);
            tracing::info!(expired = swept.expired, "expired messages deleted");
        }
        if let Err(e) = result {
            tracing::warn!(error = %e, "expiry sweep failed");
        }
    }
}

/// Whether this member sweeps: it holds (or now takes) the sweep's lock.
async fn sweeps_here(router: &Router, lock: &mut Option<Lock>) -> bool {
    if let Some(held) = lock
        && !held.alive().await
    {
        *lock = None;
    }
    if lock.is_none() {
        *lock = router.try_lock("sweep").await.ok().flatten();
    }
    lock.is_some()
}
