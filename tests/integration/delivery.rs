//! Store and forward: offline delivery, acknowledgement, redelivery, live
//! push, expiry, quota, both key types, duplicates and size limits.

use carrier::client::{ClientError, Direction, Received, Session};
use carrier::domain::MessageId;
use carrier::protocol::{self, B64, ErrorCode, KeyType, Request, Response};

use crate::common::*;

fn texts(received: &[Received]) -> Vec<&str> {
    received.iter().map(|m| m.text.as_str()).collect()
}

/// Fetches (and so acknowledges) everything waiting; fails on any refusal.
async fn fetch_all(session: &mut Session<'_>) -> Vec<Received> {
    let (received, refused) = within("fetch", session.fetch()).await.expect("fetch");
    assert!(refused.is_empty(), "refused: {refused:?}");
    received
}

async fn two_users(server: &TestServer) -> (TestUser, TestUser) {
    (
        register(server, ALICE, KeyType::P256).await,
        register(server, BOB, KeyType::P256).await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_user_fetches_decrypts_and_acks() {
    let mut server = spawn_server().await;
    let (alice, bob) = two_users(&server).await;

    let a = alice.client.login().await.unwrap();
    let first = a.send(BOB, "Lunch at noon?").await.expect("send");
    let second = a
        .send(BOB, "Or one o'clock, ça va? 🍜")
        .await
        .expect("send");
    a.close().await;
    assert_eq!(server.queued_for(BOB).await, 2);

    let mut b = bob.client.login().await.unwrap();
    let got = fetch_all(&mut b).await;
    assert_eq!(texts(&got), ["Lunch at noon?", "Or one o'clock, ça va? 🍜"]);
    assert_eq!(
        got.iter().map(|m| m.id).collect::<Vec<_>>(),
        [first, second]
    );
    assert!(got.iter().all(|m| m.from == ALICE));
    // The sender's clock travels inside the envelope: Bob sees what Alice recorded.
    let sent = alice.client.home.history().await.unwrap();
    for m in &got {
        let mine = sent
            .iter()
            .find(|e| e.id == m.id.to_hex())
            .expect("Alice's history has the message");
        assert_eq!((mine.direction, mine.sent_at), (Direction::Out, m.sent_at));
    }
    let history = bob.client.home.history().await.unwrap();
    assert_eq!(
        history
            .iter()
            .filter(|e| e.direction == Direction::In)
            .count(),
        2
    );

    // The fetch acknowledged both: they are gone from the server.
    assert_eq!(
        server.queued_for(BOB).await,
        0,
        "acknowledged messages are still queued"
    );
    assert!(
        fetch_all(&mut b).await.is_empty(),
        "a second fetch returned messages"
    );
    b.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_fetched_without_ack_is_delivered_again() {
    let mut server = spawn_server().await;
    let (alice, bob) = two_users(&server).await;
    let a = alice.client.login().await.unwrap();
    let id = a.send(BOB, "are you there?").await.unwrap();
    a.close().await;

    // Bob's device fetches and dies before acknowledging.
    let b = bob.client.login().await.unwrap();
    match b
        .conn
        .call(Request::Fetch {
            limit: None,
            after: None,
        })
        .await
        .unwrap()
    {
        Response::Messages { messages, more, .. } => {
            assert!(!more);
            assert_eq!(messages.iter().map(|m| m.id).collect::<Vec<_>>(), [id]);
        }
        other => panic!("expected messages, got {other:?}"),
    }
    drop(b);
    assert_eq!(server.queued_for(BOB).await, 1);

    let mut b = bob.client.login().await.unwrap();
    let got = fetch_all(&mut b).await;
    assert_eq!(texts(&got), ["are you there?"]);
    assert_eq!(got[0].id, id);
    assert_eq!(server.queued_for(BOB).await, 0);
    b.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_deletes_only_what_the_session_was_given() {
    let mut server = spawn_server().await;
    let (alice, bob) = two_users(&server).await;
    let a = alice.client.login().await.unwrap();
    let id = a.send(BOB, "keep me").await.unwrap();

    // Neither the sender nor a session of Bob that was not given it can delete it.
    let other_bob = bob.client.login().await.unwrap();
    let cases = [
        ("the sender", &a),
        ("a recipient session that did not fetch", &other_bob),
    ];
    for (case, session) in cases {
        match session.conn.call(Request::Ack { ids: vec![id] }).await {
            Ok(Response::Acked { deleted }) => assert_eq!(deleted, 0, "{case}"),
            other => panic!("{case}: {other:?}"),
        }
        assert_eq!(
            server.queued_for(BOB).await,
            1,
            "{case} deleted the message"
        );
    }
    a.close().await;
    let mut b = bob.client.login().await.unwrap();
    assert_eq!(texts(&fetch_all(&mut b).await), ["keep me"]);
    b.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logged_in_recipient_gets_the_message_pushed() {
    let mut server = spawn_server().await;
    let (alice, bob) = two_users(&server).await;
    let mut b = bob.client.login().await.unwrap();
    let a = alice.client.login().await.unwrap();
    let id = a.send(BOB, "live!").await.unwrap();

    let pushed = next_pushed_message(&mut b.conn).await;
    assert_eq!(pushed.id, id);
    assert_eq!(pushed.from, ALICE);
    let got = b
        .take_pushed(pushed)
        .await
        .unwrap()
        .expect("not refused")
        .expect("stored");
    assert_eq!(got.text, "live!");
    // Taking it acknowledged it.
    assert_eq!(server.queued_for(BOB).await, 0);
    assert!(fetch_all(&mut b).await.is_empty());
    a.close().await;
    b.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_message_is_not_delivered() {
    let mut server = spawn_server().await;
    let (alice, bob) = two_users(&server).await;
    let a = alice.client.login().await.unwrap();
    a.send(BOB, "old news").await.unwrap();
    server.clock.advance_ms(server.config.message_ttl_ms - 1);
    a.send(BOB, "fresh news").await.unwrap();
    a.close().await;

    server.clock.advance_ms(1);
    let mut b = bob.client.login().await.unwrap();
    assert_eq!(
        texts(&fetch_all(&mut b).await),
        ["fresh news"],
        "only the unexpired message"
    );
    b.close().await;

    // Bob offline: a message sent now expires before he is back.
    let a = alice.client.login().await.unwrap();
    a.send(BOB, "too late").await.unwrap();
    a.close().await;
    server.clock.advance_ms(server.config.message_ttl_ms);
    let mut b = bob.client.login().await.unwrap();
    assert!(
        fetch_all(&mut b).await.is_empty(),
        "an expired message was delivered"
    );
    b.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_more_and_loses_nothing() {
    let mut server = spawn_server_with(|c| c.quota.max_messages = 3).await;
    let (alice, bob) = two_users(&server).await;
    let a = alice.client.login().await.unwrap();
    for n in 1..=3 {
        a.send(BOB, &format!("message {n}"))
            .await
            .unwrap_or_else(|e| panic!("message {n}: {e}"));
    }
    let err = a
        .send(BOB, "message 4")
        .await
        .expect_err("the fourth message is over quota");
    assert_eq!(server_code(&err), Some(ErrorCode::QuotaExceeded), "{err}");
    assert_eq!(server.queued_for(BOB).await, 3);

    let mut b = bob.client.login().await.unwrap();
    assert_eq!(
        texts(&fetch_all(&mut b).await),
        ["message 1", "message 2", "message 3"]
    );
    // Fetching made room again.
    a.send(BOB, "message 5")
        .await
        .expect("room after the fetch");
    assert_eq!(texts(&fetch_all(&mut b).await), ["message 5"]);
    a.close().await;
    b.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_and_p256_users_write_to_each_other() {
    let mut server = spawn_server().await;
    let rsa = register(&server, ALICE, KeyType::Rsa).await;
    let ec = register(&server, BOB, KeyType::P256).await;
    let cases = [("RSA to P-256", &rsa, &ec), ("P-256 to RSA", &ec, &rsa)];
    for (case, from, to) in cases {
        let text = format!("{case}: hello");
        {
            let s = from.client.login().await.unwrap();
            s.send(&to.phone, &text)
                .await
                .unwrap_or_else(|e| panic!("{case}: send: {e}"));
            s.close().await;
        }
        let mut s = to.client.login().await.unwrap();
        let got = fetch_all(&mut s).await;
        assert_eq!(texts(&got), [text.as_str()], "{case}");
        assert_eq!(got[0].from, from.phone, "{case}");
        s.close().await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_message_id_is_queued_once() {
    let mut server = spawn_server().await;
    let (alice, bob) = two_users(&server).await;
    let a = alice.client.login().await.unwrap();
    let (id, send) = sealed_for(&a, BOB, "only once").await;
    for attempt in 1..=2 {
        let answer = a.conn.call(copy_of(&send)).await;
        match answer {
            Ok(Response::Accepted { id: accepted }) => {
                assert_eq!(accepted, id, "attempt {attempt}")
            }
            other => panic!("attempt {attempt}: {other:?}"),
        }
    }
    assert_eq!(server.queued_for(BOB).await, 1, "the duplicate was queued");
    a.close().await;
    let mut b = bob.client.login().await.unwrap();
    let got = fetch_all(&mut b).await;
    assert_eq!(texts(&got), ["only once"]);
    assert_eq!(got[0].id, id);
    b.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_largest_message_goes_through_and_a_larger_one_is_refused() {
    let mut server = spawn_server().await;
    let (alice, bob) = two_users(&server).await;
    let a = alice.client.login().await.unwrap();

    // Exactly MAX_TEXT_BYTES (64 KiB) of varied text, multibyte characters included.
    let mut big: String = "Ünïcödé and ASCII; ".chars().cycle().take(40_000).collect();
    while big.len() < protocol::MAX_TEXT_BYTES {
        big.push('x');
    }
    big.truncate(protocol::MAX_TEXT_BYTES);
    assert_eq!(big.len(), 64 * 1024);
    a.send(BOB, &big).await.expect("64 KiB of text is accepted");

    // One byte more cannot be sealed...
    let over = format!("{big}y");
    match a.send(BOB, &over).await {
        Err(ClientError::Input(message)) => assert!(
            message.contains("the limit is 65536"),
            "a text over the limit: {message}"
        ),
        other => panic!("a text over the limit: expected an input error, got {other:?}"),
    }
    // ...and an envelope over the limit is refused by the server.
    let id = MessageId::random();
    let oversized = vec![1u8; protocol::MAX_ENVELOPE_BYTES + 1];
    let err = a
        .conn
        .call(Request::DeviceSend {
            id,
            to: BOB.into(),
            device: 1,
            list_version: 1,
            envelope: B64(oversized),
        })
        .await
        .expect_err("an oversized envelope is refused");
    assert_eq!(server_code(&err), Some(ErrorCode::MessageTooLarge), "{err}");
    assert_eq!(server.queued_for(BOB).await, 1);
    a.close().await;

    let mut b = bob.client.login().await.unwrap();
    let got = fetch_all(&mut b).await;
    assert_eq!(got.len(), 1);
    assert!(got[0].text == big, "the 64 KiB text arrived altered");
    b.close().await;
    server.stop().await;
}

/// A note to oneself goes to every other device of the account (protocol
/// v2 sends nothing to the sending device itself): with one device it is
/// kept in the history as sent and queued for nobody.
#[tokio::test]
async fn a_message_to_oneself_is_kept_as_sent() {
    let mut server = spawn_server().await;
    let alice = register(&server, ALICE, KeyType::P256).await;
    let mut session = alice.client.login().await.expect("alice logs in");
    session
        .send(ALICE, "note to self")
        .await
        .expect("send to oneself");
    let received = fetch_all(&mut session).await;
    assert!(received.is_empty(), "{received:?}");
    assert_eq!(server.queued_for(ALICE).await, 0);
    let history = alice.client.home.history().await.expect("history");
    assert_eq!(
        history
            .iter()
            .filter(|e| e.text == "note to self" && e.direction == Direction::Out)
            .count(),
        1,
        "stored as sent"
    );
    session.close().await;
    server.stop().await;
}

/// A sender that reaches its share of a recipient's queue is refused
/// with `quota_exceeded` while the queue still has room for others, and
/// gets room back as the recipient fetches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sender_cannot_fill_a_recipients_whole_queue() {
    let mut server = spawn_server_with(|c| {
        c.quota.max_messages = 4;
        c.sender_quota.max_messages = 2;
    })
    .await;
    let (alice, bob) = two_users(&server).await;
    let carol = register(&server, CAROL, KeyType::P256).await;
    let a = alice.client.login().await.unwrap();
    for n in 1..=2 {
        a.send(BOB, &format!("alice {n}"))
            .await
            .unwrap_or_else(|e| panic!("alice {n}: {e}"));
    }
    let err = a
        .send(BOB, "alice 3")
        .await
        .expect_err("past alice's share of bob's queue");
    assert_eq!(server_code(&err), Some(ErrorCode::QuotaExceeded), "{err}");
    assert!(err.to_string().contains("a single sender"), "{err}");
    let c = carol.client.login().await.unwrap();
    c.send(BOB, "carol 1")
        .await
        .expect("carol still reaches bob");
    assert_eq!(server.queued_for(BOB).await, 3);

    let mut b = bob.client.login().await.unwrap();
    assert_eq!(
        texts(&fetch_all(&mut b).await),
        ["alice 1", "alice 2", "carol 1"]
    );
    a.send(BOB, "alice 4").await.expect("room after the fetch");
    for session in [a, b, c] {
        session.close().await;
    }
    server.stop().await;
}

#[tokio::test]
async fn a_retry_into_a_full_queue_is_accepted_as_the_duplicate_it_is() {
    let mut server = spawn_server_with(|c| c.quota.max_messages = 1).await;
    let (alice, bob) = two_users(&server).await;
    let a = alice.client.login().await.unwrap();
    let conn = &a.conn;
    let (_, send) = sealed_for(&a, &bob.phone, "once").await;
    assert!(
        matches!(
            conn.call(copy_of(&send)).await,
            Ok(Response::Accepted { .. })
        ),
        "first attempt"
    );
    // The queue is now full; the same message again is not a new one.
    assert!(
        matches!(conn.call(send).await, Ok(Response::Accepted { .. })),
        "retry"
    );
    let (_, other) = sealed_for(&a, &bob.phone, "twice").await;
    let refused = conn
        .call(other)
        .await
        .expect_err("a new message is over quota");
    assert_eq!(server_code(&refused), Some(ErrorCode::QuotaExceeded));
    assert_eq!(server.queued_for(&bob.phone).await, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_kept_back_do_not_hide_later_ones() {
    let server = spawn_server_with(|c| {
        c.limits.send_messages = carrier::rate::Rate::per_second(1_000_000, 1_000_000);
    })
    .await;
    let (alice, bob) = two_users(&server).await;
    let carol = register(&server, CAROL, KeyType::P256).await;
    let a = alice.client.login().await.unwrap();
    a.send(BOB, "before the change").await.expect("send");
    a.close().await;
    let mut b = bob.client.login().await.unwrap();
    assert_eq!(texts(&fetch_all(&mut b).await), ["before the change"]);
    b.close().await;

    // Alice's phone moves to a new key: Bob's client keeps her messages
    // back until he trusts it, more of them than one fetch returns.
    let new_alice = another_device(&server, ALICE).await;
    let a = new_alice.client.login().await.unwrap();
    let kept = 520;
    for i in 0..kept {
        a.send(BOB, &format!("new key {i}")).await.expect("send");
    }
    a.close().await;
    let c = carol.client.login().await.unwrap();
    c.send(BOB, "queued after them").await.expect("send");
    c.close().await;

    let mut b = bob.client.login().await.unwrap();
    let (received, refused) = within("fetch", b.fetch()).await.expect("fetch");
    assert_eq!(texts(&received), ["queued after them"]);
    assert_eq!(refused.len(), kept, "each kept-back message is reported");
    assert!(refused.iter().all(|r| r.from == ALICE));
    b.close().await;
    assert_eq!(
        server.queued_for(BOB).await,
        kept as i64,
        "what was kept back stays queued"
    );
}

/// Sends pipelined on one connection are each answered once their commit
/// lands, while the connection goes on reading: a refusal in the middle is
/// answered at once and under its own sequence number, and every accepted
/// message is queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_sends_are_each_answered_after_their_commit() {
    const SENDS: usize = 40;
    let mut server = spawn_server().await;
    let (alice, bob) = two_users(&server).await;
    let a = alice.client.login().await.unwrap();
    let mut requests = Vec::new();
    for i in 0..SENDS {
        requests.push(sealed_for(&a, BOB, &format!("pipelined {i}")).await);
    }
    let mut answers = Vec::new();
    for (k, (id, request)) in requests.into_iter().enumerate() {
        if k == SENDS / 2 {
            let oversized = Request::DeviceSend {
                id: MessageId::random(),
                to: BOB.into(),
                device: 1,
                list_version: 1,
                envelope: B64(vec![1u8; protocol::MAX_ENVELOPE_BYTES + 1]),
            };
            answers.push((None, a.conn.start(oversized).await.expect("sent")));
        }
        answers.push((Some(id), a.conn.start(request).await.expect("sent")));
    }
    for (id, answer) in answers {
        let answer = within("an answer", answer).await.expect("answered");
        match id {
            Some(id) => assert!(
                matches!(answer, Response::Accepted { id: got } if got == id),
                "expected accepted {id}, got {answer:?}"
            ),
            None => {
                expect_error(answer, ErrorCode::MessageTooLarge, "the oversized send");
            }
        }
    }
    assert_eq!(server.queued_for(BOB).await, SENDS as i64);
    a.close().await;
    let mut b = bob.client.login().await.unwrap();
    let got = fetch_all(&mut b).await;
    assert_eq!(got.len(), SENDS);
    b.close().await;
    server.stop().await;
}

/// A session's first fetch waits for the messages submitted before it
/// joined, even when it names a cursor kept from an earlier session: they
/// were not pushed to it, and a fetch that read before their commit would
/// report the queue empty. The writer is held back by a lock on the queue's
/// table, which only PostgreSQL can take without stopping the login's own
/// writes; on SQLite the test is skipped (the run says so).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_fetch_after_a_cursor_waits_for_messages_still_committing() {
    let mut server = spawn_server().await;
    if !matches!(
        server.config.database,
        Some(carrier::db::Location::Postgres(_))
    ) {
        return;
    }
    let (alice, bob) = two_users(&server).await;
    let a = alice.client.login().await.unwrap();
    a.send(BOB, "the first").await.expect("send");
    let mut b1 = bob.client.login().await.unwrap();
    let Response::Messages {
        messages,
        cursor: Some(cursor),
        ..
    } = within("fetch", b1.conn.call(fetch_after(None)))
        .await
        .expect("fetch")
    else {
        panic!("the first fetch returns the first message and a cursor");
    };
    assert_eq!(messages.len(), 1);

    let db = server.db().await;
    let mut holder = db.begin().await.expect("a transaction");
    sqlx::query("LOCK TABLE message_queue IN EXCLUSIVE MODE")
        .execute(&mut *holder)
        .await
        .expect("the queue's table is locked");
    let (id, request) = sealed_for(&a, BOB, "the second").await;
    let accepted = a.conn.start(request).await.expect("sent");
    // Pushed once the writer has it: submitted before the next session joins.
    assert_eq!(next_pushed_message(&mut b1.conn).await.id, id);
    let b2 = bob.client.login().await.unwrap();
    let mut fetched = b2
        .conn
        .start(fetch_after(Some(cursor)))
        .await
        .expect("sent");
    // A fetch that did not wait would be answered now, with nothing.
    let early = tokio::time::timeout(std::time::Duration::from_millis(200), &mut fetched).await;
    assert!(early.is_err(), "answered before the commit: {early:?}");
    holder.rollback().await.expect("the lock is let go");

    let Response::Messages { messages, .. } = within("fetch", fetched).await.expect("fetch") else {
        panic!("a fetch is answered with messages");
    };
    assert_eq!(messages.iter().map(|m| m.id).collect::<Vec<_>>(), [id]);
    let accepted = within("the send's answer", accepted)
        .await
        .expect("answered");
    assert!(
        matches!(accepted, Response::Accepted { .. }),
        "{accepted:?}"
    );
    for session in [a, b1, b2] {
        session.close().await;
    }
    db.close().await;
    server.stop().await;
}

fn fetch_after(after: Option<u64>) -> Request {
    Request::Fetch { limit: None, after }
}
