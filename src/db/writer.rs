//! Group commit: one task owns the write connection to the message queue and
//! applies every pending operation from all sessions in one transaction, so
//! one `fsync` covers many senders. A sender's reply is sent only after the
//! commit that contains its message.
//!
//! The task also keeps each recipient's queue usage in memory (loaded on
//! first use), so quota checks cost no query.

use std::collections::HashMap;

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, SqliteConnection};
use tokio::sync::{mpsc, oneshot};

use super::queue::{self, NewMessage};
use super::{DbError, Millis};

/// Most operations applied in one transaction.
const MAX_BATCH: usize = 1024;
/// Operations waiting for the writer before senders wait for room.
const CHANNEL_CAPACITY: usize = 8192;
/// Most expired rows deleted per sweep transaction.
const SWEEP_LIMIT: u32 = 5000;

/// Per-recipient limits on the queue.
#[derive(Debug, Clone, Copy)]
pub struct Quota {
    pub max_messages: u64,
    pub max_bytes: u64,
}

/// What became of an enqueued message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnqueueOutcome {
    /// Committed to the queue.
    Stored,
    /// A message with this id was queued before; nothing changed.
    Duplicate,
    /// The recipient's queue is full.
    QuotaFull,
}

/// A message that has just been committed, handed to routing for live push
/// in commit order.
#[derive(Debug)]
pub struct Committed {
    pub seq: i64,
    pub message: NewMessage,
}

enum Op {
    Enqueue(NewMessage, oneshot::Sender<Result<EnqueueOutcome, DbError>>),
    Delete(String, Vec<[u8; 16]>, oneshot::Sender<Result<u64, DbError>>),
    Sweep(Millis, oneshot::Sender<Result<u64, DbError>>),
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
        quota: Quota,
        committed: mpsc::UnboundedSender<Committed>,
    ) -> Result<(Self, tokio::task::JoinHandle<()>), DbError> {
        let conn = SqliteConnection::connect_with(options).await?;
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let task = Task { conn, quota, usage: HashMap::new(), committed };
        let handle = tokio::spawn(task.run(rx));
        Ok((Self { tx }, handle))
    }

    /// Queues a message; resolves once it is committed (or refused).
    pub async fn enqueue(&self, message: NewMessage) -> Result<EnqueueOutcome, DbError> {
        let (reply, rx) = oneshot::channel();
        self.submit(Op::Enqueue(message, reply)).await?;
        rx.await.map_err(|_| DbError::WriterGone)?
    }

    /// Starts queuing a message and returns the receiver of its outcome,
    /// so a session can read its next request while the commit is pending.
    /// Operations are applied in the order they are submitted.
    pub async fn submit_enqueue(
        &self,
        message: NewMessage,
    ) -> Result<oneshot::Receiver<Result<EnqueueOutcome, DbError>>, DbError> {
        let (reply, rx) = oneshot::channel();
        self.submit(Op::Enqueue(message, reply)).await?;
        Ok(rx)
    }

    /// Deletes the given messages of `recipient`; returns how many existed.
    pub async fn delete(&self, recipient: String, ids: Vec<[u8; 16]>) -> Result<u64, DbError> {
        let (reply, rx) = oneshot::channel();
        self.submit(Op::Delete(recipient, ids, reply)).await?;
        rx.await.map_err(|_| DbError::WriterGone)?
    }

    /// Deletes expired messages; returns how many.
    pub async fn sweep(&self, now: Millis) -> Result<u64, DbError> {
        let (reply, rx) = oneshot::channel();
        self.submit(Op::Sweep(now, reply)).await?;
        rx.await.map_err(|_| DbError::WriterGone)?
    }

    async fn submit(&self, op: Op) -> Result<(), DbError> {
        self.tx.send(op).await.map_err(|_| DbError::WriterGone)
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    count: u64,
    bytes: u64,
}

/// Where an operation's result goes.
enum Reply {
    Enqueue(oneshot::Sender<Result<EnqueueOutcome, DbError>>),
    Count(oneshot::Sender<Result<u64, DbError>>),
}

/// The result of one operation, held until its transaction commits.
enum Outcome {
    Enqueue(EnqueueOutcome, Option<Committed>),
    Count(u64),
}

struct Task {
    conn: SqliteConnection,
    quota: Quota,
    usage: HashMap<String, Usage>,
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

    async fn commit_batch(&mut self, ops: Vec<Op>) {
        let mut done = Vec::with_capacity(ops.len());
        let mut replies = Vec::with_capacity(ops.len());
        match self.apply(ops, &mut done, &mut replies).await {
            Ok(()) => self.announce(replies, done),
            Err(e) => {
                tracing::error!(error = %e, "queue transaction failed; senders are told to retry");
                // Counters may include rolled-back changes: reload on next use.
                self.usage.clear();
                for reply in replies {
                    fail(reply, &e);
                }
            }
        }
    }

    /// Applies `ops` in one transaction. Every operation's reply ends up in
    /// `replies`, whether or not the transaction succeeds.
    async fn apply(
        &mut self,
        ops: Vec<Op>,
        done: &mut Vec<Outcome>,
        replies: &mut Vec<Reply>,
    ) -> Result<(), DbError> {
        let mut work = Vec::with_capacity(ops.len());
        for op in ops {
            let (reply, w) = op.split();
            replies.push(reply);
            work.push(w);
        }
        let mut tx = self.conn.begin_with("BEGIN IMMEDIATE").await?;
        for w in work {
            let outcome = match w {
                Work::Enqueue(m) => {
                    let (o, c) = enqueue(&mut tx, &mut self.usage, self.quota, m).await?;
                    Outcome::Enqueue(o, c)
                }
                Work::Delete(r, ids) => Outcome::Count(delete(&mut tx, &mut self.usage, &r, &ids).await?),
                Work::Sweep(now) => Outcome::Count(sweep(&mut tx, &mut self.usage, now).await?),
            };
            done.push(outcome);
        }
        tx.commit().await?;
        Ok(())
    }

    fn announce(&self, replies: Vec<Reply>, done: Vec<Outcome>) {
        for (reply, outcome) in replies.into_iter().zip(done) {
            match (reply, outcome) {
                (Reply::Enqueue(tx), Outcome::Enqueue(o, committed)) => {
                    if let Some(c) = committed {
                        let _ = self.committed.send(c);
                    }
                    let _ = tx.send(Ok(o));
                }
                (Reply::Count(tx), Outcome::Count(n)) => {
                    let _ = tx.send(Ok(n));
                }
                _ => unreachable!("replies and outcomes are built in the same order"),
            }
        }
    }
}

enum Work {
    Enqueue(NewMessage),
    Delete(String, Vec<[u8; 16]>),
    Sweep(Millis),
}

impl Op {
    fn split(self) -> (Reply, Work) {
        match self {
            Op::Enqueue(m, r) => (Reply::Enqueue(r), Work::Enqueue(m)),
            Op::Delete(rc, ids, r) => (Reply::Count(r), Work::Delete(rc, ids)),
            Op::Sweep(now, r) => (Reply::Count(r), Work::Sweep(now)),
        }
    }
}

fn fail(reply: Reply, e: &DbError) {
    let err = || DbError::RolledBack(e.to_string());
    match reply {
        Reply::Enqueue(tx) => {
            let _ = tx.send(Err(err()));
        }
        Reply::Count(tx) => {
            let _ = tx.send(Err(err()));
        }
    }
}

async fn usage_of<'a>(
    conn: &mut SqliteConnection,
    usage: &'a mut HashMap<String, Usage>,
    recipient: &str,
) -> Result<&'a mut Usage, DbError> {
    if !usage.contains_key(recipient) {
        let (count, bytes) = queue::usage(conn, recipient).await?;
        usage.insert(recipient.to_owned(), Usage { count, bytes });
    }
    Ok(usage.get_mut(recipient).expect("inserted above"))
}

async fn enqueue(
    conn: &mut SqliteConnection,
    usage: &mut HashMap<String, Usage>,
    quota: Quota,
    m: NewMessage,
) -> Result<(EnqueueOutcome, Option<Committed>), DbError> {
    let size = m.envelope.len() as u64;
    let u = usage_of(conn, usage, &m.recipient).await?;
    if u.count + 1 > quota.max_messages || u.bytes + size > quota.max_bytes {
        return Ok((EnqueueOutcome::QuotaFull, None));
    }
    if !queue::insert(conn, &m).await? {
        return Ok((EnqueueOutcome::Duplicate, None));
    }
    let seq: i64 = sqlx::query_scalar("SELECT last_insert_rowid()").fetch_one(&mut *conn).await?;
    let u = usage.get_mut(&m.recipient).expect("loaded above");
    u.count += 1;
    u.bytes += size;
    Ok((EnqueueOutcome::Stored, Some(Committed { seq, message: m })))
}

async fn delete(
    conn: &mut SqliteConnection,
    usage: &mut HashMap<String, Usage>,
    recipient: &str,
    ids: &[[u8; 16]],
) -> Result<u64, DbError> {
    let mut deleted = 0;
    for id in ids {
        if let Some(size) = queue::delete(conn, recipient, id).await? {
            deleted += 1;
            if let Some(u) = usage.get_mut(recipient) {
                u.count = u.count.saturating_sub(1);
                u.bytes = u.bytes.saturating_sub(size);
            }
        }
    }
    Ok(deleted)
}

async fn sweep(conn: &mut SqliteConnection, usage: &mut HashMap<String, Usage>, now: Millis) -> Result<u64, DbError> {
    let gone = queue::delete_expired(conn, now, SWEEP_LIMIT).await?;
    for (recipient, size) in &gone {
        if let Some(u) = usage.get_mut(recipient) {
            u.count = u.count.saturating_sub(1);
            u.bytes = u.bytes.saturating_sub(*size);
        }
    }
    Ok(gone.len() as u64)
}
