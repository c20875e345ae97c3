//! The storage conformance suite: every rule of the `Store`, run against
//! each backend (SQLite always, PostgreSQL when `CARRIER_TEST_DATABASE_URL`
//! names a cluster). A rule that holds on one backend and not the other
//! fails here, naming the backend.

use std::future::Future;

use carrier::db::directory::{DirectoryRow, WithdrawalRow};
use carrier::db::enqueue::{Destination, Enqueue, EnqueueOutcome};
use carrier::db::otp::{Cap, OtpLimits, PendingCode};
use carrier::db::outbound::NewOutbound;
use carrier::db::queue::{NewMessage, QueueRef};
use carrier::db::quota::{Quota, Quotas};
use carrier::db::users::UserRow;
use carrier::db::{DbError, Location, Store};
use carrier::domain::{Fingerprint, MessageId, PhoneNumber};
use carrier::protocol::ErrorCode;

use crate::test_db::TestDb;

use EnqueueOutcome::{Duplicate, IdInUse, QuotaFull, SenderShareFull, Stored};

const ALICE: &str = "+12025550101";
const BOB: &str = "+12025550102";
const CAROL: &str = "+12025550103";

fn phone(p: &str) -> PhoneNumber {
    PhoneNumber::from_canonical(p).unwrap()
}

fn quotas(max_messages: u64) -> Quotas {
    let quota = Quota {
        max_messages,
        max_bytes: 1 << 20,
    };
    Quotas {
        per_recipient: quota,
        per_sender: quota,
        per_neighbour: quota,
    }
}

/// Runs `rule` against a fresh store on every backend.
async fn on_each_backend<F, Fut>(quotas: Quotas, rule: F)
where
    F: Fn(Store, &'static str) -> Fut,
    Fut: Future<Output = ()>,
{
    for db in TestDb::each().await {
        let (store, _committed) = Store::open(&db.location(), quotas)
            .await
            .unwrap_or_else(|e| panic!("{}: the store opens: {e}", db.backend()));
        rule(store.clone(), db.backend()).await;
        store.close().await;
        db.remove().await;
    }
}

fn message(id: u8, from: &str, to: &str, body: u8) -> NewMessage {
    NewMessage {
        id: MessageId::from_bytes([id; 16]),
        recipient: phone(to),
        device: 0,
        sender: phone(from),
        sender_device: 0,
        envelope: vec![body; 100],
        received_at: 1,
        expires_at: i64::MAX,
    }
}

fn local(message: NewMessage) -> Enqueue {
    Enqueue {
        message,
        destination: Destination::Local,
        relayed: false,
    }
}

/// Submits every enqueue before awaiting any, so they may share one
/// transaction, and returns their outcomes in order.
async fn submit_all(store: &Store, batch: Vec<Enqueue>) -> Vec<EnqueueOutcome> {
    let mut pending = Vec::new();
    for e in batch {
        pending.push(store.submit_enqueue(e).await.unwrap());
    }
    let mut outcomes = Vec::new();
    for rx in pending {
        outcomes.push(rx.await.unwrap().unwrap());
    }
    outcomes
}

/// Submits every delete before awaiting any, so they may share one
/// transaction (and its statements); returns how many each deleted.
async fn delete_all(store: &Store, batch: Vec<(QueueRef, Vec<MessageId>)>) -> Vec<u64> {
    let mut pending = Vec::new();
    for (queue, ids) in batch {
        pending.push(store.submit_delete(queue, ids).await.unwrap());
    }
    let mut deleted = Vec::new();
    for rx in pending {
        deleted.push(rx.await.unwrap().unwrap());
    }
    deleted
}

async fn queued_ids(store: &Store, to: &str) -> Vec<u8> {
    let rows = store.fetch(&phone(to), 0, 0, 0, 1000).await.unwrap();
    rows.iter().map(|r| r.id.as_bytes()[0]).collect()
}

/// A retry (same sender, recipient, id and bytes) is accepted and changes
/// nothing; another envelope from the same sender under an id it queued
/// for the same recipient is refused, in one batch or across batches; the
/// same id from another sender, or to another recipient, is a different
/// message.
#[tokio::test]
async fn ids_are_scoped_to_their_recipient_and_sender_and_only_retries_are_duplicates() {
    on_each_backend(quotas(100), |store, backend| async move {
        let first = submit_all(
            &store,
            vec![
                local(message(1, ALICE, BOB, 1)),
                local(message(1, ALICE, BOB, 1)),
                local(message(1, ALICE, BOB, 2)),
                local(message(1, ALICE, CAROL, 1)),
                local(message(1, CAROL, BOB, 4)),
            ],
        )
        .await;
        assert_eq!(
            first,
            [Stored, Duplicate, IdInUse, Stored, Stored],
            "{backend}"
        );
        let later = submit_all(
            &store,
            vec![
                local(message(1, ALICE, BOB, 1)),
                local(message(1, ALICE, BOB, 3)),
                local(message(1, CAROL, BOB, 1)),
                local(message(1, CAROL, BOB, 4)),
                local(message(2, ALICE, BOB, 2)),
            ],
        )
        .await;
        assert_eq!(
            later,
            [Duplicate, IdInUse, IdInUse, Duplicate, Stored],
            "{backend}"
        );
        let bobs = store.fetch(&phone(BOB), 0, 0, 0, 10).await.unwrap();
        let kept: Vec<(u8, u8)> = bobs
            .iter()
            .map(|r| (r.id.as_bytes()[0], r.envelope[0]))
            .collect();
        assert_eq!(
            kept,
            [(1, 1), (1, 4), (2, 2)],
            "{backend}: each sender's first envelope stays"
        );
        assert_eq!(queued_ids(&store, CAROL).await, [1], "{backend}");
    })
    .await;
}

/// Messages relayed by a neighbour are de-duplicated by (recipient,
/// sender, id) seen, even after the first copy was fetched and deleted.
#[tokio::test]
async fn relayed_messages_are_delivered_once_per_recipient_and_sender() {
    on_each_backend(quotas(100), |store, backend| async move {
        let relayed = |id, to| Enqueue {
            relayed: true,
            ..local(message(id, ALICE, to, id))
        };
        let carols = || Enqueue {
            relayed: true,
            ..local(message(7, CAROL, BOB, 9))
        };
        let outcomes = submit_all(
            &store,
            vec![
                relayed(7, BOB),
                relayed(7, BOB),
                relayed(7, CAROL),
                carols(),
            ],
        )
        .await;
        assert_eq!(outcomes, [Stored, Duplicate, Stored, Stored], "{backend}");
        let bob = QueueRef::Recipient(phone(BOB));
        assert_eq!(
            store
                .delete(bob, vec![MessageId::from_bytes([7; 16])])
                .await
                .unwrap(),
            2,
            "{backend}: Alice's and Carol's"
        );
        assert_eq!(
            submit_all(&store, vec![relayed(7, BOB), carols()]).await,
            [Duplicate, Duplicate],
            "{backend}"
        );
        assert!(queued_ids(&store, BOB).await.is_empty(), "{backend}");
    })
    .await;
}

/// One acknowledgement of several senders' messages to one device is
/// submitted as one delete per sender, and those deletes share statements:
/// each deletes exactly the (id, sender) pairs it names, not another
/// sender's message under the same id, and the room they free is given
/// back to the right senders' shares.
#[tokio::test]
async fn deletes_of_several_senders_submitted_together_take_exactly_their_pairs() {
    const DAVE: &str = "+12025550104";
    let mut one_each = quotas(100);
    one_each.per_sender.max_messages = 2;
    on_each_backend(one_each, |store, backend| async move {
        let queued = submit_all(
            &store,
            vec![
                local(message(1, ALICE, BOB, 1)),
                local(message(1, CAROL, BOB, 2)),
                local(message(2, CAROL, BOB, 3)),
                local(message(3, DAVE, BOB, 4)),
            ],
        )
        .await;
        assert_eq!(queued, [Stored; 4], "{backend}");
        let id = |n: u8| MessageId::from_bytes([n; 16]);
        let sent = |from: &str| QueueRef::Sent(phone(BOB), 0, phone(from));
        let deleted = delete_all(
            &store,
            vec![
                (sent(ALICE), vec![id(1)]),
                (sent(CAROL), vec![id(2)]),
                (sent(DAVE), vec![id(3), id(9)]),
                (sent(ALICE), vec![id(1)]),
            ],
        )
        .await;
        assert_eq!(deleted, [1, 1, 1, 0], "{backend}");
        let rows = store.fetch(&phone(BOB), 0, 0, 0, 100).await.unwrap();
        let left: Vec<(u8, String)> = rows
            .iter()
            .map(|r| (r.id.as_bytes()[0], r.sender.to_string()))
            .collect();
        assert_eq!(left, [(1, CAROL.to_owned())], "{backend}");
        // Carol's share holds one message again, so she may queue one more.
        assert_eq!(
            submit_all(
                &store,
                vec![
                    local(message(4, CAROL, BOB, 5)),
                    local(message(5, CAROL, BOB, 6))
                ]
            )
            .await,
            [Stored, SenderShareFull],
            "{backend}"
        );
    })
    .await;
}

/// The acknowledgements of several recipients, arriving together, share
/// one statement: each deletes exactly the messages it names, in its own
/// recipient's device queue (not the same sender's message under the same
/// id in another queue), a message named twice counts once, and the room
/// they free goes back to the right recipient and sender.
#[tokio::test]
async fn acknowledgements_of_several_recipients_together_take_exactly_their_messages() {
    let mut two_each = quotas(100);
    two_each.per_sender.max_messages = 2;
    on_each_backend(two_each, |store, backend| async move {
        let on_device = |device, m: NewMessage| NewMessage { device, ..m };
        let queued = submit_all(
            &store,
            vec![
                local(message(1, ALICE, BOB, 1)),
                local(on_device(3, message(1, ALICE, BOB, 2))),
                local(message(1, ALICE, CAROL, 3)),
                local(message(2, CAROL, BOB, 4)),
            ],
        )
        .await;
        assert_eq!(queued, [Stored; 4], "{backend}");
        let id = |n: u8| MessageId::from_bytes([n; 16]);
        let sent = |to: &str, from: &str| QueueRef::Sent(phone(to), 0, phone(from));
        let deleted = delete_all(
            &store,
            vec![
                (sent(BOB, ALICE), vec![id(1)]),
                (sent(CAROL, ALICE), vec![id(1)]),
                (sent(BOB, CAROL), vec![id(2), id(9)]),
                (sent(BOB, ALICE), vec![id(1)]),
            ],
        )
        .await;
        assert_eq!(deleted, [1, 1, 1, 0], "{backend}");
        assert!(queued_ids(&store, BOB).await.is_empty(), "{backend}");
        assert!(queued_ids(&store, CAROL).await.is_empty(), "{backend}");
        // Acknowledgements naming nothing delete nothing, and fail nothing.
        let nothing = vec![(sent(BOB, ALICE), vec![]), (sent(CAROL, ALICE), vec![])];
        assert_eq!(delete_all(&store, nothing).await, [0, 0], "{backend}");
        let on_three = store.fetch(&phone(BOB), 3, 0, 0, 100).await.unwrap();
        let left: Vec<u8> = on_three.iter().map(|r| r.envelope[0]).collect();
        assert_eq!(left, [2], "{backend}: the copy on Bob's other device");
        // Alice's share of Bob's queue holds one message (on device 3), so
        // she may queue one more there; her share of Carol's is empty.
        let outcomes = submit_all(
            &store,
            vec![
                local(message(5, ALICE, BOB, 5)),
                local(message(6, ALICE, BOB, 6)),
                local(message(5, ALICE, CAROL, 7)),
                local(message(6, ALICE, CAROL, 8)),
            ],
        )
        .await;
        assert_eq!(
            outcomes,
            [Stored, SenderShareFull, Stored, Stored],
            "{backend}"
        );
    })
    .await;
}

/// Quotas count per queue and give room back on delete; a retry of a
/// queued message is a duplicate even when the queue is full; a
/// neighbour's queue is counted apart from the recipient's.
#[tokio::test]
async fn quotas_count_each_queue_and_give_room_back() {
    on_each_backend(quotas(2), |store, backend| async move {
        let neighbour = Fingerprint::of_spki(b"neighbour");
        let remote = |id| Enqueue {
            message: message(id, ALICE, CAROL, id),
            destination: Destination::Neighbour(NewOutbound {
                neighbour,
                path: "[]".into(),
            }),
            relayed: false,
        };
        let to_bob = |id| local(message(id, ALICE, BOB, id));
        let outcomes = submit_all(&store, vec![to_bob(1), to_bob(2), to_bob(3), to_bob(1)]).await;
        assert_eq!(
            outcomes,
            [Stored, Stored, QuotaFull, Duplicate],
            "{backend}"
        );
        let outcomes = submit_all(&store, vec![remote(1), remote(2), remote(3)]).await;
        assert_eq!(outcomes, [Stored, Stored, QuotaFull], "{backend}");
        let bob = QueueRef::Recipient(phone(BOB));
        let gone = [1, 9].map(|id| MessageId::from_bytes([id; 16])).to_vec();
        assert_eq!(store.delete(bob, gone).await.unwrap(), 1, "{backend}");
        assert_eq!(
            submit_all(&store, vec![to_bob(3), to_bob(4)]).await,
            [Stored, QuotaFull]
        );
        let next = store.outbound_next(&neighbour, 0, 0, 10).await.unwrap();
        let ids: Vec<u8> = next.iter().map(|r| r.id.as_bytes()[0]).collect();
        assert_eq!(ids, [1, 2], "{backend}");
        let acked = vec![MessageId::from_bytes([1; 16])];
        assert_eq!(
            store
                .delete(QueueRef::Neighbour(neighbour, 0, None), acked)
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            submit_all(&store, vec![remote(3)]).await,
            [Stored],
            "{backend}"
        );
    })
    .await;
}

/// One sender may hold only its share of a recipient's queue: past it, its
/// messages are refused while others' still fit, a retry is still a
/// duplicate, and room comes back as the recipient deletes. The share is counted from the stored rows when a store starts.
#[tokio::test]
async fn one_sender_holds_only_its_share_of_a_recipients_queue() {
    let quotas = Quotas {
        per_sender: Quota {
            max_messages: 2,
            max_bytes: 1 << 20,
        },
        ..quotas(5)
    };
    for db in TestDb::each().await {
        let backend = db.backend();
        let (store, _committed) = Store::open(&db.location(), quotas).await.unwrap();
        let from_alice = |id| local(message(id, ALICE, BOB, id));
        let from_carol = |id| local(message(id, CAROL, BOB, id));
        let outcomes = submit_all(
            &store,
            vec![from_alice(1), from_alice(2), from_alice(3), from_carol(4)],
        )
        .await;
        assert_eq!(
            outcomes,
            [Stored, Stored, SenderShareFull, Stored],
            "{backend}"
        );
        assert_eq!(submit_all(&store, vec![from_alice(1)]).await, [Duplicate]);
        store.close().await;

        // A new store counts what is queued.
        let (store, _committed) = Store::open(&db.location(), quotas).await.unwrap();
        let outcomes = submit_all(&store, vec![from_alice(5), from_carol(6)]).await;
        assert_eq!(outcomes, [SenderShareFull, Stored], "{backend}");
        assert_eq!(
            submit_all(&store, vec![local(message(7, ALICE, CAROL, 7))]).await,
            [Stored],
            "{backend}: the share is per recipient"
        );
        let bob = QueueRef::Recipient(phone(BOB));
        let gone = vec![MessageId::from_bytes([1; 16])];
        assert_eq!(store.delete(bob, gone).await.unwrap(), 1, "{backend}");
        assert_eq!(
            submit_all(&store, vec![from_alice(5), from_alice(8)]).await,
            [Stored, SenderShareFull],
            "{backend}: a delete gives room back"
        );
        assert_eq!(queued_ids(&store, BOB).await, [2, 4, 6, 5], "{backend}");
        store.close().await;
        db.remove().await;
    }
}

/// A directory entry stored under an older rule, here a high-S signature
/// stored before those were refused (as a neighbour's forged route would
/// be), is not held as current when the directory is loaded, on either
/// backend; an entry whose signature verifies is.
#[tokio::test]
async fn stored_directory_entries_that_no_longer_verify_are_not_held() {
    use carrier::crypto::Identity;
    use carrier::protocol::{B64, KeyType, UserInfo};
    use carrier::routing::directory::{Directory, Entry, signed_bytes};
    use p256::ecdsa::Signature;

    let home = Identity::generate(KeyType::P256);
    let user = Identity::generate(KeyType::P256).public_key();
    let entry = |phone_number: &str| {
        let mut entry = Entry {
            phone: phone(phone_number),
            info: UserInfo {
                phone: phone_number.into(),
                key_type: KeyType::P256,
                public_key: B64(user.to_spki_der()),
                fingerprint: user.fingerprint().to_hex(),
                registered_at: 1_000,
                devices: None,
            },
            home: home.fingerprint(),
            home_key: home.public_key().to_spki_der(),
            home_name: "home".into(),
            signature: Vec::new(),
            via: Some(Fingerprint::of_spki(b"neighbour")),
            hops: 2,
        };
        entry.signature = home.sign(&signed_bytes(&entry));
        entry
    };
    let mut flipped = entry(BOB);
    let (r, s) = Signature::from_slice(&flipped.signature)
        .unwrap()
        .split_scalars();
    flipped.signature = Signature::from_scalars(r.to_bytes(), (-*s).to_bytes())
        .unwrap()
        .to_vec();

    on_each_backend(quotas(10), |store, backend| {
        let (good, flipped) = (entry(ALICE), flipped.clone());
        async move {
            let directory = Directory::load(&store).await.unwrap();
            directory.store(&store, good).await.unwrap();
            directory.store(&store, flipped).await.unwrap();
            assert!(directory.get(&phone(BOB)).is_some(), "{backend}: stored");

            let loaded = Directory::load(&store).await.unwrap();
            assert!(loaded.get(&phone(ALICE)).is_some(), "{backend}");
            assert!(
                loaded.get(&phone(BOB)).is_none(),
                "{backend}: the high-S entry is held as current"
            );
        }
    })
    .await;
}

/// Each recipient's queue comes back in the order messages were accepted,
/// however the senders' messages interleaved and across transactions.
#[tokio::test]
async fn queues_keep_arrival_order_per_recipient() {
    on_each_backend(quotas(1000), |store, backend| async move {
        let mut batch = Vec::new();
        for id in 0..200u8 {
            let to = if id % 3 == 0 { CAROL } else { BOB };
            batch.push(local(message(id, ALICE, to, id)));
        }
        let (first, second) = batch.split_at(77);
        let mut outcomes = submit_all(&store, first.iter().map(copy).collect()).await;
        outcomes.extend(submit_all(&store, second.iter().map(copy).collect()).await);
        assert!(outcomes.iter().all(|o| *o == Stored), "{backend}");
        let expect = |to: &str| -> Vec<u8> {
            (0..200u8)
                .filter(|id| (id % 3 == 0) == (to == CAROL))
                .collect()
        };
        assert_eq!(queued_ids(&store, BOB).await, expect(BOB), "{backend}");
        assert_eq!(queued_ids(&store, CAROL).await, expect(CAROL), "{backend}");
        let rows = store.fetch(&phone(BOB), 0, 0, 0, 10).await.unwrap();
        let after = store
            .fetch(&phone(BOB), 0, rows[4].seq, 0, 3)
            .await
            .unwrap();
        assert_eq!(
            after.iter().map(|r| r.seq).collect::<Vec<_>>(),
            rows[5..8].iter().map(|r| r.seq).collect::<Vec<_>>()
        );
    })
    .await;
}

/// A relay remembers every id it is handed and must forget them as fast:
/// the sweep the server runs goes on step after step until one removes
/// nothing, even when no message expired and every step forgets only its
/// bounded share of ids.
#[tokio::test]
async fn sweeping_until_finished_forgets_every_expired_relayed_id() {
    let expired = 2 * carrier::db::outbound::FORGET_LIMIT + 1;
    for db in TestDb::each().await {
        let backend = db.backend();
        let (store, _committed) = Store::open(&db.location(), quotas(1))
            .await
            .unwrap_or_else(|e| panic!("{backend}: the store opens: {e}"));
        let (numbers, id, keep) = match db {
            TestDb::Sqlite(_) => (
                format!(
                    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n
                     WHERE i < {expired}) SELECT i FROM n"
                ),
                "CAST(printf('r%015d', i) AS BLOB)",
                "CAST('keep000000000000' AS BLOB)",
            ),
            TestDb::Postgres { .. } => (
                format!("SELECT generate_series(1, {expired}) AS i"),
                "convert_to('r' || lpad(i::text, 15, '0'), 'UTF8')",
                "convert_to('keep000000000000', 'UTF8')",
            ),
        };
        db.execute(&format!(
            "INSERT INTO relay_seen (recipient, device, sender, id, expires_at)
                 SELECT '{BOB}', 1, '{ALICE}', {id}, 9 FROM ({numbers}) AS n;
             INSERT INTO relay_seen (recipient, device, sender, id, expires_at)
                 VALUES ('{BOB}', 1, '{ALICE}', {keep}, 5000)"
        ))
        .await;
        let (swept, result) = store.sweep_until_finished(|| 1_000).await;
        result.unwrap_or_else(|e| panic!("{backend}: the sweep failed: {e}"));
        assert_eq!(swept.expired, 0, "{backend}: no message was queued");
        store.close().await;
        assert_eq!(swept.forgotten, expired as u64, "{backend}");
        let pool = crate::common::open_any(&db.location()).await;
        let left: Vec<(i64,)> = sqlx::query_as("SELECT expires_at FROM relay_seen")
            .fetch_all(&pool)
            .await
            .unwrap();
        pool.close().await;
        assert_eq!(left, [(5000,)], "{backend}: only the unexpired id is kept");
        db.remove().await;
    }
}

fn copy(e: &Enqueue) -> Enqueue {
    Enqueue {
        message: e.message.clone(),
        destination: e.destination.clone(),
        relayed: e.relayed,
    }
}

/// Expired messages are neither fetched nor counted, and a sweep deletes
/// them (and gives their room back).
#[tokio::test]
async fn expired_messages_are_hidden_then_swept() {
    on_each_backend(quotas(2), |store, backend| async move {
        let mut old = message(1, ALICE, BOB, 1);
        old.expires_at = 1_000;
        let fresh = message(2, ALICE, BOB, 2);
        assert_eq!(
            submit_all(&store, vec![local(old), local(fresh)]).await,
            [Stored, Stored]
        );
        let now = 5_000;
        assert_eq!(
            store.waiting(&phone(BOB), 0, now).await.unwrap(),
            1,
            "{backend}"
        );
        let ids: Vec<u8> = store
            .fetch(&phone(BOB), 0, 0, now, 10)
            .await
            .unwrap()
            .iter()
            .map(|r| r.id.as_bytes()[0])
            .collect();
        assert_eq!(ids, [2], "{backend}");
        assert_eq!(store.sweep(now).await.unwrap().expired, 1, "{backend}");
        assert!(store.sweep(now).await.unwrap().finished(), "{backend}");
        assert_eq!(queued_ids(&store, BOB).await, [2], "{backend}");
        let third = local(message(3, ALICE, BOB, 3));
        assert_eq!(
            submit_all(&store, vec![third]).await,
            [Stored],
            "{backend}: room given back"
        );
    })
    .await;
}

/// Deleting takes only the named queue's messages.
#[tokio::test]
async fn a_delete_touches_only_its_own_queue() {
    on_each_backend(quotas(10), |store, backend| async move {
        let outcomes = submit_all(
            &store,
            vec![
                local(message(1, ALICE, BOB, 1)),
                local(message(1, ALICE, CAROL, 1)),
            ],
        )
        .await;
        assert_eq!(outcomes, [Stored, Stored]);
        let id = vec![MessageId::from_bytes([1; 16])];
        assert_eq!(
            store
                .delete(QueueRef::Recipient(phone(CAROL)), id.clone())
                .await
                .unwrap(),
            1,
            "{backend}"
        );
        assert_eq!(
            store
                .delete(QueueRef::Recipient(phone(CAROL)), id)
                .await
                .unwrap(),
            0,
            "{backend}"
        );
        assert_eq!(queued_ids(&store, BOB).await, [1], "{backend}");
    })
    .await;
}

fn otp_limits(now: i64) -> OtpLimits {
    OtpLimits {
        now,
        window_ms: 60_000,
        max_codes: 3,
        max_tries: 5,
        max_codes_per_address: 100,
        max_codes_per_phone: 100,
    }
}

fn pending_code(phone: &str, key: u8, now: i64) -> PendingCode {
    PendingCode {
        phone: phone.into(),
        code_hash: "hash".into(),
        key_type: "p256".into(),
        public_key: vec![key; 65],
        issued_at: now,
        expires_at: now + 300_000,
        address: "192.0.2.1/32".into(),
    }
}

fn from_address(mut code: PendingCode, address: &str) -> PendingCode {
    code.address = address.into();
    code
}

/// Parallel requests for codes and parallel guesses get exactly as many
/// as the limits allow, and a new window starts afresh.
#[tokio::test]
async fn otp_counters_hold_under_concurrency() {
    on_each_backend(quotas(10), |store, backend| async move {
        let issues = (0..12).map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .otp_issue(&pending_code(ALICE, 1, 1_000), otp_limits(1_000))
                    .await
            })
        });
        let issued = futures::future::join_all(issues).await;
        let ok = issued.iter().filter(|r| matches!(r, Ok(Ok(Ok(_))))).count();
        assert_eq!(ok, 3, "{backend}: {issued:?}");
        let tries = (0..12).map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .otp_take_try(&phone(ALICE), &[1; 65], otp_limits(2_000))
                    .await
            })
        });
        let tried = futures::future::join_all(tries).await;
        let taken = tried
            .iter()
            .filter(|r| matches!(r, Ok(Ok(Some(_)))))
            .count();
        assert_eq!(taken, 5, "{backend}: {tried:?}");
        let refused = store
            .otp_issue(&pending_code(ALICE, 1, 3_000), otp_limits(3_000))
            .await
            .unwrap();
        let refused = refused.expect_err("no code once the tries are spent");
        assert_eq!(
            (
                refused.by,
                refused.limits.codes_issued,
                refused.limits.wrong_tries
            ),
            (Cap::Key, 3, 5),
            "{backend}"
        );
        let next_window = otp_limits(1_000 + 60_000);
        let fresh = store
            .otp_issue(&pending_code(ALICE, 1, 61_000), next_window)
            .await
            .unwrap();
        assert_eq!(
            fresh.map(|l| (l.codes_issued, l.wrong_tries)),
            Ok((1, 0)),
            "{backend}"
        );
    })
    .await;
}

/// Codes and their counters belong to a (phone, key) pair: another key's
/// codes for the same phone neither replace the pending one nor spend its
/// tries, and each pair has its own limits; the phone as a whole has a
/// larger one, which leaves pending codes alone.
#[tokio::test]
async fn otp_codes_and_counters_are_kept_per_key() {
    on_each_backend(quotas(10), |store, backend| async move {
        let owner = [1u8; 65];
        let otp_limits = |now| OtpLimits {
            max_codes_per_phone: 12,
            ..otp_limits(now)
        };
        assert!(
            store
                .otp_issue(&pending_code(ALICE, 1, 1_000), otp_limits(1_000))
                .await
                .unwrap()
                .is_ok()
        );
        for _ in 0..3 {
            let stranger = store
                .otp_issue(&pending_code(ALICE, 2, 1_500), otp_limits(1_500))
                .await
                .unwrap();
            assert!(stranger.is_ok(), "{backend}");
        }
        let spent = (0..5).map(|_| {
            let store = store.clone();
            async move {
                store
                    .otp_take_try(&phone(ALICE), &[2; 65], otp_limits(1_600))
                    .await
            }
        });
        for taken in futures::future::join_all(spent).await {
            assert!(taken.unwrap().is_some(), "{backend}");
        }
        let refused = store
            .otp_issue(&pending_code(ALICE, 2, 1_700), otp_limits(1_700))
            .await
            .unwrap();
        assert!(refused.is_err(), "{backend}: the stranger's key is spent");

        let pending = store.otp_pending(&phone(ALICE)).await.unwrap();
        let keys: Vec<u8> = pending.iter().map(|p| p.public_key[0]).collect();
        assert_eq!(keys, [2, 1], "{backend}: newest first, both kept");
        let mine = store
            .otp_pending_for(&phone(ALICE), &owner)
            .await
            .unwrap()
            .expect("the owner's code is still pending");
        assert_eq!(mine.issued_at, 1_000, "{backend}");
        assert_eq!(
            store
                .otp_limits(&phone(ALICE), &owner)
                .await
                .unwrap()
                .map(|l| (l.codes_issued, l.wrong_tries)),
            Some((1, 0)),
            "{backend}: the owner's counters are untouched"
        );
        let again = store
            .otp_issue(&pending_code(ALICE, 1, 2_000), otp_limits(2_000))
            .await
            .unwrap();
        assert_eq!(
            again.map(|l| (l.codes_issued, l.wrong_tries)),
            Ok((2, 0)),
            "{backend}: the owner may still ask for a code"
        );
        // Five codes counted for the phone so far (a refused one counts
        // nowhere); seven more keys reach its limit.
        for key in 3..10 {
            let issued = store
                .otp_issue(&pending_code(ALICE, key, 3_000), otp_limits(3_000))
                .await
                .unwrap();
            assert!(issued.is_ok(), "{backend}: key {key}");
        }
        let refused = store
            .otp_issue(&pending_code(ALICE, 10, 3_000), otp_limits(3_000))
            .await
            .unwrap();
        assert_eq!(
            refused.map_err(|r| (r.by, r.limits.codes_issued)),
            Err((Cap::Phone, 12)),
            "{backend}: the phone's own limit"
        );
        assert!(
            store
                .otp_pending_for(&phone(ALICE), &owner)
                .await
                .unwrap()
                .is_some(),
            "{backend}: the owner's code stays pending"
        );
    })
    .await;
}

/// One address may take only its share of a phone's codes, whatever the
/// keys it uses; what it is refused counts nowhere, another address still
/// gets codes up to the phone's limit, and a registration clears the count
/// of its own address only.
#[tokio::test]
async fn otp_codes_are_counted_per_address() {
    on_each_backend(quotas(10), |store, backend| async move {
        const STRANGER: &str = "192.0.2.66/32";
        const OWNER: &str = "2001:db8:1:2::/64";
        let otp_limits = |now| OtpLimits {
            max_codes_per_address: 4,
            max_codes_per_phone: 6,
            ..otp_limits(now)
        };
        let issue = |key: u8, address: &'static str| {
            let store = store.clone();
            async move {
                let code = from_address(pending_code(ALICE, key, 1_000), address);
                store.otp_issue(&code, otp_limits(1_000)).await.unwrap()
            }
        };
        for key in [1, 1, 2, 3] {
            assert!(issue(key, STRANGER).await.is_ok(), "{backend}: key {key}");
        }
        for key in [4, 5, 1] {
            let refused = issue(key, STRANGER).await.expect_err("past the share");
            assert_eq!(
                (refused.by, refused.limits.codes_issued),
                (Cap::Address, 4),
                "{backend}: key {key}"
            );
        }
        assert!(
            store
                .otp_limits(&phone(ALICE), &[4; 65])
                .await
                .unwrap()
                .is_none(),
            "{backend}: a refused key is not counted"
        );
        // The phone has had 4 of its 6: the owner's address gets the rest.
        assert!(issue(9, OWNER).await.is_ok(), "{backend}");
        assert!(issue(9, OWNER).await.is_ok(), "{backend}");
        let refused = issue(9, OWNER).await.expect_err("the phone's limit");
        assert_eq!(
            (refused.by, refused.limits.codes_issued),
            (Cap::Phone, 6),
            "{backend}"
        );
        let mine = store
            .otp_pending_for(&phone(ALICE), &[9; 65])
            .await
            .unwrap()
            .expect("the owner's code");
        assert_eq!(mine.address, OWNER, "{backend}");
        let user = UserRow {
            phone: ALICE.into(),
            key_type: "p256".into(),
            public_key: vec![9; 65],
            fingerprint: format!("{:064x}", 9),
            registered_at: 5,
        };
        assert_eq!(store.otp_register(&user).await.unwrap(), Some(false));
        // The phone's count and the owner's address start afresh; the
        // stranger's address keeps its count.
        assert!(issue(9, OWNER).await.is_ok(), "{backend}");
        let refused = issue(6, STRANGER).await.expect_err("still past the share");
        assert_eq!(refused.by, Cap::Address, "{backend}");
    })
    .await;
}

/// Registering consumes the pending code of that key only, clears the
/// counters, and tells whether a different key was replaced.
#[tokio::test]
async fn registration_consumes_the_code_of_its_key() {
    on_each_backend(quotas(10), |store, backend| async move {
        let user = |key: u8| UserRow {
            phone: ALICE.into(),
            key_type: "p256".into(),
            public_key: vec![key; 65],
            fingerprint: format!("{key:064x}"),
            registered_at: 5,
        };
        assert!(
            store
                .otp_issue(&pending_code(ALICE, 1, 0), otp_limits(0))
                .await
                .unwrap()
                .is_ok()
        );
        assert_eq!(
            store.otp_register(&user(2)).await.unwrap(),
            None,
            "{backend}: another key"
        );
        assert_eq!(
            store.otp_register(&user(1)).await.unwrap(),
            Some(false),
            "{backend}"
        );
        assert!(
            store.otp_pending(&phone(ALICE)).await.unwrap().is_empty(),
            "{backend}"
        );
        assert!(
            store
                .otp_limits(&phone(ALICE), &[1; 65])
                .await
                .unwrap()
                .is_none(),
            "{backend}"
        );
        assert_eq!(
            store.user(&phone(ALICE)).await.unwrap(),
            Some(user(1)),
            "{backend}"
        );
        assert!(
            store
                .otp_issue(&pending_code(ALICE, 2, 0), otp_limits(0))
                .await
                .unwrap()
                .is_ok()
        );
        assert_eq!(
            store.otp_register(&user(2)).await.unwrap(),
            Some(true),
            "{backend}"
        );
        assert_eq!(store.users().await.unwrap(), [user(2)], "{backend}");
    })
    .await;
}

/// Directory entries and neighbour pins are replaced in place.
#[tokio::test]
async fn directory_entries_and_pins_are_upserted() {
    on_each_backend(quotas(10), |store, backend| async move {
        let entry = |hops| DirectoryRow {
            phone: BOB.into(),
            key_type: "p256".into(),
            public_key: vec![1; 65],
            home_key: vec![2; 91],
            home_name: "home:5000".into(),
            registered_at: 9,
            signature: vec![3; 64],
            via: Some("ab".repeat(32)),
            hops,
        };
        store.store_directory_entry(&entry(3)).await.unwrap();
        store.store_directory_entry(&entry(1)).await.unwrap();
        assert_eq!(store.directory().await.unwrap(), [entry(1)], "{backend}");
        let (a, b) = (Fingerprint::of_spki(b"a"), Fingerprint::of_spki(b"b"));
        assert_eq!(store.neighbour_pin("n:1").await.unwrap(), None);
        store.pin_neighbour("n:1", a).await.unwrap();
        store.pin_neighbour("n:1", b).await.unwrap();
        assert_eq!(
            store.neighbour_pin("n:1").await.unwrap(),
            Some(b),
            "{backend}"
        );
    })
    .await;
}

/// A database whose schema is newer than this binary is refused with a
/// sentence that says so, and left as it was.
#[tokio::test]
async fn a_newer_schema_is_refused_with_a_clear_error() {
    for db in TestDb::each().await {
        let (store, _) = Store::open(&db.location(), quotas(1)).await.unwrap();
        store.close().await;
        db.execute(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
             SELECT 9999, 'from the future', success, checksum, execution_time
             FROM _sqlx_migrations WHERE version = 1",
        )
        .await;
        let refused = Store::open(&db.location(), quotas(1)).await.err();
        let Some(e @ DbError::SchemaTooNew { found: 9999, .. }) = refused else {
            panic!("{}: opened a newer schema: {refused:?}", db.backend());
        };
        assert!(
            e.to_string()
                .contains("newer than this carrier-server knows"),
            "{e}"
        );
        db.remove().await;
    }
}

/// A database that cannot be reached at start is a clear error with its
/// own code, naming the cause (not the pool's timeout) and what to do.
#[tokio::test]
async fn an_unreachable_database_is_a_clear_error() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let url = format!("postgres://carrier:secret@127.0.0.1:{port}/carrier");
    let refused = Store::open(&Location::parse(&url).unwrap(), quotas(1))
        .await
        .err();
    let Some(e @ DbError::Connect { .. }) = refused else {
        panic!("opened a closed port: {refused:?}");
    };
    assert_eq!(e.code(), ErrorCode::StorageUnavailable);
    let said = e.to_string();
    assert!(
        said.contains("cannot reach the database at postgres://carrier:***@127.0.0.1"),
        "{said}"
    );
    assert!(
        said.contains("connection refused: start PostgreSQL there"),
        "{said}"
    );
    assert!(!said.contains("secret"), "{said}");
}

/// A PostgreSQL that answers but refuses the connection says why, in
/// PostgreSQL's words, and what to do: a database or role that does not
/// exist.
#[tokio::test]
async fn a_refused_postgres_connection_says_why() {
    let Ok(url) = std::env::var(crate::test_db::DATABASE_URL_VAR) else {
        eprintln!("skipped: {} is unset", crate::test_db::DATABASE_URL_VAR);
        return;
    };
    let cases = [
        (
            elsewhere(&url, None, "carrier_no_such_database"),
            "database \"carrier_no_such_database\" does not exist: create it",
        ),
        (
            elsewhere(&url, Some("carrier_no_such_role:secret"), "postgres"),
            "role \"carrier_no_such_role\" does not exist: check the user and password",
        ),
    ];
    for (url, expected) in cases {
        let Some(url) = url else {
            eprintln!(
                "skipped a case: {} is not postgres://[user[:password]@]host[:port]/database \
                 without user or dbname in its query, so its user or database cannot be replaced",
                crate::test_db::DATABASE_URL_VAR
            );
            continue;
        };
        let refused = Store::open(&Location::parse(&url).unwrap(), quotas(1))
            .await
            .err();
        let Some(e @ DbError::Connect { .. }) = refused else {
            panic!("{url}: opened: {refused:?}");
        };
        assert_eq!(e.code(), ErrorCode::StorageUnavailable, "{url}");
        let said = e.to_string();
        assert!(said.contains(expected), "{url}: {said}");
        assert!(!said.contains("secret"), "{url}: {said}");
    }
}

/// `url` with its database replaced by `database`, and its user and
/// password by `userinfo` when given. `None` unless it reads
/// `scheme://[userinfo@]host[:port]/database[?query]` with no `user` or
/// `dbname` in the query (which would win over what is put in): a URL
/// left unchanged could connect as the real user and migrate `postgres`.
fn elsewhere(url: &str, userinfo: Option<&str>, database: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let (authority, path) = rest.split_once('/')?;
    let (own_userinfo, host) = match authority.rsplit_once('@') {
        Some((userinfo, host)) => (Some(userinfo), host),
        None => (None, authority),
    };
    let query = path.split_once('?').map(|(_, query)| query);
    let overridden = |kv: &str| kv.starts_with("user=") || kv.starts_with("dbname=");
    if host.is_empty() || query.is_some_and(|q| q.split('&').any(overridden)) {
        return None;
    }
    let userinfo = userinfo
        .or(own_userinfo)
        .map_or(String::new(), |u| format!("{u}@"));
    let query = query.map_or(String::new(), |q| format!("?{q}"));
    Some(format!("{scheme}://{userinfo}{host}/{database}{query}"))
}

/// The refused-connection cases reach another role and database whatever
/// the test database's URL holds, or are skipped.
#[test]
fn test_urls_swap_any_user_and_database() {
    let role = Some("nobody:secret");
    let cases = [
        (
            "postgres://carrier@localhost/carrier_test",
            "postgres://nobody:secret@localhost/postgres",
        ),
        (
            "postgres://dev:p%40ss@db.example:5433/carrier_test?sslmode=disable",
            "postgres://nobody:secret@db.example:5433/postgres?sslmode=disable",
        ),
        (
            "postgresql://localhost/carrier_test",
            "postgresql://nobody:secret@localhost/postgres",
        ),
    ];
    for (url, expected) in cases {
        assert_eq!(
            elsewhere(url, role, "postgres").as_deref(),
            Some(expected),
            "{url}"
        );
    }
    assert_eq!(
        elsewhere(
            "postgres://dev:pw@host/carrier_test?sslmode=require",
            None,
            "x"
        )
        .as_deref(),
        Some("postgres://dev:pw@host/x?sslmode=require")
    );
    for url in [
        "postgres://host/db?user=dev",
        "postgres://host/db?dbname=db",
        "not a url",
    ] {
        assert_eq!(elsewhere(url, role, "postgres"), None, "{url}");
    }
}

/// `carrier-server migrate`'s copy: a populated SQLite store arrives whole
/// in an empty store of each backend, queues in order; a second copy into
/// the same target is refused and changes nothing.
#[tokio::test]
async fn a_populated_store_is_copied_whole_into_an_empty_one() {
    let source = TestDb::sqlite();
    let (store, _) = Store::open(&source.location(), quotas(1000)).await.unwrap();
    let user = UserRow {
        phone: ALICE.into(),
        key_type: "p256".into(),
        public_key: vec![1; 65],
        fingerprint: "ab".repeat(32),
        registered_at: 5,
    };
    assert!(
        store
            .otp_issue(&pending_code(ALICE, 1, 0), otp_limits(0))
            .await
            .unwrap()
            .is_ok()
    );
    assert_eq!(store.otp_register(&user).await.unwrap(), Some(false));
    assert!(
        store
            .otp_issue(&pending_code(BOB, 2, 0), otp_limits(0))
            .await
            .unwrap()
            .is_ok()
    );
    let neighbour = Fingerprint::of_spki(b"neighbour");
    let mut batch: Vec<Enqueue> = (0..250u8)
        .map(|id| local(message(id, ALICE, BOB, id)))
        .collect();
    batch.push(Enqueue {
        message: message(1, ALICE, CAROL, 1),
        destination: Destination::Neighbour(NewOutbound {
            neighbour,
            path: "[]".into(),
        }),
        relayed: true,
    });
    assert!(submit_all(&store, batch).await.iter().all(|o| *o == Stored));
    store.pin_neighbour("n:1", neighbour).await.unwrap();
    store.close().await;

    for target in TestDb::each().await {
        let backend = target.backend();
        let copied = carrier::db::copy::migrate(&source.location(), &target.location())
            .await
            .unwrap_or_else(|e| panic!("{backend}: {e}"));
        let rows = |table: &str| copied.iter().find(|(t, _)| *t == table).unwrap().1;
        assert_eq!(
            [
                rows("users"),
                rows("otp_codes"),
                rows("otp_limits"),
                rows("message_queue")
            ],
            // Bob's pending code counts for his key and for his phone.
            [1, 1, 2, 250],
            "{backend}: {copied:?}"
        );
        assert_eq!(
            [
                rows("outbound_queue"),
                rows("relay_seen"),
                rows("neighbour_pins")
            ],
            [1, 1, 1]
        );
        let again = carrier::db::copy::migrate(&source.location(), &target.location()).await;
        assert!(
            matches!(
                again,
                Err(carrier::db::copy::CopyError::TargetNotEmpty { .. })
            ),
            "{backend}: {again:?}"
        );
        let missing = carrier::db::Location::Sqlite(source_dir_missing());
        let nothing = carrier::db::copy::migrate(&missing, &target.location()).await;
        assert!(
            matches!(nothing, Err(carrier::db::copy::CopyError::NoSource(_))),
            "{backend}: a missing source: {nothing:?}"
        );
        let (copy, _) = Store::open(&target.location(), quotas(1000)).await.unwrap();
        assert_eq!(
            queued_ids(&copy, BOB).await,
            (0..250u8).collect::<Vec<_>>(),
            "{backend}"
        );
        assert_eq!(
            copy.user(&phone(ALICE)).await.unwrap(),
            Some(user.clone()),
            "{backend}"
        );
        assert_eq!(
            copy.neighbour_pin("n:1").await.unwrap(),
            Some(neighbour),
            "{backend}"
        );
        let next = copy.outbound_next(&neighbour, 0, 0, 10).await.unwrap();
        assert_eq!(next.len(), 1, "{backend}");
        let retry = Enqueue {
            relayed: true,
            ..local(message(1, ALICE, CAROL, 1))
        };
        assert_eq!(
            submit_all(&copy, vec![retry]).await,
            [Duplicate],
            "{backend}: relay_seen came along"
        );
        copy.close().await;
        target.remove().await;
    }
}

/// `migrate` carries the directory's withdrawals over byte for byte: one
/// signed by its user's home server, and one of our own recorded while the
/// server was stopped, not yet signed nor sent to the neighbours (empty key
/// and signature), which the copy's first start is to sign and send.
#[tokio::test]
async fn withdrawals_signed_or_not_are_copied_whole() {
    let source = TestDb::sqlite();
    let (store, _) = Store::open(&source.location(), quotas(1)).await.unwrap();
    let withdrawals = vec![
        WithdrawalRow {
            phone: ALICE.into(),
            registered_at: 5,
            withdrawn_at: 7,
            home_key: vec![0, 1, 0x7f, 0x80, 0xff],
            signature: (0..=255).collect(),
        },
        WithdrawalRow {
            phone: BOB.into(),
            registered_at: 6,
            withdrawn_at: 8,
            home_key: Vec::new(),
            signature: Vec::new(),
        },
    ];
    for withdrawal in &withdrawals {
        store.store_withdrawal(withdrawal, false).await.unwrap();
    }
    store.close().await;

    for target in TestDb::each().await {
        let backend = target.backend();
        let copied = carrier::db::copy::migrate(&source.location(), &target.location())
            .await
            .unwrap_or_else(|e| panic!("{backend}: {e}"));
        assert!(
            copied.contains(&("directory_withdrawals", 2)),
            "{backend}: {copied:?}"
        );
        let (copy, _) = Store::open(&target.location(), quotas(1)).await.unwrap();
        assert_eq!(
            copy.directory_withdrawals().await.unwrap(),
            withdrawals,
            "{backend}"
        );
        copy.close().await;
        target.remove().await;
    }
}

/// PostgreSQL going away under a running store (its connections cut from
/// the server side): writes meanwhile are refused with
/// `storage_unavailable`, the writer connects again by itself, and
/// nothing acknowledged before is lost.
#[tokio::test]
async fn a_lost_postgres_connection_is_refused_then_recovered() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let name = format!("carrier_lost_{}", std::process::id());
    let location = Location::parse(&format!("{}&application_name={name}", db.url())).unwrap();
    let (store, _) = Store::open(&location, quotas(1000)).await.unwrap();
    let first: Vec<Enqueue> = (0..10)
        .map(|id| local(message(id, ALICE, BOB, id)))
        .collect();
    assert!(submit_all(&store, first).await.iter().all(|o| *o == Stored));

    db.execute(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '{name}'"
    ))
    .await;
    let mut refused = 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut id = 10;
    while std::time::Instant::now() < deadline {
        let rx = store
            .submit_enqueue(local(message(id, ALICE, BOB, id)))
            .await
            .unwrap();
        match rx.await.unwrap() {
            Ok(outcome) => {
                assert_eq!(outcome, Stored);
                break;
            }
            Err(e) => {
                assert_eq!(e.code(), ErrorCode::StorageUnavailable, "{e}");
                refused += 1;
                id += 1;
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
    assert!(refused >= 1, "cutting the connections refused nothing");
    let mut expected: Vec<u8> = (0..10).collect();
    expected.push(id);
    assert_eq!(
        queued_ids(&store, BOB).await,
        expected,
        "after {refused} refusals"
    );
    store.close().await;
    db.remove().await;
}

/// An SQLite path where no database is.
fn source_dir_missing() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("carrier-missing-{}.db", std::process::id()))
}

/// An operator's purge empties every device's queue of a recipient through
/// the queue writer: the quota, counted across devices, has all its room
/// back at once.
#[tokio::test]
async fn a_purge_reaches_every_device_and_gives_the_room_back() {
    on_each_backend(quotas(3), |store, backend| async move {
        let to_device = |id, device| {
            local(NewMessage {
                device,
                ..message(id, ALICE, BOB, id)
            })
        };
        let outcomes = submit_all(
            &store,
            vec![
                to_device(1, 0),
                to_device(2, 1),
                to_device(3, 2),
                to_device(4, 1),
            ],
        )
        .await;
        assert_eq!(
            outcomes,
            [Stored, Stored, Stored, QuotaFull],
            "{backend}: devices share the recipient's quota"
        );
        assert_eq!(
            store.purge_queue(&phone(BOB)).await.unwrap(),
            3,
            "{backend}"
        );
        for device in 0..3 {
            assert_eq!(store.waiting(&phone(BOB), device, 0).await.unwrap(), 0);
        }
        let outcomes = submit_all(
            &store,
            vec![to_device(4, 1), to_device(5, 2), to_device(6, 0)],
        )
        .await;
        assert_eq!(outcomes, [Stored, Stored, Stored], "{backend}");
    })
    .await;
}

/// A new account key forgets the old key's devices with their queues: the
/// room those messages took in the recipient's quota (and in their
/// senders' shares) is free again at once, as after a purge.
#[tokio::test]
async fn a_new_account_key_gives_its_old_devices_room_back() {
    on_each_backend(quotas(3), |store, backend| async move {
        let to_device = |id, device| {
            local(NewMessage {
                device,
                ..message(id, ALICE, BOB, id)
            })
        };
        let register = |key: u8| {
            let store = store.clone();
            async move {
                let code = pending_code(BOB, key, 1_000);
                assert!(
                    store
                        .otp_issue(&code, otp_limits(1_000))
                        .await
                        .unwrap()
                        .is_ok()
                );
                let user = UserRow {
                    phone: BOB.into(),
                    key_type: "p256".into(),
                    public_key: vec![key; 65],
                    fingerprint: format!("{key:064x}"),
                    registered_at: 1_000,
                };
                store.otp_register(&user).await.unwrap()
            }
        };
        assert_eq!(register(1).await, Some(false), "{backend}");
        let outcomes = submit_all(
            &store,
            vec![
                to_device(1, 1),
                to_device(2, 2),
                to_device(3, 0),
                to_device(4, 1),
            ],
        )
        .await;
        assert_eq!(outcomes, [Stored, Stored, Stored, QuotaFull], "{backend}");
        assert_eq!(register(2).await, Some(true), "{backend}: a new key");
        for device in 1..3 {
            assert_eq!(store.waiting(&phone(BOB), device, 0).await.unwrap(), 0);
        }
        let outcomes = submit_all(
            &store,
            vec![to_device(5, 0), to_device(6, 0), to_device(7, 0)],
        )
        .await;
        assert_eq!(
            outcomes,
            [Stored, Stored, QuotaFull],
            "{backend}: the forgotten devices' room is free, the account's own queue kept"
        );
    })
    .await;
}

/// Rows of each kind the upgrade test below starts from: enough that an
/// upgrade looking each seen id up by scanning a queue takes minutes, while
/// one that looks them up by index takes well under a second.
const UPGRADE_ROWS: u32 = 20_000;

/// The schema of migration `version`'s predecessors, for `backend`: the
/// migrations up to it, copied where a migrator can read them.
fn migrations_before(backend: &str, version: u32) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(backend);
    for entry in std::fs::read_dir(source).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let number: u32 = name[..4].parse().unwrap();
        if number < version {
            std::fs::copy(&path, dir.path().join(name)).unwrap();
        }
    }
    dir
}

/// Upgrading to ids per sender (0013) gives each remembered relayed id the
/// sender of its copy; a relay with many remembered ids and long queues
/// upgrades in moments, not in time growing with the product of the two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrading_to_ids_per_sender_takes_moments_on_a_busy_relay() {
    for db in TestDb::each().await {
        let backend = db.backend();
        migrate_before(&db, 13).await;
        let (numbers, id) = match db {
            TestDb::Sqlite(_) => (
                format!(
                    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n
                     WHERE i < {UPGRADE_ROWS}) SELECT i FROM n"
                ),
                "CAST(printf('%s%015d', k, i) AS BLOB)",
            ),
            TestDb::Postgres { .. } => (
                format!("SELECT generate_series(1, {UPGRADE_ROWS}) AS i"),
                "convert_to(k || lpad(i::text, 15, '0'), 'UTF8')",
            ),
        };
        db.execute(&format!(
            "INSERT INTO message_queue (id, recipient, device, sender, sender_device, envelope,
                 received_at, expires_at)
                 SELECT {id}, '{BOB}', 1, '{ALICE}', 1, 'x', 0, 9
                 FROM (SELECT 'q' AS k, i FROM ({numbers}) AS n) AS m;
             INSERT INTO outbound_queue (neighbour, id, recipient, device, sender,
                 sender_device, envelope, received_at, expires_at, path)
                 SELECT 'nb', {id}, '{BOB}', 1, '{CAROL}', 1, 'x', 0, 9, '[]'
                 FROM (SELECT 'o' AS k, i FROM ({numbers}) AS n) AS m;
             INSERT INTO relay_seen (recipient, device, id, expires_at)
                 SELECT '{BOB}', 1, {id}, 9
                 FROM (SELECT k, i FROM ({numbers}) AS n,
                     (SELECT 'q' AS k UNION ALL SELECT 'o') AS ks) AS m;"
        ))
        .await;
        let opened = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            Store::open(&db.location(), quotas(1)),
        )
        .await;
        let Ok(opened) = opened else {
            panic!("{backend}: the upgrade took more than 30 s");
        };
        let (store, _) = opened.unwrap_or_else(|e| panic!("{backend}: the store opens: {e}"));
        store.close().await;
        let pool = crate::common::open_any(&db.location()).await;
        let senders: Vec<(String, i64)> = sqlx::query_as(
            "SELECT sender, count(*) FROM relay_seen GROUP BY sender ORDER BY sender",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        pool.close().await;
        let n = i64::from(UPGRADE_ROWS);
        assert_eq!(
            senders,
            [(ALICE.to_owned(), n), (CAROL.to_owned(), n)],
            "{backend}: each seen id has its copy's sender"
        );
        db.remove().await;
    }
}

/// Runs the migrations before `version` on `db`, as an older server left it.
async fn migrate_before(db: &TestDb, version: u32) {
    let url = match db {
        TestDb::Sqlite(_) => format!("{}?mode=rwc", db.url()),
        TestDb::Postgres { .. } => db.url(),
    };
    migrate_url_before(db.backend(), &url, version).await;
}

/// Runs `backend`'s migrations before `version` on the database at `url`.
async fn migrate_url_before(backend: &str, url: &str, version: u32) {
    use sqlx::Connection;
    let older = sqlx::migrate::Migrator::new(migrations_before(backend, version).path())
        .await
        .unwrap();
    if backend == "sqlite" {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        older.run(&mut c).await.unwrap();
        c.close().await.ok();
    } else {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        older.run(&mut c).await.unwrap();
        c.close().await.ok();
    }
}

/// A server started on a database an older server left says that it is
/// upgrading before it starts (a rebuild of a long queue takes a while),
/// then what it applied; a server on an up-to-date database says neither.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_says_when_it_starts_and_what_it_applied() {
    let files = crate::process::ServerFiles::new();
    match files.postgres() {
        Some(db) => migrate_before(db, 14).await,
        None => {
            std::fs::create_dir_all(files.data_dir()).unwrap();
            let path = files.data_dir().join(carrier::db::DATABASE_FILE);
            let url = format!("sqlite://{}?mode=rwc", path.display());
            migrate_url_before("sqlite", &url, 14).await;
        }
    }
    for _ in 0..2 {
        let mut server = files.start();
        assert!(server.terminate().success());
    }
    let log = files.log_text();
    let upgrading: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("upgrading the database schema"))
        .collect();
    assert_eq!(upgrading.len(), 1, "{log}");
    assert!(
        upgrading[0].contains("from=13") && upgrading[0].contains("to=14"),
        "{log}"
    );
    let applied = log
        .lines()
        .filter(|l| l.contains("database migration applied"))
        .collect::<Vec<_>>();
    assert_eq!(applied.len(), 1, "{log}");
    assert!(applied[0].contains("version=14"), "{log}");
}

/// Members of a cluster starting together on a new database all bring it
/// up to date: the table of migrations is created once, each migration
/// applied once, and none of them fails. (PostgreSQL only: SQLite has one
/// server.) A race is not certain to show in one round, so there are a few.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_starting_together_on_a_new_database_all_open_it() {
    for _ in 0..5 {
        for db in TestDb::each().await {
            if !matches!(db, TestDb::Postgres { .. }) {
                continue;
            }
            let location = db.location();
            let opens = (0..3).map(|_| Store::open(&location, quotas(1)));
            for opened in futures::future::join_all(opens).await {
                let (store, _) = opened.unwrap_or_else(|e| panic!("a member fails to open: {e}"));
                store.close().await;
            }
            db.remove().await;
        }
    }
}

/// Two members starting together on a new database both claim the
/// cluster's identity: the one that waited for the other's claim to commit
/// is told whose it is, not an error. (PostgreSQL only: SQLite has one
/// server.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_claiming_the_identity_at_the_same_moment_sees_the_other_claim() {
    claim_at_the_same_moment("").await;
}

/// A database whose default isolation is stricter than the server's: the
/// claim would fail as a serialization error instead of seeing the row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stricter_default_isolation_does_not_fail_the_claim() {
    claim_at_the_same_moment("%20-c%20default_transaction_isolation%3Dserializable").await;
}

/// Claims the identity while another member's claim is uncommitted; `more`
/// is appended to the test database URL's `options`.
async fn claim_at_the_same_moment(more: &str) {
    use sqlx::Connection;
    for db in TestDb::each().await {
        if !matches!(db, TestDb::Postgres { .. }) {
            continue;
        }
        let location = Location::parse(&format!("{}{more}", db.url())).expect("a URL");
        let (store, _) = Store::open(&location, quotas(1)).await.unwrap();
        let mut other = sqlx::PgConnection::connect(&db.url()).await.unwrap();
        sqlx::raw_sql(
            "BEGIN; INSERT INTO cluster_identity (id, fingerprint, code_key_check, recorded_at)
             VALUES (1, 'theirs', 'check', 0)",
        )
        .execute(&mut other)
        .await
        .unwrap();
        let claim = tokio::spawn({
            let store = store.clone();
            async move { store.claim_identity("ours", "check", 1).await }
        });
        // The claim waits on the other member's uncommitted row.
        let mut watch = sqlx::PgConnection::connect(&db.url()).await.unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event_type = 'Lock'
                     AND query LIKE '%INSERT INTO cluster_identity%'",
            )
            .fetch_one(&mut watch)
            .await
            .unwrap();
            if waiting > 0 {
                break;
            }
            assert!(
                !claim.is_finished(),
                "the claim ended without waiting: {claim:?}"
            );
            assert!(
                std::time::Instant::now() < deadline,
                "the claim never waited"
            );
            tokio::task::yield_now().await;
        }
        sqlx::raw_sql("COMMIT").execute(&mut other).await.unwrap();
        let claimed = claim.await.unwrap().expect("the claim is answered");
        assert_eq!(
            claimed,
            Some(carrier::db::cluster::Mismatch::ServerKey {
                cluster: "theirs".into(),
                ours: "ours".into(),
            })
        );
        store.close().await;
        db.remove().await;
    }
}

/// Every column of every queued message, in queue order.
type QueueRows = Vec<(i64, Vec<u8>, String, i64, String, i64, Vec<u8>, i64, i64)>;

async fn queue_rows(db: &TestDb) -> QueueRows {
    let pool = crate::common::open_any(&db.location()).await;
    let rows = sqlx::query_as(
        "SELECT seq, id, recipient, device, sender, sender_device, envelope, received_at,
             expires_at
         FROM message_queue ORDER BY seq",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    rows
}

/// The columns of the queue's unique index, in order.
async fn unique_columns(db: &TestDb) -> String {
    let pool = crate::common::open_any(&db.location()).await;
    let sql = match db {
        TestDb::Sqlite(_) => {
            "SELECT group_concat(name, ', ') FROM
                 (SELECT i.name FROM pragma_index_list('message_queue') AS l,
                      pragma_index_info(l.name) AS i
                  WHERE l.origin = 'u' ORDER BY i.seqno)"
        }
        TestDb::Postgres { .. } => {
            "SELECT substring(indexdef from '\\((.*)\\)') FROM pg_indexes
             WHERE schemaname = current_schema() AND tablename = 'message_queue'
                 AND indexdef LIKE 'CREATE UNIQUE INDEX%' AND indexname NOT LIKE '%_pkey'"
        }
    };
    let columns: String = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap();
    pool.close().await;
    columns
}

/// Upgrading to acknowledgements by id (0014) puts the id before the
/// sender in the queue's unique index (so an ack, which names ids alone,
/// finds its rows by index), keeps every queued message as it was, never
/// hands out a queue position again (not even those of deleted messages,
/// which a client may hold as its fetch cursor), and still takes a
/// sender's repeated id for a retry while another sender's message under
/// the same id is a message of its own.
#[tokio::test]
async fn upgrading_to_acks_by_id_keeps_the_queue_and_its_positions() {
    for db in TestDb::each().await {
        let backend = db.backend();
        migrate_before(&db, 14).await;
        let blob = |text: &str| match db {
            TestDb::Sqlite(_) => format!("CAST('{text}' AS BLOB)"),
            TestDb::Postgres { .. } => format!("convert_to('{text}', 'UTF8')"),
        };
        let row = |id: &str, sender: &str, n: u32| {
            format!(
                "INSERT INTO message_queue (id, recipient, device, sender, sender_device,
                     envelope, received_at, expires_at)
                 VALUES ({}, '{BOB}', 1, '{sender}', {n}, {}, {}, {})
                 ON CONFLICT (recipient, device, sender, id) DO NOTHING",
                blob(id),
                blob(&format!("envelope {n}")),
                1_000 + n,
                2_000 + n
            )
        };
        db.execute(&format!(
            "{}; {}; {}; DELETE FROM message_queue WHERE id = {};",
            row("one", ALICE, 1),
            row("two", ALICE, 2),
            row("three", ALICE, 3),
            blob("three")
        ))
        .await;
        let before = queue_rows(&db).await;
        let (store, _) = Store::open(&db.location(), quotas(1))
            .await
            .unwrap_or_else(|e| panic!("{backend}: the store opens: {e}"));
        store.close().await;
        assert_eq!(
            unique_columns(&db).await,
            "recipient, device, id, sender",
            "{backend}"
        );
        assert_eq!(queue_rows(&db).await, before, "{backend}: the queue kept");
        db.execute(&format!(
            "{}; {}; {};",
            row("two", CAROL, 4),
            row("four", ALICE, 5),
            row("two", ALICE, 6)
        ))
        .await;
        let after = queue_rows(&db).await;
        let seqs: Vec<i64> = after.iter().map(|r| r.0).collect();
        let senders: Vec<&str> = after.iter().map(|r| r.4.as_str()).collect();
        assert_eq!(
            senders,
            [ALICE, ALICE, CAROL, ALICE],
            "{backend}: a retry dropped, another sender's id stored"
        );
        assert!(
            seqs[2] > 3,
            "{backend}: position 3, handed out before the upgrade, was handed out again: {seqs:?}"
        );
        db.remove().await;
    }
}
