//! Group commit: one task owns the write connection to the queues and
//! applies every pending operation from all sessions in one transaction, so
//! one `fsync` covers many senders. A sender's reply is sent only after the
//! commit that contains its message.
//!
//! The task also keeps each queue's usage in memory ([`super::quota`]), so
//! quota checks cost no query. When the database fails as a whole (a full
//! disk, a lost server) the batch is refused with that reason, the
//! connection is replaced if the failure left it unfit ([`reconnect`]), and
//! the next batch tries again: writes come back by themselves once the
//! database does.

mod apply;
mod reconnect;

use std::sync::Arc;

use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;
use tokio::sync::{mpsc, oneshot};

use super::backend::{Backend, OwnedConn};
use super::cluster::{self, Event, Membership};
use super::enqueue::{Destination, Enqueue, EnqueueOutcome, Item};
use super::health::Health;
use super::queue::{NewMessage, QueueRef};
use super::quota::{Ledger, Quotas};
use super::{DbError, Millis, Store, sqlite};
use crate::domain::{MessageId, PhoneNumber};
use reconnect::Reconnect;

/// How the writer connects, again after losing its connection.
pub(super) type ConnectOptions = Backend<SqliteConnectOptions, PgConnectOptions>;

/// Most operations applied in one transaction.
const MAX_BATCH: usize = 1024;
/// Operations waiting for the writer before senders wait for room.
const CHANNEL_CAPACITY: usize = 8192;
/// How long a queue's count is trusted on a database other members write
/// to as well: an `ack` on another member is seen within this time.
const SHARED_RECOUNT: std::time::Duration = std::time::Duration::from_secs(1);
/// Commits between two sizings of SQLite's memory to the queue.
const REFIT_EVERY: u64 = 1000;

/// A message that has just been committed to a neighbour's outbound queue,
/// handed to routing in commit order so the neighbour's link can relay it
/// without reading it back. Messages for local queues are not announced
/// here (their live push happens at acceptance), which spares a wake-up per
/// message.
#[derive(Debug)]
pub struct Committed {
    pub message: NewMessage,
    pub destination: Destination,
    /// Its position in the outbound queue, when the insert reported one.
    pub seq: Option<i64>,
}

/// What one sweep step removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    /// Expired messages deleted from user and outbound queues.
    pub expired: u64,
    /// Relayed ids forgotten because their messages expired.
    pub forgotten: u64,
}

impl Swept {
    /// Whether the step found nothing to remove, so the next one would
    /// find nothing either.
    pub fn finished(&self) -> bool {
        self.expired == 0 && self.forgotten == 0
    }
}

/// One request to the writer task: what to do, and its [`Answer`].
enum Op {
    /// A message to queue; the position its insert took, once known.
    Enqueue(Enqueue, Answer<EnqueueOutcome>, Option<i64>),
    Delete(QueueRef, Vec<MessageId>, Answer<u64>),
    Sweep(Millis, Answer<Swept>),
    /// Count a recipient's queues again on their next use: rows of theirs
    /// were deleted outside the writer (a removed device's queue).
    Recount(PhoneNumber, Answer<()>),
    /// Nothing: answered once everything submitted before it is committed.
    Barrier(Answer<()>),
    /// Stop once everything before it is committed.
    Close(oneshot::Sender<()>),
}

/// Where an operation's result goes, and the result once its transaction
/// has worked it out. It is sent only after that transaction commits.
struct Answer<T> {
    reply: oneshot::Sender<Result<T, DbError>>,
    result: Option<T>,
}

impl<T> Answer<T> {
    fn new() -> (Self, oneshot::Receiver<Result<T, DbError>>) {
        let (reply, rx) = oneshot::channel();
        (
            Self {
                reply,
                result: None,
            },
            rx,
        )
    }

    fn send(self) {
        if let Some(result) = self.result {
            let _ = self.reply.send(Ok(result));
        }
    }

    fn fail(self, e: &DbError) {
        let _ = self.reply.send(Err(e.for_each_op()));
    }
}

impl Op {
    /// An enqueue as [`super::enqueue::apply`] takes it, with its outcome
    /// to fill.
    fn enqueue_item(&mut self) -> Option<Item<'_>> {
        match self {
            Op::Enqueue(enqueue, answer, seq) => Some(Item {
                enqueue,
                outcome: &mut answer.result,
                seq,
            }),
            Op::Delete(..) | Op::Sweep(..) | Op::Recount(..) | Op::Barrier(_) | Op::Close(_) => {
                None
            }
        }
    }

    /// Answers the operation once its transaction has committed, announcing
    /// a stored message first.
    fn finish(self, committed: &mpsc::UnboundedSender<Committed>) {
        match self {
            Op::Enqueue(e, answer, seq) => {
                let stored = answer.result == Some(EnqueueOutcome::Stored);
                if stored && matches!(e.destination, Destination::Neighbour(_)) {
                    let _ = committed.send(Committed {
                        message: e.message,
                        destination: e.destination,
                        seq,
                    });
                }
                answer.send();
            }
            Op::Delete(_, _, answer) => answer.send(),
            Op::Sweep(_, answer) => answer.send(),
            Op::Recount(_, answer) | Op::Barrier(answer) => answer.send(),
            Op::Close(done) => drop(done),
        }
    }

    fn fail(self, e: &DbError) {
        match self {
            Op::Enqueue(_, answer, _) => answer.fail(e),
            Op::Delete(_, _, answer) => answer.fail(e),
            Op::Sweep(_, answer) => answer.fail(e),
            Op::Recount(_, answer) | Op::Barrier(answer) => answer.fail(e),
            Op::Close(done) => drop(done),
        }
    }
}

/// A cloneable handle to the writer task.
#[derive(Clone)]
pub(super) struct QueueWriter {
    tx: mpsc::Sender<Op>,
}

impl QueueWriter {
    /// Opens the writer's own connection and starts the task. Committed
    /// messages are announced on `committed`, in commit order.
    pub(super) async fn start(
        options: ConnectOptions,
        quotas: Quotas,
        committed: mpsc::UnboundedSender<Committed>,
        health: Arc<Health>,
        membership: Arc<Membership>,
    ) -> Result<Self, DbError> {
        let conn = reconnect::connect(&options).await?;
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        // Other members change a shared database's queues too: counts are
        // read again now and then instead of trusted for ever.
        let recount = match options {
            Backend::Sqlite(_) => None,
            Backend::Postgres(_) => Some(SHARED_RECOUNT),
        };
        let task = Task {
            conn: Some(conn),
            options,
            reconnect: Reconnect::default(),
            ledger: Ledger::new(quotas, recount),
            committed,
            health,
            membership,
            commits: 0,
        };
        tokio::spawn(task.run(rx));
        Ok(Self { tx })
    }

    /// Commits what was submitted before, then stops the task and closes
    /// its connection.
    pub(super) async fn close(&self) {
        let (done, closed) = oneshot::channel();
        if self.tx.send(Op::Close(done)).await.is_ok() {
            let _ = closed.await;
        }
    }

    async fn submit(&self, op: Op) -> Result<(), DbError> {
        self.tx.send(op).await.map_err(|_| DbError::WriterGone)
    }
}

impl Store {
    /// Starts queuing a message and returns the receiver of its outcome,
    /// so a session can read its next request while the commit is pending.
    /// Operations are applied in the order they are submitted.
    pub async fn submit_enqueue(
        &self,
        message: Enqueue,
    ) -> Result<oneshot::Receiver<Result<EnqueueOutcome, DbError>>, DbError> {
        let (answer, rx) = Answer::new();
        self.writer
            .submit(Op::Enqueue(message, answer, None))
            .await?;
        Ok(rx)
    }

    /// Deletes the given messages of one queue; returns how many existed.
    pub async fn delete(&self, queue: QueueRef, ids: Vec<MessageId>) -> Result<u64, DbError> {
        let rx = self.submit_delete(queue, ids).await?;
        rx.await.map_err(|_| DbError::WriterGone)?
    }

    /// Starts deleting the given messages of one queue and returns the
    /// receiver of how many existed: deletes submitted together share one
    /// transaction.
    pub async fn submit_delete(
        &self,
        queue: QueueRef,
        ids: Vec<MessageId>,
    ) -> Result<oneshot::Receiver<Result<u64, DbError>>, DbError> {
        let (answer, rx) = Answer::new();
        self.writer.submit(Op::Delete(queue, ids, answer)).await?;
        Ok(rx)
    }

    /// Makes the writer count `recipient`'s queues again from the table,
    /// after rows of theirs were deleted outside it.
    pub(super) async fn recount(&self, recipient: PhoneNumber) -> Result<(), DbError> {
        let (answer, rx) = Answer::new();
        self.writer.submit(Op::Recount(recipient, answer)).await?;
        rx.await.map_err(|_| DbError::WriterGone)?
    }

    /// Waits until everything submitted to the writer before this call has
    /// committed (or failed), so a read that follows sees every message
    /// accepted before it.
    pub async fn settled(&self) -> Result<(), DbError> {
        let (answer, rx) = Answer::new();
        self.writer.submit(Op::Barrier(answer)).await?;
        rx.await.map_err(|_| DbError::WriterGone)?
    }

    /// Sweeps step after step, reading the time before each, until one
    /// removes nothing; returns what the steps removed together, and the
    /// error that stopped them early, if any. Each step is a transaction
    /// of its own, so other writes go in between.
    pub async fn sweep_until_finished(
        &self,
        now: impl Fn() -> Millis,
    ) -> (Swept, Result<(), DbError>) {
        let mut total = Swept {
            expired: 0,
            forgotten: 0,
        };
        loop {
            match self.sweep(now()).await {
                Ok(step) if step.finished() => return (total, Ok(())),
                Ok(step) => {
                    total.expired += step.expired;
                    total.forgotten += step.forgotten;
                }
                Err(e) => return (total, Err(e)),
            }
        }
    }

    /// Deletes expired messages and forgets relayed ids past their
    /// messages' expiry, a bounded number of each per call: one step of
    /// [`Store::sweep_until_finished`].
    pub async fn sweep(&self, now: Millis) -> Result<Swept, DbError> {
        let (answer, rx) = Answer::new();
        self.writer.submit(Op::Sweep(now, answer)).await?;
        rx.await.map_err(|_| DbError::WriterGone)?
    }
}

struct Task {
    /// `None` after the connection was lost, until it is made again.
    conn: Option<OwnedConn>,
    options: ConnectOptions,
    reconnect: Reconnect,
    ledger: Ledger,
    committed: mpsc::UnboundedSender<Committed>,
    health: Arc<Health>,
    membership: Arc<Membership>,
    /// Transactions committed, counted for [`REFIT_EVERY`].
    commits: u64,
}

impl Task {
    async fn run(mut self, mut rx: mpsc::Receiver<Op>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
            let Some(at) = batch.iter().position(|op| matches!(op, Op::Close(_))) else {
                self.commit_batch(std::mem::take(&mut batch)).await;
                continue;
            };
            // Whatever comes after the close is refused.
            rx.close();
            let late = batch.split_off(at + 1);
            self.commit_batch(batch).await;
            for op in late {
                op.fail(&DbError::WriterGone);
            }
            while let Ok(op) = rx.try_recv() {
                op.fail(&DbError::WriterGone);
            }
            break;
        }
        if let Some(conn) = self.conn.take() {
            conn.close().await;
        }
    }

    async fn commit_batch(&mut self, mut ops: Vec<Op>) {
        let result = self.apply(&mut ops).await;
        self.health.observe_write(&result);
        match result {
            Ok(()) => {
                crate::metrics::get().commit_batch.observe(ops.len() as f64);
                for op in ops {
                    op.finish(&self.committed);
                }
            }
            Err(e) => {
                // An outage is logged by `health`, once.
                if !e.is_outage() {
                    tracing::error!(error = %e, "queue transaction failed; senders are told to retry");
                }
                // Counts may include rolled-back changes: reload on next use.
                self.ledger.forget();
                for op in ops {
                    op.fail(&e);
                }
            }
        }
    }

    /// Applies `ops` in one transaction, leaving each one's result in its
    /// answer. A connection the failure left unfit is dropped and made
    /// again for a later batch.
    async fn apply(&mut self, ops: &mut [Op]) -> Result<(), DbError> {
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => self
                .conn
                .insert(self.reconnect.connect(&self.options).await?),
        };
        let mut tx = conn.borrow();
        self.ledger.recount_if_due();
        if matches!(tx, Backend::Sqlite(_)) && apply::one_write(ops) {
            // One statement is its own transaction, committed and synced
            // before it returns: BEGIN and COMMIT would be two more round
            // trips to SQLite's thread for nothing. If it fails, SQLite has
            // undone it and the connection is outside any transaction.
            let result = apply::ops(&mut tx, &mut self.ledger, ops).await;
            if result.is_ok() {
                self.refit_memory().await;
            }
            return result;
        }
        let work = match tx.begin().await {
            Ok(()) => match apply::ops(&mut tx, &mut self.ledger, ops).await {
                Ok(()) => {
                    let events = stored_events(ops, &self.membership);
                    cluster::notify_at_commit(&mut tx, &self.membership, &events).await
                }
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        let (result, fit) = tx.end_after(work).await;
        if !fit {
            tracing::warn!("the queue writer's connection is unusable; connecting again");
            self.conn = None;
        }
        if result.is_ok() {
            self.refit_memory().await;
        }
        result
    }

    /// Every [`REFIT_EVERY`] commits, sizes SQLite's cache and memory map
    /// to the queue again, so a server that grows from empty to millions
    /// of rows gets the memory that size needs without restarting.
    async fn refit_memory(&mut self) {
        self.commits = self.commits.wrapping_add(1);
        if !self.commits.is_multiple_of(REFIT_EVERY) {
            return;
        }
        if let Some(Backend::Sqlite(conn)) = &mut self.conn
            && let Err(e) = sqlite::fit_memory(conn).await
        {
            tracing::warn!(error = %e, "could not size the database cache to the queue");
        }
    }
}

/// What the other members of a cluster hear of a batch: each message
/// stored for a recipient (whom they may be serving; carried whole when the
/// recipient is connected to one of them) and each neighbour whose outbound
/// queue grew (whose link they may hold).
fn stored_events(ops: &[Op], membership: &Membership) -> Vec<Event> {
    let mut events = Vec::new();
    for op in ops {
        let Op::Enqueue(e, answer, _) = op else {
            continue;
        };
        if answer.result != Some(EnqueueOutcome::Stored) {
            continue;
        }
        let event = match &e.destination {
            Destination::Local => {
                Event::stored(&e.message, membership.carries_for(&e.message.recipient))
            }
            Destination::Neighbour(o) => Event::Outbound(o.neighbour),
        };
        if !matches!(event, Event::Outbound(_)) || !events.contains(&event) {
            events.push(event);
        }
    }
    events
}
