//! Message ids are unique per recipient device and sender: whoever learns
//! an id (the recipient of the message, for one) cannot use it to keep
//! the sender's own copies out of a device's queue, and an `ack` deletes
//! only the senders' messages the session was given under an id.

use carrier::client::Connection;
use carrier::domain::MessageId;
use carrier::protocol::{ErrorCode, Request, Response};

use super::client::*;
use super::{stored_for, with_devices};
use crate::common::*;

/// The first `limit` messages waiting on a device's connection.
async fn fetch_some(conn: &Connection, limit: u32) -> Vec<carrier::protocol::Delivered> {
    let request = Request::Fetch {
        limit: Some(limit),
        after: None,
    };
    match conn.ask(request).await.unwrap() {
        Response::Messages { messages, .. } => messages,
        other => panic!("fetch: {other:?}"),
    }
}

#[tokio::test]
async fn a_recipient_cannot_take_the_id_of_the_sender_s_sync_copy() {
    let server = spawn_server().await;
    let (alice, _, mut alices) = with_devices(&server, ALICE, 2).await;
    let (bob, _, mut bobs) = with_devices(&server, BOB, 1).await;
    let (a2, a2_conn) = alices.pop().unwrap();
    a2_conn.close().await;
    let (a1, a1_conn) = &alices[0];
    let (b1, b1_conn) = &mut bobs[0];

    // Alice's message reaches Bob first, so Bob knows its id.
    let id = MessageId::random();
    let bob_peer = look_up(a1_conn, BOB, &bob.identity()).await;
    let mut to_bob = start_session(a1, &bob_peer, 1, None);
    let envelope = seal(a1, &mut to_bob, id, "hello Bob");
    let answer = a1_conn.ask(send_request(id, BOB, 1, 1, envelope)).await;
    assert!(
        matches!(answer, Ok(Response::Accepted { .. })),
        "{answer:?}"
    );
    let pushed = next_pushed_message(b1_conn).await;
    assert_eq!(pushed.id, id);

    // Bob sends Alice's other device a message of his under that id before
    // Alice's sync copy gets there: it is Bob's own message, and stored.
    let alice_peer = look_up(b1_conn, ALICE, &alice.identity()).await;
    let mut to_a2 = start_session(b1, &alice_peer, 2, None);
    let envelope = seal(b1, &mut to_a2, id, "mine now");
    let answer = b1_conn.ask(send_request(id, ALICE, 2, 1, envelope)).await;
    assert!(
        matches!(answer, Ok(Response::Accepted { .. })),
        "{answer:?}"
    );

    // Alice's sync copy under the same id is still accepted, once.
    let mut copy = start_session(a1, &alice_peer, 2, None);
    let envelope = seal(a1, &mut copy, id, "sent to Bob");
    for attempt in ["first", "retry"] {
        let answer = a1_conn
            .ask(send_request(id, ALICE, 2, 1, envelope.clone()))
            .await;
        assert!(
            matches!(answer, Ok(Response::Accepted { id: got }) if got == id),
            "the sync copy, {attempt}: {answer:?}"
        );
    }
    let other = seal(a1, &mut copy, id, "other bytes");
    let answer = a1_conn.ask(send_request(id, ALICE, 2, 1, other)).await;
    expect_error(
        answer.unwrap(),
        ErrorCode::DuplicateId,
        "the same sender's other bytes under its id",
    );
    assert_eq!(stored_for(&server, ALICE, 2).await, 2, "Bob's and Alice's");

    // The device is given Bob's message alone: acknowledging the id
    // deletes Bob's, not the sync copy it was never given.
    let a2_conn = a2.connect(&server).await;
    let first = fetch_some(&a2_conn, 1).await;
    assert_eq!(
        (first.len(), first[0].from.as_str(), first[0].id),
        (1, BOB, id)
    );
    let acked = a2_conn.ask(Request::Ack { ids: vec![id] }).await.unwrap();
    assert!(matches!(acked, Response::Acked { deleted: 1 }), "{acked:?}");
    assert_eq!(stored_for(&server, ALICE, 2).await, 1);
    let rest = fetch_some(&a2_conn, 10).await;
    assert_eq!(
        (rest.len(), rest[0].from.as_str(), rest[0].id),
        (1, ALICE, id)
    );
    let acked = a2_conn.ask(Request::Ack { ids: vec![id] }).await.unwrap();
    assert!(matches!(acked, Response::Acked { deleted: 1 }), "{acked:?}");
    assert_eq!(stored_for(&server, ALICE, 2).await, 0);
}

/// Two senders' messages under one id pushed to a device: acknowledging
/// the id after reading the first deletes that one alone. The second,
/// perhaps still unread when the connection drops, waits for its own
/// acknowledgement.
#[tokio::test]
async fn an_ack_after_one_push_leaves_another_sender_s_push_under_the_id() {
    let server = spawn_server().await;
    let (alice, _, mut alices) = with_devices(&server, ALICE, 2).await;
    let (_bob, _, mut bobs) = with_devices(&server, BOB, 1).await;
    let (_a2, mut a2_conn) = alices.pop().unwrap();
    let (a1, a1_conn) = &alices[0];
    let (b1, b1_conn) = &mut bobs[0];
    let id = MessageId::random();
    let alice_peer = look_up(b1_conn, ALICE, &alice.identity()).await;
    let mut from_bob = start_session(b1, &alice_peer, 2, None);
    let envelope = seal(b1, &mut from_bob, id, "from Bob");
    let answer = b1_conn.ask(send_request(id, ALICE, 2, 1, envelope)).await;
    assert!(
        matches!(answer, Ok(Response::Accepted { .. })),
        "{answer:?}"
    );
    let mut copy = start_session(a1, &alice_peer, 2, None);
    let envelope = seal(a1, &mut copy, id, "sync copy");
    let answer = a1_conn.ask(send_request(id, ALICE, 2, 1, envelope)).await;
    assert!(
        matches!(answer, Ok(Response::Accepted { .. })),
        "{answer:?}"
    );

    // Whichever push comes first, it alone is acknowledged.
    let first = next_pushed_message(&mut a2_conn).await;
    assert_eq!(first.id, id);
    let acked = a2_conn.ask(Request::Ack { ids: vec![id] }).await.unwrap();
    assert!(matches!(acked, Response::Acked { deleted: 1 }), "{acked:?}");
    assert_eq!(
        stored_for(&server, ALICE, 2).await,
        1,
        "the other push waits"
    );
    let second = next_pushed_message(&mut a2_conn).await;
    assert_eq!(second.id, id);
    let mut senders = [first.from, second.from];
    senders.sort();
    assert_eq!(senders, [ALICE, BOB]);
    let acked = a2_conn.ask(Request::Ack { ids: vec![id] }).await.unwrap();
    assert!(matches!(acked, Response::Acked { deleted: 1 }), "{acked:?}");
    assert_eq!(stored_for(&server, ALICE, 2).await, 0);
}
