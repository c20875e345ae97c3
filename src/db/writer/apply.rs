//! One transaction's operations in order: runs of enqueues (through
//! [`crate::db::enqueue`]), deletes, and expiry sweeps.

use std::collections::HashMap;

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
/// explicit transaction): one delete of at most one chunk, or one unbroken
/// run of enqueues of one kind that fits one insert (relayed ones also
/// record their ids, a second statement), beside operations that write
/// nothing.
pub(super) fn one_write(ops: &[Op]) -> bool {
    let writes = |op: &&Op| !matches!(op, Op::Barrier(_) | Op::Recount(..) | Op::Close(_));
    let Some(at) = ops.iter().position(|op| writes(&op)) else {
        return true;
    };
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
