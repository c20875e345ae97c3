//! Sends awaiting their commit on one connection, answered by the
//! connection's own task as each commit lands.
//!
//! A task per pending send used to do this: spawning it woke a second
//! runtime worker to run a task that did nothing but wait, which cost a
//! cross-thread wake-up and a context switch per message at low rates.
//! Here the pending commits are futures the connection polls beside its
//! next read, so a commit wakes only the connection that will answer it.

use std::pin::Pin;

use futures::StreamExt;
use futures::stream::FuturesUnordered;

use crate::domain::MessageId;
use crate::protocol::Response;
use crate::routing::PendingSend;

/// Sends awaiting their commit on one connection before it stops reading.
pub(super) const MAX_IN_FLIGHT: usize = 1024;

type Answering = Pin<Box<dyn Future<Output = Answered> + Send>>;

/// A send whose commit has resolved, with the answer it gets.
pub(super) struct Answered {
    pub seq: Option<u64>,
    pub response: Response,
}

/// A connection's sends awaiting their commit, in no particular order:
/// each is answered when its own commit resolves.
///
/// The set exists only while a send waits: it allocates its queue up
/// front, and most connections are idle most of the time.
#[derive(Default)]
pub(super) struct Pending {
    sends: Option<FuturesUnordered<Answering>>,
}

impl Pending {
    /// Waits for `pending`'s commit; its answer comes out of [`Self::next`].
    pub(super) fn add(&mut self, seq: Option<u64>, id: MessageId, pending: PendingSend) {
        let started = std::time::Instant::now();
        let sends = self.sends.get_or_insert_with(FuturesUnordered::new);
        sends.push(Box::pin(async move {
            let response = match pending.committed().await {
                Ok(()) => Response::Accepted { id },
                Err(e) => super::error::ApiError::from(e).into_response(),
            };
            let outcome = match &response {
                Response::Error { code, .. } => Err(*code),
                _ => Ok(()),
            };
            crate::metrics::get().sent(outcome, started.elapsed());
            Answered { seq, response }
        }));
    }

    /// Whether the connection may read another request: fewer than
    /// [`MAX_IN_FLIGHT`] sends wait.
    pub(super) fn has_room(&self) -> bool {
        self.sends.as_ref().is_none_or(|s| s.len() < MAX_IN_FLIGHT)
    }

    /// Whether no send waits.
    pub(super) fn is_empty(&self) -> bool {
        self.sends.as_ref().is_none_or(FuturesUnordered::is_empty)
    }

    /// Gives up answering: the peer has stopped reading its answers. The
    /// messages are still committed (or not) as before; only their answers
    /// are not sent, as a client whose answers went missing expects.
    pub(super) fn abandon(&mut self) {
        self.sends = None;
    }

    /// The next send whose commit resolved; pending for ever when none
    /// waits, so it can sit in a `select!` beside the connection's reads.
    pub(super) async fn next(&mut self) -> Answered {
        let Some(sends) = self.sends.as_mut().filter(|s| !s.is_empty()) else {
            return std::future::pending().await;
        };
        let Some(answered) = sends.next().await else {
            return std::future::pending().await;
        };
        if sends.is_empty() {
            self.sends = None;
        }
        answered
    }
}
