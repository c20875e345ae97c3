//! One transaction's operations in order: runs of enqueues (through
//! [`crate::db::enqueue`]), deletes, and expiry sweeps.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use super::{Op, Swept};
use crate::db::backend::Conn;
use crate::db::queue::{self, QueueKey, QueueRef, Removed, RemovedSlot, SlotRef, Table};
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
        // Small deletes naming a sender (one acknowledgement's, one per
        // sender, or several recipients' at once) share statements.
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
/// explicit transaction): one delete of at most one chunk, a run of
/// small deletes naming senders that share one statement (from one
/// device's queue, or from several, at most [`ACROSS_QUEUES`] ids), or one
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
/// senders' deletes from the same device's queue (or with other queues'
/// small deletes, [`ACROSS_QUEUES`]). Each statement is a round
/// trip to SQLite's thread, which an `ack` naming one message from each of
/// a hundred senders paid a hundred times; a shared statement checks every
/// row it finds against its list of (id, sender) pairs, which costs more
/// than a sender's own statement once that names a few dozen ids.
const SHARED_BELOW: usize = 32;

/// Most ids that the acknowledgements of several recipients' queues,
/// arriving together, delete in one statement ([`queue::delete_slots`]).
/// On a quiet server each names a message or a few, and each was a
/// statement of its own: a batch of ten was a transaction of twelve round
/// trips to SQLite's thread, more than the messages' own inserts took.
const ACROSS_QUEUES: usize = 64;

/// How many operations at the head of `ops` are small deletes each naming
/// a sender, deleted together: a run from one device's queue (what one
/// `ack` of a few messages from each of several senders submits), or, when
/// longer, a run from several queues naming at most [`ACROSS_QUEUES`] ids.
fn acknowledgements(ops: &[Op]) -> usize {
    let Some(first) = ops.first().and_then(small_delete) else {
        return 0;
    };
    let one_queue = ops
        .iter()
        .take_while(|op| small_delete(op) == Some(first))
        .count();
    let mut ids = 0;
    let across = ops
        .iter()
        .take_while(|op| match op {
            Op::Delete(_, named, _) if small_delete(op).is_some() => {
                ids += named.len();
                ids <= ACROSS_QUEUES
            }
            _ => false,
        })
        .count();
    one_queue.max(across)
}

/// The queue (recipient and device) a small delete naming a sender is from.
/// A delete naming no id is not one: it needs no statement at all (and a
/// shared statement of no slots would have no condition).
fn small_delete(op: &Op) -> Option<(&PhoneNumber, u32)> {
    match op {
        Op::Delete(QueueRef::Sent(phone, device, _), ids, _)
            if (1..SHARED_BELOW).contains(&ids.len()) =>
        {
            Some((phone, *device))
        }
        _ => None,
    }
}

/// Deletes what a run of [`acknowledgements`] names, in shared
/// statements (by (id, sender) pairs when the run is from one device's
/// queue, else by whole slots), and answers each operation with the rows
/// it named; a message named twice counts for the first operation only.
async fn delete_acknowledged(
    conn: &mut Conn<'_>,
    ledger: &mut Ledger,
    run: &mut [Op],
) -> Result<(), DbError> {
    let mut named_by: HashMap<(&str, i64, &str, MessageId), (usize, &PhoneNumber)> = HashMap::new();
    let mut slots: Vec<SlotRef> = Vec::new();
    for (at, op) in run.iter().enumerate() {
        let Op::Delete(QueueRef::Sent(phone, device, sender), ids, _) = op else {
            continue;
        };
        for id in ids {
            let key = (phone.as_str(), i64::from(*device), sender.as_str(), *id);
            if let Entry::Vacant(first) = named_by.entry(key) {
                first.insert((at, phone));
                slots.push((phone, *device, sender, *id));
            }
        }
    }
    let removed = match slots.first() {
        None => Vec::new(),
        Some(&(phone, device, ..)) if slots.iter().all(|s| (s.0, s.1) == (phone, device)) => {
            delete_from_one_queue(conn, phone, device, &slots).await?
        }
        Some(_) => queue::delete_slots(conn, &slots).await?,
    };
    let mut deleted = vec![0u64; run.len()];
    for (device, id, removed) in removed {
        let key = (removed.owner.as_str(), device, removed.sender.as_str(), id);
        if let Some(&(at, phone)) = named_by.get(&key) {
            give_back(ledger, QueueKey::Recipient(phone), &removed);
            deleted[at] += 1;
        }
    }
    for (op, n) in run.iter_mut().zip(deleted) {
        if let Op::Delete(_, _, answer) = op {
            answer.result = Some(n);
        }
    }
    Ok(())
}

/// Deletes slots of one device's queue by (id, sender) pairs, a chunk per
/// statement, whose rows SQLite finds through the queue's index of ids.
async fn delete_from_one_queue(
    conn: &mut Conn<'_>,
    recipient: &PhoneNumber,
    device: u32,
    slots: &[SlotRef<'_>],
) -> Result<Vec<RemovedSlot>, DbError> {
    let mut removed = Vec::new();
    for chunk in slots.chunks(queue::DELETE_CHUNK) {
        let pairs: Vec<_> = chunk
            .iter()
            .map(|&(_, _, sender, id)| (id, sender))
            .collect();
        for (id, row) in queue::delete_pairs(conn, recipient, device, &pairs).await? {
            removed.push((i64::from(device), id, row));
        }
    }
    Ok(removed)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::writer::Answer;

    fn ack(to: &str, from: &str, ids: u8) -> Op {
        let phone = |p: &str| PhoneNumber::parse(p).unwrap();
        let ids = (0..ids).map(|n| MessageId::from_bytes([n; 16])).collect();
        Op::Delete(
            QueueRef::Sent(phone(to), 0, phone(from)),
            ids,
            Answer::new().0,
        )
    }

    /// Small acknowledgements of several recipients share a statement, up
    /// to a few dozen ids; one queue's run has no such bound, as before.
    #[test]
    fn acknowledgements_of_several_queues_are_deleted_together_up_to_a_bound() {
        let (bob, carol) = ("+12025550102", "+12025550103");
        let alice = "+12025550101";
        let mixed = [ack(bob, alice, 1), ack(carol, alice, 1), ack(bob, carol, 2)];
        assert_eq!(acknowledgements(&mixed), 3);
        assert!(one_write(&mixed));

        let many: Vec<Op> = (0..70)
            .map(|n| ack(&format!("+1202555{:04}", 1000 + n), alice, 1))
            .collect();
        assert_eq!(acknowledgements(&many), ACROSS_QUEUES);
        assert!(!one_write(&many), "two statements: a transaction");

        let one_queue: Vec<Op> = (0..40).map(|_| ack(bob, alice, 20)).collect();
        assert_eq!(acknowledgements(&one_queue), 40);

        let then_barrier = [
            ack(bob, alice, 1),
            ack(carol, alice, 1),
            Op::Barrier(Answer::new().0),
        ];
        assert_eq!(acknowledgements(&then_barrier), 2);
        assert!(one_write(&then_barrier));

        let then_other = [ack(bob, alice, 1), ack(bob, carol, 1), ack(carol, alice, 1)];
        assert_eq!(acknowledgements(&then_other), 3);

        let naming_nothing = [ack(bob, alice, 0), ack(carol, alice, 0)];
        assert_eq!(acknowledgements(&naming_nothing), 0);
    }
}
