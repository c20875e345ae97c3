//! Group commit: one task owns the write connection to the message queue and
//! applies every pending operation from all sessions in one transaction, so
//! one `fsync` covers many senders. A sender's reply is sent only after the
//! commit that contains its message.
//!
//! The task also keeps each queue's usage in memory ([`super::quota`]), so
//! quota checks cost no query.

use std::collections::HashMap;

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, SqliteConnection};
use tokio::sync::{mpsc, oneshot};

use super::enqueue::{self, Destination, Enqueue, EnqueueOutcome, Item};
use super::outbound;
use super::queue::{self, NewMessage, QueueKey, QueueRef, Table};
use super::quota::{Ledger, Quotas};
use super::{DbError, Millis};
use crate::domain::{Fingerprint, MessageId, PhoneNumber};

/// Most operations applied in one transaction.
const MAX_BATCH: usize = 1024;
/// Operations waiting for the writer before senders wait for room.
const CHANNEL_CAPACITY: usize = 8192;
/// Most expired rows deleted per sweep transaction.
const SWEEP_LIMIT: u32 = 5000;

/// A message that has just been committed, handed to routing (live push, or
/// waking the neighbour's link) in commit order.
#[derive(Debug)]
pub struct Committed {
    pub message: NewMessage,
    pub destination: Destination,
}

/// One request to the writer task: what to do, and its [`Answer`].
enum Op {
    Enqueue(Enqueue, Answer<EnqueueOutcome>),
    Delete(QueueRef, Vec<MessageId>, Answer<u64>),
    Sweep(Millis, Answer<u64>),
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
        let _ = self.reply.send(Err(DbError::RolledBack(e.to_string())));
    }
}

impl Op {
    /// An enqueue as [`enqueue::apply`] takes it, with its outcome to fill.
    fn enqueue_item(&mut self) -> Option<Item<'_>> {
        match self {
            Op::Enqueue(enqueue, answer) => Some(Item {
                enqueue,
                outcome: &mut answer.result,
            }),
            Op::Delete(..) | Op::Sweep(..) => None,
        }
    }

    /// Answers the operation once its transaction has committed, announcing
    /// a stored message first.
    fn finish(self, committed: &mpsc::UnboundedSender<Committed>) {
        match self {
            Op::Enqueue(e, answer) => {
                if answer.result == Some(EnqueueOutcome::Stored) {
                    let _ = committed.send(Committed {
                        message: e.message,
                        destination: e.destination,
                    });
                }
                answer.send();
            }
            Op::Delete(_, _, answer) | Op::Sweep(_, answer) => answer.send(),
        }
    }

    fn fail(self, e: &DbError) {
        match self {
            Op::Enqueue(_, answer) => answer.fail(e),
            Op::Delete(_, _, answer) | Op::Sweep(_, answer) => answer.fail(e),
        }
    }
}

/// A cloneable handle to the writer task. The task ends when every handle
/// has been dropped and the pending operations are committed.
#[derive(Clone)]
pub struct QueueWriter {
    tx: mpsc::Sender<Op>,
}

impl QueueWriter {
    /// Opens the writer's own connection and starts the task. Committed
    /// messages are announced on `committed`, in commit order.
    pub async fn start(
        options: &SqliteConnectOptions,
        quotas: Quotas,
        committed: mpsc::UnboundedSender<Committed>,
    ) -> Result<(Self, tokio::task::JoinHandle<()>), DbError> {
        let conn = SqliteConnection::connect_with(options).await?;
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let task = Task {
            conn,
            ledger: Ledger::new(quotas),
            committed,
        };
        let handle = tokio::spawn(task.run(rx));
        Ok((Self { tx }, handle))
    }

    /// Starts queuing a message and returns the receiver of its outcome,
    /// so a session can read its next request while the commit is pending.
    /// Operations are applied in the order they are submitted.
    pub async fn submit_enqueue(
        &self,
        message: Enqueue,
    ) -> Result<oneshot::Receiver<Result<EnqueueOutcome, DbError>>, DbError> {
        let (answer, rx) = Answer::new();
        self.submit(Op::Enqueue(message, answer)).await?;
        Ok(rx)
    }

    /// Deletes the given messages of one queue; returns how many existed.
    pub async fn delete(&self, queue: QueueRef, ids: Vec<MessageId>) -> Result<u64, DbError> {
        let (answer, rx) = Answer::new();
        self.submit(Op::Delete(queue, ids, answer)).await?;
        rx.await.map_err(|_| DbError::WriterGone)?
    }

    /// Deletes expired messages; returns how many.
    pub async fn sweep(&self, now: Millis) -> Result<u64, DbError> {
        let (answer, rx) = Answer::new();
        self.submit(Op::Sweep(now, answer)).await?;
        rx.await.map_err(|_| DbError::WriterGone)?
    }

    async fn submit(&self, op: Op) -> Result<(), DbError> {
        self.tx.send(op).await.map_err(|_| DbError::WriterGone)
    }
}

struct Task {
    conn: SqliteConnection,
    ledger: Ledger,
    committed: mpsc::UnboundedSender<Committed>,
}

impl Task {
    async fn run(mut self, mut rx: mpsc::Receiver<Op>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
            self.commit_batch(std::mem::take(&mut batch)).await;
        }
        if let Err(e) = self.conn.close().await {
            tracing::warn!(error = %e, "closing the queue writer's connection failed");
        }
    }

    async fn commit_batch(&mut self, mut ops: Vec<Op>) {
        match self.apply(&mut ops).await {
            Ok(()) => {
                for op in ops {
                    op.finish(&self.committed);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "queue transaction failed; senders are told to retry");
                // Counts may include rolled-back changes: reload on next use.
                self.ledger.forget();
                for op in ops {
                    op.fail(&e);
                }
            }
        }
    }

    /// Applies `ops` in one transaction, leaving each one's result in its
    /// answer.
    async fn apply(&mut self, ops: &mut [Op]) -> Result<(), DbError> {
        let mut tx = self.conn.begin_with("BEGIN IMMEDIATE").await?;
        let mut rest = ops;
        while !rest.is_empty() {
            // Consecutive enqueues share multi-row statements.
            let enqueues = rest
                .iter()
                .take(queue::INSERT_CHUNK)
                .take_while(|op| matches!(op, Op::Enqueue(..)))
                .count();
            let (head, tail) = std::mem::take(&mut rest).split_at_mut(enqueues.max(1));
            rest = tail;
            match head {
                [Op::Delete(queue, ids, answer)] => {
                    answer.result = Some(delete(&mut tx, &mut self.ledger, queue, ids).await?);
                }
                [Op::Sweep(now, answer)] => {
                    answer.result = Some(sweep(&mut tx, &mut self.ledger, *now).await?);
                }
                run => {
                    let items = run.iter_mut().filter_map(Op::enqueue_item).collect();
                    enqueue::apply(&mut tx, &mut self.ledger, items).await?;
                }
            }
        }
        tx.commit().await?;
        Ok(())
    }
}

async fn delete(
    conn: &mut SqliteConnection,
    ledger: &mut Ledger,
    queue: &QueueRef,
    ids: &[MessageId],
) -> Result<u64, DbError> {
    let mut deleted = 0;
    for chunk in ids.chunks(queue::DELETE_CHUNK) {
        for size in queue::delete_many(conn, queue.key(), chunk).await? {
            deleted += 1;
            ledger.give_back(queue.key(), size);
        }
    }
    Ok(deleted)
}

/// Deletes expired messages from user and outbound queues (logging drops
/// of relayed mail per neighbour) and forgets old relayed ids.
async fn sweep(
    conn: &mut SqliteConnection,
    ledger: &mut Ledger,
    now: Millis,
) -> Result<u64, DbError> {
    let local = queue::delete_expired(conn, Table::Messages, now, SWEEP_LIMIT).await?;
    for (recipient, size) in &local {
        if let Ok(phone) = PhoneNumber::from_canonical(recipient) {
            ledger.give_back(QueueKey::Recipient(&phone), *size);
        }
    }
    let outbound = queue::delete_expired(conn, Table::Outbound, now, SWEEP_LIMIT).await?;
    let mut per_neighbour: HashMap<&str, u64> = HashMap::new();
    for (neighbour, size) in &outbound {
        if let Some(fp) = Fingerprint::parse(neighbour) {
            ledger.give_back(QueueKey::Neighbour(fp), *size);
        }
        *per_neighbour.entry(neighbour).or_default() += 1;
    }
    for (neighbour, n) in per_neighbour {
        tracing::warn!(
            neighbour,
            dropped = n,
            "messages expired before the neighbour took them; dropped"
        );
    }
    outbound::forget_seen(conn, now).await?;
    Ok((local.len() + outbound.len()) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::outbound::NewOutbound;
    use crate::db::quota::Quota;

    const MAX_MESSAGES: u64 = 2;

    fn quota() -> Quota {
        Quota {
            max_messages: MAX_MESSAGES,
            max_bytes: 1 << 20,
        }
    }

    fn message(id: u8, recipient: &PhoneNumber) -> NewMessage {
        NewMessage {
            id: MessageId::from_bytes([id; 16]),
            recipient: recipient.clone(),
            sender: PhoneNumber::from_canonical("+12025550199").unwrap(),
            envelope: vec![id; 100],
            received_at: 0,
            expires_at: i64::MAX,
        }
    }

    fn enqueue(id: u8, recipient: &PhoneNumber, destination: &Destination) -> Enqueue {
        Enqueue {
            message: message(id, recipient),
            destination: destination.clone(),
            relayed: matches!(destination, Destination::Neighbour(_)),
        }
    }

    /// Submits every enqueue before awaiting any, so they may share one
    /// transaction, and returns their outcomes in order.
    async fn submit_all(writer: &QueueWriter, batch: Vec<Enqueue>) -> Vec<EnqueueOutcome> {
        let mut pending = Vec::new();
        for e in batch {
            pending.push(writer.submit_enqueue(e).await.unwrap());
        }
        let mut outcomes = Vec::new();
        for rx in pending {
            outcomes.push(rx.await.unwrap().unwrap());
        }
        outcomes
    }

    /// Repeats, quota refusals and deletes follow the rules of a one-by-one
    /// insert in both kinds of queue, each counted apart, and what is
    /// deleted or refused gives its room back.
    #[tokio::test]
    async fn batched_enqueues_count_each_queue_apart() {
        use EnqueueOutcome::{Duplicate, QuotaFull, Stored};
        let dir = tempfile::tempdir().unwrap();
        let (pool, options) = crate::db::open(dir.path()).await.unwrap();
        let (committed, mut announced) = mpsc::unbounded_channel();
        let quotas = Quotas {
            per_recipient: quota(),
            per_neighbour: quota(),
        };
        let (writer, task) = QueueWriter::start(&options, quotas, committed)
            .await
            .unwrap();
        let alice = PhoneNumber::from_canonical("+12025550101").unwrap();
        let neighbour = Fingerprint::of_spki(b"neighbour");
        let remote = Destination::Neighbour(NewOutbound {
            neighbour,
            path: "[]".into(),
        });
        // After an acknowledgement, message 1 comes again: the recipient's
        // queue takes it, the neighbour's refuses a relayed id seen before
        // and gives its room to message 4.
        let cases = [
            (Destination::Local, [Stored, QuotaFull]),
            (remote, [Duplicate, Stored]),
        ];
        for (destination, after_ack) in cases {
            let queue = match &destination {
                Destination::Local => QueueRef::Recipient(alice.clone()),
                Destination::Neighbour(o) => QueueRef::Neighbour(o.neighbour),
            };
            let submit = |ids: &[u8]| {
                let batch = ids.iter().map(|&id| enqueue(id, &alice, &destination));
                submit_all(&writer, batch.collect())
            };
            let delete = |ids: &[u8]| {
                let ids = ids.iter().map(|&id| MessageId::from_bytes([id; 16]));
                writer.delete(queue.clone(), ids.collect())
            };
            assert_eq!(
                submit(&[1, 1, 2, 3, 2]).await,
                [Stored, Duplicate, Stored, QuotaFull, Duplicate]
            );
            assert_eq!(delete(&[1, 9]).await.unwrap(), 1);
            assert_eq!(submit(&[3, 2]).await, [Stored, Duplicate]);
            assert_eq!(delete(&[2]).await.unwrap(), 1);
            assert_eq!(submit(&[1]).await[0], after_ack[0]);
            assert_eq!(submit(&[4]).await[0], after_ack[1]);
        }
        drop(writer);
        task.await.unwrap();
        let mut stored = Vec::new();
        while let Ok(c) = announced.try_recv() {
            stored.push(c.message.id.as_bytes()[0]);
        }
        assert_eq!(stored, [1, 2, 3, 1, 1, 2, 3, 4]);
        let queued: i64 = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM message_queue) + (SELECT count(*) FROM outbound_queue)",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(queued, 2 * MAX_MESSAGES as i64);
    }
}
