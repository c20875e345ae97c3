//! One transaction's operations in order: runs of enqueues (through
//! [`crate::db::enqueue`]), deletes, and expiry sweeps.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use super::{Op, Swept};
use crate::db::backend::Conn;
use crate::db::queue::{self, QueueKey, QueueRef, Removed, Table};
use crate::db::quota::Ledger;
use crate::db::{DbError, Millis, enqueue, outbound};
use crate::domain::{Fingerprint, MessageId, PhoneNumber};

/// Most expired rows deleted per sweep transaction. It also bounds the
/// writer's statement journal, held in memory: deleting a row changes a
/// page of the table and one of each index, so a step copies at most a few
/// thousand pages (about 12 MiB) however long the queue.
const SWEEP_LIMIT: u32 = 1000;

pub(super) async fn ops(
    tx: &mut Conn<'_>,
    ledger: &mut Ledger,
    ops: &mut [Op],
) -> Result<(), DbError> {
    let mut rest = ops;
    while !rest.is_empty() {
        // One acknowledgement's deletes, one per sender, share statements.
        let acks = acknowledgements(rest);
        if acks > 1 {
            let (head, tail) = std::mem::take(&mut rest).split_at_mut(acks);
            rest = tail;
            delete_acknowledged(tx, ledger, head).await?;
            continue;
        }
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
                answer.result = Some(delete(tx, ledger, queue, ids).await?);
            }
            [Op::Sweep(now, answer)] => {
                answer.result = Some(sweep(tx, ledger, *now).await?);
            }
            [Op::Recount(phone, answer)] => {
                ledger.forget_recipient(phone);
                answer.result = Some(());
            }
            [Op::Barrier(answer)] => answer.result = Some(()),
            [Op::Close(_)] => {}
            run => {
                let items = run.iter_mut().filter_map(Op::enqueue_item).collect();
                enqueue::apply(tx, ledger, items).await?;
            }
        }
    }
    Ok(())
}

/// Whether `ops` write with at most one statement (so, on SQLite, need no
/// explicit transaction): one delete of at most one chunk, several senders'
/// small deletes from one device's queue that share one statement, or one
/// unbroken run of enqueues of one kind that fits one insert (relayed ones also
/// record their ids, a second statement), beside operations that write
/// nothing.
pub(super) fn one_write(ops: &[Op]) -> bool {
    let writes = |op: &&Op| !matches!(op, Op::Barrier(_) | Op::Recount(..) | Op::Close(_));
    let Some(at) = ops.iter().position(|op| writes(&op)) else {
        return true;
    };
    let acks = acknowledgements(&ops[at..]);
    if acks > 1 {
        let ids: usize = ops[at..at + acks]
            .iter()
            .map(|op| match op {
                Op::Delete(_, ids, _) => ids.len(),
                _ => 0,
            })
            .sum();
        return ids <= queue::DELETE_CHUNK && !ops[at + acks..].iter().any(|op| writes(&op));
    }
    let run = match &ops[at] {
        Op::Delete(_, ids, _) => {
            return ids.len() <= queue::DELETE_CHUNK && !ops[at + 1..].iter().any(|op| writes(&op));
        }
        Op::Enqueue(e, ..) if !e.relayed => {
            let local = e.is_local();
            ops[at..]
                .iter()
                .take_while(
                    |op| matches!(op, Op::Enqueue(e, ..) if !e.relayed && e.is_local() == local),
                )
                .count()
        }
        _ => return false,
    };
    run <= queue::INSERT_CHUNK && !ops[at + run..].iter().any(|op| writes(&op))
}

/// A sender's delete of fewer ids than this shares a statement with other
/// senders' deletes from the same device's queue. Each statement is a round
/// trip to SQLite's thread, which an `ack` naming one message from each of
/// a hundred senders paid a hundred times; a shared statement checks every
/// row it finds against its list of (id, sender) pairs, which costs more
/// than a sender's own statement once that names a few dozen ids.
const SHARED_BELOW: usize = 32;

/// How many operations at the head of `ops` are small deletes from one
/// device's queue, each naming a sender: what one `ack` of a few messages
/// from each of several senders submits, deleted together.
fn acknowledgements(ops: &[Op]) -> usize {
    let Some(first) = ops.first().and_then(small_delete) else {
        return 0;
    };
    ops.iter()
        .take_while(|op| small_delete(op) == Some(first))
        .count()
}

/// The queue (recipient and device) a small delete naming a sender is from.
fn small_delete(op: &Op) -> Option<(&PhoneNumber, u32)> {
    match op {
        Op::Delete(QueueRef::Sent(phone, device, _), ids, _) if ids.len() < SHARED_BELOW => {
            Some((phone, *device))
        }
        _ => None,
    }
}

/// Deletes what a run of [`acknowledgements`] names, as (id, sender)
/// pairs in shared statements, and answers each operation with the rows
/// it named; a pair named twice counts for the first operation only.
async fn delete_acknowledged(
    conn: &mut Conn<'_>,
    ledger: &mut Ledger,
    run: &mut [Op],
) -> Result<(), DbError> {
    let Some(Op::Delete(QueueRef::Sent(phone, device, _), ..)) = run.first() else {
        return Ok(());
    };
    let mut named_by: HashMap<(MessageId, &str), usize> = HashMap::new();
    let mut pairs = Vec::new();
    for (at, op) in run.iter().enumerate() {
        let Op::Delete(QueueRef::Sent(_, _, sender), ids, _) = op else {
            continue;
        };
        for id in ids {
            if let Entry::Vacant(slot) = named_by.entry((*id, sender.as_str())) {
                slot.insert(at);
                pairs.push((*id, sender));
            }
        }
    }
    let mut deleted = vec![0u64; run.len()];
    for chunk in pairs.chunks(queue::DELETE_CHUNK) {
        for (id, removed) in queue::delete_pairs(conn, phone, *device, chunk).await? {
            give_back(ledger, QueueKey::Recipient(phone), &removed);
            if let Some(&at) = named_by.get(&(id, removed.sender.as_str())) {
                deleted[at] += 1;
            }
        }
    }
    for (op, n) in run.iter_mut().zip(deleted) {
        if let Op::Delete(_, _, answer) = op {
            answer.result = Some(n);
        }
    }
    Ok(())
}

async fn delete(
    conn: &mut Conn<'_>,
    ledger: &mut Ledger,
    queue: &QueueRef,
    ids: &[MessageId],
) -> Result<u64, DbError> {
    let mut deleted = 0;
    for chunk in ids.chunks(queue::DELETE_CHUNK) {
        for removed in queue::delete_many(conn, queue, chunk).await? {
            deleted += 1;
            give_back(ledger, queue.key(), &removed);
        }
    }
    Ok(deleted)
}

/// Deletes expired messages from user and outbound queues (logging drops
/// of relayed mail per neighbour) and forgets old relayed ids.
async fn sweep(conn: &mut Conn<'_>, ledger: &mut Ledger, now: Millis) -> Result<Swept, DbError> {
    let local = queue::delete_expired(conn, Table::Messages, now, SWEEP_LIMIT).await?;
    for removed in &local {
        if let Ok(phone) = PhoneNumber::from_canonical(&removed.owner) {
            give_back(ledger, QueueKey::Recipient(&phone), removed);
        }
    }
    let outbound = queue::delete_expired(conn, Table::Outbound, now, SWEEP_LIMIT).await?;
    let mut per_neighbour: HashMap<&str, u64> = HashMap::new();
    for removed in &outbound {
        if let Some(fp) = Fingerprint::parse(&removed.owner) {
            give_back(ledger, QueueKey::Neighbour(fp), removed);
        }
        *per_neighbour.entry(removed.owner.as_str()).or_default() += 1;
    }
    for (neighbour, n) in per_neighbour {
        tracing::warn!(
            neighbour,
            dropped = n,
            "messages expired before the neighbour took them; dropped"
        );
    }
    let forgotten = outbound::forget_seen(conn, now).await?;
    Ok(Swept {
        expired: (local.len() + outbound.len()) as u64,
        forgotten,
    })
}

/// Takes a deleted row off its queue's counts.
fn give_back(ledger: &mut Ledger, queue: QueueKey<'_>, removed: &Removed) {
    let sender = PhoneNumber::from_canonical(&removed.sender).ok();
    ledger.give_back(queue, sender.as_ref(), removed.size);
}
