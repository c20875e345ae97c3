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

use super::outbound::{self, NewOutbound};
use super::queue::{self, NewMessage, Table};
use super::{DbError, Millis};

/// Most operations applied in one transaction.
const MAX_BATCH: usize = 1024;
/// Operations waiting for the writer before senders wait for room.
const CHANNEL_CAPACITY: usize = 8192;
/// Most expired rows deleted per sweep transaction.
const SWEEP_LIMIT: u32 = 5000;

/// Limits on one queue (a recipient's, or a neighbour's outbound queue).
#[derive(Debug, Clone, Copy)]
pub struct Quota {
    pub max_messages: u64,
    pub max_bytes: u64,
}

/// The limits the writer enforces.
#[derive(Debug, Clone, Copy)]
pub struct Quotas {
    pub per_recipient: Quota,
    pub per_neighbour: Quota,
}

/// Where a message is committed.
#[derive(Debug, Clone)]
pub enum Destination {
    /// The recipient's queue on this server.
    Local,
    /// The outbound queue of the neighbour leading to the recipient's home.
    Neighbour(NewOutbound),
}

/// A message to commit.
#[derive(Debug)]
pub struct Enqueue {
    pub message: NewMessage,
    pub destination: Destination,
    /// Received from a neighbour: record its id so a re-sent copy is dropped.
    pub relayed: bool,
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

/// A message that has just been committed, handed to routing (live push, or
/// waking the neighbour's link) in commit order.
#[derive(Debug)]
pub struct Committed {
    pub message: NewMessage,
    pub destination: Destination,
}

/// Which queue a delete applies to.
#[derive(Debug, Clone)]
pub enum QueueRef {
    Recipient(String),
    Neighbour(String),
}

impl QueueRef {
    fn usage_key(&self) -> String {
        match self {
            QueueRef::Recipient(r) => r.clone(),
            QueueRef::Neighbour(n) => format!("neighbour:{n}"),
        }
    }
}

enum Op {
    Enqueue(Enqueue, oneshot::Sender<Result<EnqueueOutcome, DbError>>),
    Delete(
        QueueRef,
        Vec<[u8; 16]>,
        oneshot::Sender<Result<u64, DbError>>,
    ),
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
        quota: Quotas,
        committed: mpsc::UnboundedSender<Committed>,
    ) -> Result<(Self, tokio::task::JoinHandle<()>), DbError> {
        let conn = SqliteConnection::connect_with(options).await?;
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let task = Task {
            conn,
            quota,
            usage: HashMap::new(),
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
        let (reply, rx) = oneshot::channel();
        self.submit(Op::Enqueue(message, reply)).await?;
        Ok(rx)
    }

    /// Deletes the given messages of one queue; returns how many existed.
    pub async fn delete(&self, queue: QueueRef, ids: Vec<[u8; 16]>) -> Result<u64, DbError> {
        let (reply, rx) = oneshot::channel();
        self.submit(Op::Delete(queue, ids, reply)).await?;
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
    quota: Quotas,
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
        let mut work = work.into_iter().peekable();
        while let Some(w) = work.next() {
            match w {
                Work::Enqueue(first) => {
                    // Consecutive enqueues share multi-row statements.
                    let mut run = vec![first];
                    while run.len() < queue::INSERT_CHUNK
                        && matches!(work.peek(), Some(Work::Enqueue(_)))
                    {
                        if let Some(Work::Enqueue(e)) = work.next() {
                            run.push(e);
                        }
                    }
                    for (o, c) in enqueue_batch(&mut tx, &mut self.usage, self.quota, run).await? {
                        done.push(Outcome::Enqueue(o, c));
                    }
                }
                Work::Delete(q, ids) => done.push(Outcome::Count(
                    delete(&mut tx, &mut self.usage, &q, &ids).await?,
                )),
                Work::Sweep(now) => {
                    done.push(Outcome::Count(sweep(&mut tx, &mut self.usage, now).await?))
                }
            }
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
    Enqueue(Enqueue),
    Delete(QueueRef, Vec<[u8; 16]>),
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

/// Whether this message is already in its destination queue.
async fn already_queued(conn: &mut SqliteConnection, e: &Enqueue) -> Result<bool, DbError> {
    let found: Option<i64> = match &e.destination {
        Destination::Local => {
            sqlx::query_scalar("SELECT 1 FROM message_queue WHERE id = $1")
                .bind(&e.message.id[..])
                .fetch_optional(conn)
                .await?
        }
        Destination::Neighbour(o) => {
            sqlx::query_scalar("SELECT 1 FROM outbound_queue WHERE neighbour = $1 AND id = $2")
                .bind(&o.neighbour)
                .bind(&e.message.id[..])
                .fetch_optional(conn)
                .await?
        }
    };
    Ok(found.is_some())
}

/// The usage key and limits of an enqueue's destination queue.
fn queue_of(e: &Enqueue, quotas: Quotas) -> (String, Quota) {
    match &e.destination {
        Destination::Local => (e.message.recipient.clone(), quotas.per_recipient),
        Destination::Neighbour(o) => (format!("neighbour:{}", o.neighbour), quotas.per_neighbour),
    }
}

/// Commits a run of enqueues with a few multi-row statements instead of one
/// statement per message (each statement is a round trip to SQLite's
/// thread). Returns an outcome per enqueue, in order: quota and duplicate
/// rules are those of a one-by-one insert.
async fn enqueue_batch(
    conn: &mut SqliteConnection,
    usage: &mut HashMap<String, Usage>,
    quotas: Quotas,
    batch: Vec<Enqueue>,
) -> Result<Vec<(EnqueueOutcome, Option<Committed>)>, DbError> {
    let mut outcome: Vec<Option<EnqueueOutcome>> = vec![None; batch.len()];
    let keys: Vec<(String, Quota)> = batch.iter().map(|e| queue_of(e, quotas)).collect();
    let mut in_batch = std::collections::HashSet::new();
    let mut counted = vec![false; batch.len()];
    for (i, e) in batch.iter().enumerate() {
        let (key, quota) = &keys[i];
        if !in_batch.insert((key.clone(), e.message.id)) {
            outcome[i] = Some(EnqueueOutcome::Duplicate);
            continue;
        }
        let size = e.message.envelope.len() as u64;
        let u = usage_of(conn, usage, key, &e.destination).await?;
        if u.count + 1 > quota.max_messages || u.bytes + size > quota.max_bytes {
            // A retry of a message already queued is a duplicate, not a
            // refusal: the sender's first attempt did get through.
            let queued = already_queued(conn, e).await?;
            outcome[i] = Some(if queued {
                EnqueueOutcome::Duplicate
            } else {
                EnqueueOutcome::QuotaFull
            });
            continue;
        }
        let u = usage.get_mut(key).expect("loaded above");
        u.count += 1;
        u.bytes += size;
        counted[i] = true;
    }
    let pending = |outcome: &[Option<EnqueueOutcome>]| -> Vec<usize> {
        (0..outcome.len())
            .filter(|&i| outcome[i].is_none())
            .collect()
    };
    let relayed: Vec<usize> = pending(&outcome)
        .into_iter()
        .filter(|&i| batch[i].relayed)
        .collect();
    if !relayed.is_empty() {
        let ids: Vec<([u8; 16], Millis)> = relayed
            .iter()
            .map(|&i| (batch[i].message.id, batch[i].message.expires_at))
            .collect();
        let fresh = outbound::mark_seen_many(conn, &ids).await?;
        for &i in &relayed {
            if !fresh.contains(&batch[i].message.id) {
                outcome[i] = Some(EnqueueOutcome::Duplicate);
            }
        }
    }
    let (local, remote): (Vec<usize>, Vec<usize>) = pending(&outcome)
        .into_iter()
        .partition(|&i| matches!(batch[i].destination, Destination::Local));
    if !local.is_empty() {
        let rows: Vec<&NewMessage> = local.iter().map(|&i| &batch[i].message).collect();
        let inserted = queue::insert_many(conn, &rows).await?;
        for &i in &local {
            if !inserted.contains(&batch[i].message.id) {
                outcome[i] = Some(EnqueueOutcome::Duplicate);
            }
        }
    }
    if !remote.is_empty() {
        let rows: Vec<(&NewMessage, &NewOutbound)> = remote
            .iter()
            .filter_map(|&i| match &batch[i].destination {
                Destination::Neighbour(o) => Some((&batch[i].message, o)),
                Destination::Local => None,
            })
            .collect();
        let inserted = outbound::insert_many(conn, &rows).await?;
        for &i in &remote {
            if let Destination::Neighbour(o) = &batch[i].destination
                && !inserted.contains(&(o.neighbour.clone(), batch[i].message.id))
            {
                outcome[i] = Some(EnqueueOutcome::Duplicate);
            }
        }
    }
    let mut out = Vec::with_capacity(batch.len());
    for (i, e) in batch.into_iter().enumerate() {
        match outcome[i] {
            Some(o) => {
                if counted[i] {
                    // Counted above but not stored: give the room back.
                    shrink(usage, &keys[i].0, e.message.envelope.len() as u64);
                }
                out.push((o, None));
            }
            None => out.push((
                EnqueueOutcome::Stored,
                Some(Committed {
                    message: e.message,
                    destination: e.destination,
                }),
            )),
        }
    }
    Ok(out)
}

async fn usage_of<'a>(
    conn: &mut SqliteConnection,
    usage: &'a mut HashMap<String, Usage>,
    key: &str,
    destination: &Destination,
) -> Result<&'a mut Usage, DbError> {
    if !usage.contains_key(key) {
        let (count, bytes) = match destination {
            Destination::Local => queue::usage(conn, key).await?,
            Destination::Neighbour(o) => outbound::usage(conn, &o.neighbour).await?,
        };
        usage.insert(key.to_owned(), Usage { count, bytes });
    }
    Ok(usage.get_mut(key).expect("inserted above"))
}

async fn delete(
    conn: &mut SqliteConnection,
    usage: &mut HashMap<String, Usage>,
    queue_ref: &QueueRef,
    ids: &[[u8; 16]],
) -> Result<u64, DbError> {
    let mut deleted = 0;
    for chunk in ids.chunks(queue::DELETE_CHUNK) {
        let sizes = match queue_ref {
            QueueRef::Recipient(r) => queue::delete_many(conn, Table::Messages, r, chunk).await?,
            QueueRef::Neighbour(n) => queue::delete_many(conn, Table::Outbound, n, chunk).await?,
        };
        for size in sizes {
            deleted += 1;
            shrink(usage, &queue_ref.usage_key(), size);
        }
    }
    Ok(deleted)
}

fn shrink(usage: &mut HashMap<String, Usage>, key: &str, size: u64) {
    if let Some(u) = usage.get_mut(key) {
        u.count = u.count.saturating_sub(1);
        u.bytes = u.bytes.saturating_sub(size);
    }
}

/// Deletes expired messages from user and outbound queues (logging drops
/// of relayed mail per neighbour) and forgets old relayed ids.
async fn sweep(
    conn: &mut SqliteConnection,
    usage: &mut HashMap<String, Usage>,
    now: Millis,
) -> Result<u64, DbError> {
    let local = queue::delete_expired(conn, Table::Messages, now, SWEEP_LIMIT).await?;
    for (recipient, size) in &local {
        shrink(usage, recipient, *size);
    }
    let outbound = queue::delete_expired(conn, Table::Outbound, now, SWEEP_LIMIT).await?;
    let mut per_neighbour: HashMap<&str, u64> = HashMap::new();
    for (neighbour, size) in &outbound {
        shrink(
            usage,
            &QueueRef::Neighbour(neighbour.clone()).usage_key(),
            *size,
        );
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
