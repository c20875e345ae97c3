//! Paging through a device's queue with `fetch` cursors on one member
//! while both members store messages for that device at once. Positions
//! are handed out when rows are inserted and members commit in parallel,
//! so without care a page's cursor could pass a message that commits a
//! moment later; every committed message must turn up in some page, and
//! none in two.

use std::collections::HashSet;

use carrier::client::Connection;
use carrier::domain::MessageId;
use carrier::protocol::{Delivered, KeyType, Request, Response};
use tokio::sync::oneshot;

use super::{first_member, second_member};
use crate::common::*;
use crate::devices::client::*;

/// Further senders, beside Alice, Carol and Dave.
const MORE: [&str; 5] = [
    "+12025550105",
    "+12025550106",
    "+12025550107",
    "+12025550108",
    "+12025550109",
];

/// Messages each sender sends: under the default burst of one user's sends.
const PER_SENDER: u32 = 150;
/// A small page, so that many cursors are handed out while sends commit.
const PAGE: u32 = 5;

/// `who` registered on `server` with one device published and logged in
/// there (its prekeys published).
pub(super) async fn one_device(server: &TestServer, who: &str) -> (TestUser, Device, Connection) {
    let user = register_account(server, who, KeyType::P256).await;
    let mut account = Account::new(&user);
    account.add_device("phone");
    let conn = logged_in_connection(server, who, &account.identity).await;
    let answer = conn.ask(account.next_list()).await.unwrap();
    assert!(
        matches!(answer, Response::DevicesPublished { version: 1 }),
        "{who} publishes its list: {answer:?}"
    );
    conn.close().await;
    let mut device = account.device(1);
    let conn = device.connect(server).await;
    let answer = device.publish_prekeys(&conn).await;
    assert!(
        matches!(answer, Response::PrekeysPublished { .. }),
        "{who}'s device publishes its prekeys: {answer:?}"
    );
    (user, device, conn)
}

/// Seals [`PER_SENDER`] messages from `device` to Bob's device 1 and sends
/// them pipelined on `conn`; returns the ids sent and those accepted.
async fn send_all(
    device: &Device,
    conn: &Connection,
    bob: &TestUser,
) -> (HashSet<MessageId>, HashSet<MessageId>) {
    let peer = look_up(conn, BOB, &bob.identity()).await;
    let mut session = start_session(device, &peer, 1, None);
    let mut answers: Vec<(MessageId, oneshot::Receiver<Response>)> = Vec::new();
    for n in 0..PER_SENDER {
        let id = MessageId::random();
        let envelope = seal(device, &mut session, id, &format!("message {n}"));
        let request = send_request(id, BOB, 1, peer.version(), envelope);
        answers.push((id, conn.start(request).await.expect("the request is sent")));
    }
    let sent = answers.iter().map(|(id, _)| *id).collect();
    let mut accepted = HashSet::new();
    for (id, answer) in answers {
        match within("a send's answer", answer).await {
            Ok(Response::Accepted { id: got }) if got == id => {
                accepted.insert(id);
            }
            other => panic!("a device_send was answered {other:?}"),
        }
    }
    (sent, accepted)
}

/// One page after `after`: its messages and its cursor.
async fn page(conn: &Connection, after: Option<u64>) -> (Vec<Delivered>, Option<u64>) {
    let request = Request::Fetch {
        limit: Some(PAGE),
        after,
    };
    match conn.ask(request).await.expect("fetch answers") {
        Response::Messages {
            messages, cursor, ..
        } => (messages, cursor),
        other => panic!("fetch: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursors_skip_nothing_while_both_members_store_for_one_device() {
    let Some(mut a) = first_member().await else {
        return;
    };
    let mut b = second_member(&a).await;
    let (bob, _bob_device, bob_conn) = one_device(&b, BOB).await;
    let mut senders = Vec::new();
    let phones = [ALICE, CAROL, DAVE].into_iter().chain(MORE);
    for (i, who) in phones.enumerate() {
        let member = if i % 2 == 0 { &a } else { &b };
        let (_, device, conn) = one_device(member, who).await;
        senders.push((device, conn));
    }

    let done = std::sync::atomic::AtomicBool::new(false);
    let sending = async {
        let all = futures::future::join_all(
            senders
                .iter()
                .map(|(device, conn)| send_all(device, conn, &bob)),
        )
        .await;
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        all
    };
    // Pages, each after the last one's cursor and never acknowledged,
    // until the senders are done and a page after that comes back empty.
    let paging = async {
        let mut cursor = None;
        let mut got: HashSet<MessageId> = HashSet::new();
        loop {
            let finished = done.load(std::sync::atomic::Ordering::SeqCst);
            let (messages, next) = page(&bob_conn, cursor).await;
            if messages.is_empty() && finished {
                return got;
            }
            for m in messages {
                assert!(got.insert(m.id), "{} came in two pages", m.id);
            }
            cursor = next.or(cursor);
        }
    };
    let (results, got) = within("sends and pages", async { tokio::join!(sending, paging) }).await;
    let mut sent = HashSet::new();
    let mut accepted = HashSet::new();
    for (s, acc) in results {
        sent.extend(s);
        accepted.extend(acc);
    }
    assert!(got.is_subset(&sent), "a page held a message nobody sent");
    let missed: Vec<_> = accepted.difference(&got).collect();
    assert!(
        missed.is_empty(),
        "{} of {} accepted messages were skipped by the cursors",
        missed.len(),
        accepted.len()
    );
    bob_conn.close().await;
    for (_, conn) in senders {
        conn.close().await;
    }
    b.stop().await;
    a.stop().await;
}

/// A message stored by another writer that took its queue position first
/// but commits last: held open here, by hand, in a transaction that does
/// what a member's queue writer does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_does_not_pass_a_message_that_commits_late() {
    let Some(mut a) = first_member().await else {
        return;
    };
    let mut b = second_member(&a).await;
    let (bob, _bob_device, bob_conn) = one_device(&b, BOB).await;
    let (_, alice, on_a) = one_device(&a, ALICE).await;
    let Some(carrier::db::Location::Postgres(url)) = a.config.database.clone() else {
        panic!("a member on PostgreSQL");
    };
    use sqlx::Connection;
    let mut writer = sqlx::PgConnection::connect(&url).await.unwrap();
    let mut watcher = sqlx::PgConnection::connect(&url).await.unwrap();

    // The slow writer takes its turn and a queue position for `late`.
    let late = MessageId::random();
    sqlx::raw_sql("BEGIN").execute(&mut writer).await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext(current_schema()), 1)")
        .execute(&mut writer)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO message_queue (id, recipient, device, sender, sender_device, envelope,
             received_at, expires_at) VALUES ($1, $2, 1, $3, 1, $4, 0, $5)",
    )
    .bind(late)
    .bind(BOB)
    .bind(CAROL)
    .bind(vec![0u8; 32])
    .bind(i64::MAX)
    .execute(&mut writer)
    .await
    .unwrap();

    // Alice's message through A, meanwhile: A either commits it (at a later
    // position) or waits for its turn.
    let peer = look_up(&on_a, BOB, &bob.identity()).await;
    let mut session = start_session(&alice, &peer, 1, None);
    let early = MessageId::random();
    let envelope = seal(&alice, &mut session, early, "early");
    let answer = on_a
        .start(send_request(early, BOB, 1, peer.version(), envelope))
        .await
        .unwrap();
    within("A stores or waits", async {
        loop {
            let (stored, waiting): (i64, i64) = sqlx::query_as(
                "SELECT (SELECT count(*) FROM message_queue WHERE id = $1),
                        (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted)",
            )
            .bind(early)
            .fetch_one(&mut watcher)
            .await
            .unwrap();
            if stored + waiting > 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;

    // A page now, then the slow writer commits, then the next page.
    let (first, cursor) = page(&bob_conn, None).await;
    sqlx::raw_sql("COMMIT").execute(&mut writer).await.unwrap();
    let accepted = within("Alice's answer", answer).await.unwrap();
    assert!(
        matches!(accepted, Response::Accepted { .. }),
        "{accepted:?}"
    );
    let (second, _) = page(&bob_conn, cursor).await;
    let got: Vec<MessageId> = first.iter().chain(&second).map(|m| m.id).collect();
    assert!(
        got.contains(&late),
        "the cursor passed the late message: {got:?}"
    );
    assert!(got.contains(&early), "{got:?}");
    assert_eq!(got.len(), 2, "a message came twice: {got:?}");
    for conn in [bob_conn, on_a] {
        conn.close().await;
    }
    b.stop().await;
    a.stop().await;
}
