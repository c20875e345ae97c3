//! A neighbour relaying messages in someone else's name: as a user of the
//! receiving server (whose share of a recipient's queue it would use up),
//! or as a user whose home, by the receiver's directory, is another server
//! than the one the relay's path starts at, whether the directory knows
//! that user already or learns of them while the copy waits. Each refusal
//! is logged once, naming the neighbour.

use carrier::crypto::Identity;
use carrier::domain::MessageId;
use carrier::protocol::link::LinkMessage;
use carrier::protocol::{ErrorCode, KeyType, Response};

use super::devices::{fetch, homed_at, lookup_shows, with_devices};
use super::edges::{devices_of, relay};
use super::{
    beside_a_hostile_neighbour, eventually, link_addr_of, link_as, linked_files, next_link_message,
    send_link,
};
use crate::common::{ALICE, BOB, DAVE};
use crate::devices::client::*;

/// The first answer to relay `id`: its refusal's code, or `None` when it
/// was acknowledged.
async fn answer_to(link: &mut carrier::tls::ClientTlsStream, id: MessageId) -> Option<ErrorCode> {
    next_link_message(link, "the relay's answer", |m| match m {
        LinkMessage::RelayAck { ids, .. } if ids.contains(&id) => Some(None),
        LinkMessage::RelayRefused {
            id: refused, code, ..
        } if refused == id => Some(Some(code)),
        _ => None,
    })
    .await
}

#[tokio::test]
async fn a_neighbour_cannot_relay_as_a_user_of_the_receiving_server() {
    let (mut nodes, hostile) = beside_a_hostile_neighbour().await;
    nodes[0].stop().await;
    nodes[0].config.sender_quota.max_messages = 3;
    nodes[0].start().await;
    let (_, _, alices) = with_devices(&nodes[0], ALICE, 1).await;
    let (bob, _, bobs) = with_devices(&nodes[0], BOB, 1).await;
    let (a1, a1_conn) = &alices[0];
    let bob_peer = look_up(a1_conn, BOB, &bob.identity()).await;
    let mut link = link_as(&hostile, &nodes[0]).await;
    let hostile_fp = hostile.fingerprint().to_hex();

    // The clear header names Alice's device, as anyone can write it; the
    // hostile neighbour sends as many as Alice's share of Bob's queue.
    let mut session = start_session(a1, &bob_peer, 1, None);
    for i in 0..3 {
        let id = MessageId::random();
        let envelope = seal(a1, &mut session, id, &format!("forged {i}"));
        let r = relay(a1, BOB, 1, id, envelope, hostile_fp.clone());
        send_link(&mut link, &LinkMessage::Relay(r)).await;
        assert_eq!(answer_to(&mut link, id).await, Some(ErrorCode::Forbidden));
    }
    assert!(fetch(&bobs[0].1).await.is_empty());

    // Alice's own message still fits her share.
    let id = MessageId::random();
    let envelope = seal(a1, &mut session, id, "really from Alice");
    let answer = a1_conn
        .ask(send_request(id, BOB, 1, 1, envelope))
        .await
        .unwrap();
    assert!(matches!(answer, Response::Accepted { .. }), "{answer:?}");
}

/// The refusal is logged once, as a warning naming the neighbour's
/// fingerprint, so its operator knows whom to ask.
#[tokio::test]
async fn a_forged_relay_is_logged_once_with_the_neighbours_fingerprint() {
    let hostile = Identity::generate(KeyType::P256);
    let unused = "127.0.0.1:9".parse().unwrap();
    let files = linked_files(&[(unused, Some(hostile.fingerprint()))]);
    let server = files.start();
    let (_, _, alices) = with_devices(&server, ALICE, 1).await;
    let (bob, _, _) = with_devices(&server, BOB, 1).await;
    let (a1, a1_conn) = &alices[0];
    let bob_peer = look_up(a1_conn, BOB, &bob.identity()).await;
    let (mut link, _) = carrier::tls::connect_link(
        &link_addr_of(&server).to_string(),
        &hostile.pkcs8_der(),
        carrier::tls::Pin::Expect(server.fingerprint),
    )
    .await
    .expect("the hostile neighbour links");
    let mut session = start_session(a1, &bob_peer, 1, None);
    let id = MessageId::random();
    let envelope = seal(a1, &mut session, id, "forged");
    let r = relay(a1, BOB, 1, id, envelope, hostile.fingerprint().to_hex());
    send_link(&mut link, &LinkMessage::Relay(r)).await;
    assert_eq!(answer_to(&mut link, id).await, Some(ErrorCode::Forbidden));

    let refusals = || {
        files
            .log_text()
            .lines()
            .filter(|l| l.contains("refusing a relayed message"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    eventually("the refusal is logged", || async { !refusals().is_empty() }).await;
    let logged = refusals();
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert!(logged[0].contains("WARN"), "{}", logged[0]);
    assert!(
        logged[0].contains(&hostile.fingerprint().to_hex()),
        "the log names the neighbour: {}",
        logged[0]
    );
}

/// Dave, homed at a server far away that is not the hostile neighbour:
/// his directory entry and device list, and his device 1.
fn dave_far_away() -> (LinkMessage, LinkMessage, Device) {
    let (far, dave) = (
        Identity::generate(KeyType::P256),
        Identity::generate(KeyType::P256),
    );
    let entry = LinkMessage::Directory {
        entries: vec![homed_at(&far, DAVE, &dave)],
    };
    let (list, mut devices) = devices_of(&dave, DAVE, 1, &[1]);
    let list = LinkMessage::Devices {
        entries: vec![list],
    };
    (entry, list, devices.remove(0))
}

#[tokio::test]
async fn a_relay_must_start_at_its_senders_home() {
    let (nodes, hostile) = beside_a_hostile_neighbour().await;
    let (bob, _, bobs) = with_devices(&nodes[0], BOB, 1).await;
    let b1_conn = &bobs[0].1;
    let mut link = link_as(&hostile, &nodes[0]).await;
    let (entry, list, dave1) = dave_far_away();
    send_link(&mut link, &entry).await;
    send_link(&mut link, &list).await;
    lookup_shows(b1_conn, DAVE, 1, 1).await;
    let bob_peer = look_up(b1_conn, BOB, &bob.identity()).await;

    // The hostile neighbour passes Dave's entry on honestly, then sends
    // in Dave's name as if it were his home.
    let mut session = start_session(&dave1, &bob_peer, 1, None);
    let id = MessageId::random();
    let envelope = seal(&dave1, &mut session, id, "not from Dave's home");
    let r = relay(&dave1, BOB, 1, id, envelope, hostile.fingerprint().to_hex());
    send_link(&mut link, &LinkMessage::Relay(r)).await;
    assert_eq!(answer_to(&mut link, id).await, Some(ErrorCode::Forbidden));
    assert!(fetch(b1_conn).await.is_empty());
}

#[tokio::test]
async fn a_relay_from_a_sender_not_known_yet_is_checked_once_their_entry_arrives() {
    let (nodes, hostile) = beside_a_hostile_neighbour().await;
    let (bob, _, bobs) = with_devices(&nodes[0], BOB, 1).await;
    let b1_conn = &bobs[0].1;
    let bob_peer = look_up(b1_conn, BOB, &bob.identity()).await;
    let mut link = link_as(&hostile, &nodes[0]).await;
    let (entry, list, dave1) = dave_far_away();

    // The copy comes first and waits for Dave's device list; his entry
    // and list follow, naming a home other than the path's first server.
    let mut session = start_session(&dave1, &bob_peer, 1, None);
    let id = MessageId::random();
    let envelope = seal(&dave1, &mut session, id, "before Dave's entry");
    let r = relay(&dave1, BOB, 1, id, envelope, hostile.fingerprint().to_hex());
    send_link(&mut link, &LinkMessage::Relay(r)).await;
    send_link(&mut link, &entry).await;
    send_link(&mut link, &list).await;
    assert_eq!(answer_to(&mut link, id).await, Some(ErrorCode::Forbidden));
    assert!(fetch(b1_conn).await.is_empty());
}
