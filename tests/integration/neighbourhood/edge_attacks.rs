//! A hostile neighbour against the v2 edges: forged refusals (never a
//! notice unless the copy was really relayed to the refusing neighbour),
//! the slots for messages whose sender's list trails them (a share per
//! neighbour, and a message past it is kept by its neighbour, not
//! refused), a waiting message holding back no other acknowledgement, and
//! claims from a server behind an honest one charged to that server.

use carrier::client::Connection;
use carrier::crypto::Identity;
use carrier::crypto::v2::{ClaimedPrekeys, Session};
use carrier::domain::MessageId;
use carrier::protocol::link::{ClaimRequest, LinkMessage, Relayed};
use carrier::protocol::{ErrorCode, KeyType, Response};

use super::devices::{count, fetch, homed_at, lookup_shows, with_devices};
use super::edges::{ToAFullQueue, announce_dave, devices_of, notices, relay};
use super::{
    Node, beside_a_hostile_neighbour, link_as, neighbourhood, next_link_message, send_link,
};
use crate::common::{ALICE, BOB, CAROL, DAVE, next_pushed_message};
use crate::devices::client::*;

const ERIN: &str = "+12025550105";

/// Waits until `node` has handled everything sent before on `link` (a
/// link's frames are handled in order; a ping is answered in its turn).
pub(super) async fn handled(link: &mut carrier::tls::ClientTlsStream) {
    send_link(link, &LinkMessage::Ping).await;
    next_link_message(link, "the pong", |m| match m {
        LinkMessage::Pong => Some(()),
        _ => None,
    })
    .await;
}

/// A refusal as a hostile neighbour writes it, naming Alice as sender.
fn forged(id: MessageId, path: Vec<String>, message: &str) -> LinkMessage {
    LinkMessage::RelayRefused {
        id,
        code: ErrorCode::UnknownDevice,
        message: message.into(),
        device: 1,
        path,
        to: Some(BOB.into()),
        from: Some(ALICE.into()),
        sender_device: 1,
    }
}

#[tokio::test]
async fn refusals_of_copies_never_relayed_to_the_neighbour_queue_no_notice() {
    let (mut nodes, hostile) = beside_a_hostile_neighbour().await;
    nodes[0].stop().await;
    nodes[0].config.quota.max_messages = 5;
    nodes[0].start().await;
    let (alice, _, alices) = with_devices(&nodes[0], ALICE, 1).await;
    let (_, _, carols) = with_devices(&nodes[0], CAROL, 1).await;
    let mut link = link_as(&hostile, &nodes[0]).await;
    let victim = nodes[0].fingerprint.to_hex();
    let id = MessageId::random();
    for _ in 0..5 {
        let refusal = forged(
            id,
            vec![victim.clone()],
            "\u{1b}[2JYour account is suspended",
        );
        send_link(&mut link, &refusal).await;
    }
    handled(&mut link).await;
    assert!(notices(&fetch(&alices[0].1).await).is_empty());

    // Alice's queue has room for real mail.
    let (c1, c1_conn) = &carols[0];
    let alice_peer = look_up(c1_conn, ALICE, &alice.identity()).await;
    let mut session = start_session(c1, &alice_peer, 1, None);
    let real = MessageId::random();
    let envelope = seal(c1, &mut session, real, "a real message");
    let answer = c1_conn
        .ask(send_request(real, ALICE, 1, 1, envelope))
        .await
        .unwrap();
    assert!(matches!(answer, Response::Accepted { .. }), "{answer:?}");
}

#[tokio::test]
async fn a_forged_refusal_is_not_passed_on_to_another_neighbours_user() {
    let (nodes, hostile) = beside_a_hostile_neighbour().await;
    let (alice, _, alices) = with_devices(&nodes[1], ALICE, 1).await;
    let (_, _, bobs) = with_devices(&nodes[0], BOB, 1).await;
    let mut link = link_as(&hostile, &nodes[0]).await;
    let path = vec![nodes[1].fingerprint.to_hex(), nodes[0].fingerprint.to_hex()];
    send_link(
        &mut link,
        &forged(MessageId::random(), path, "forged two hops away"),
    )
    .await;
    handled(&mut link).await;

    // A real message from Bob follows on the link from Bob's server to
    // Alice's: once it is in, a passed-on notice would be too.
    let (b1, b1_conn) = &bobs[0];
    lookup_shows(b1_conn, ALICE, 1, 1).await;
    let alice_peer = look_up(b1_conn, ALICE, &alice.identity()).await;
    let mut session = start_session(b1, &alice_peer, 1, None);
    let id = MessageId::random();
    let envelope = seal(b1, &mut session, id, "after the forgery");
    let answer = b1_conn
        .ask(send_request(id, ALICE, 1, 1, envelope))
        .await
        .unwrap();
    assert!(matches!(answer, Response::Accepted { .. }), "{answer:?}");
    let got = crate::common::within("Bob's message", async {
        loop {
            let got = fetch(&alices[0].1).await;
            if got.iter().any(|m| m.id == id) {
                return got;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
    })
    .await;
    assert!(notices(&got).is_empty(), "{:?}", notices(&got));
}

#[tokio::test]
async fn a_refusal_two_hops_away_reaches_the_sending_device_once() {
    // Alice — middle — Carol; Carol's server takes one message per queue.
    let mut nodes = neighbourhood(&["127.0.0.1"; 3], &[(0, 1), (1, 2)]).await;
    let mut pair = ToAFullQueue::set_up(&mut nodes, 2).await;
    let ids = pair.send_two().await;
    let a1_conn = pair.alice();
    let got = crate::common::within("the notice", async {
        loop {
            let got = fetch(a1_conn).await;
            if !got.is_empty() {
                return got;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
    })
    .await;
    let notice = notices(&got).pop().expect("an undeliverable notice");
    assert_eq!(
        (notice.id, notice.to.as_str(), notice.device, notice.code),
        (ids[1], CAROL, 1, ErrorCode::QuotaExceeded)
    );
    assert_eq!(got.len(), 1, "{got:?}");
}

#[tokio::test]
async fn one_neighbour_cannot_take_every_waiting_slot_nor_hold_back_acks() {
    let (mut nodes, hostile) = beside_a_hostile_neighbour().await;
    let honest = Identity::generate(KeyType::P256);
    nodes[0].stop().await;
    nodes[0]
        .config
        .neighbours
        .push(carrier::config::NeighbourConfig {
            address: "127.0.0.1:9".into(),
            fingerprint: Some(honest.fingerprint()),
        });
    nodes[0].start().await;
    let (carol, _, carols) = with_devices(&nodes[0], CAROL, 1).await;
    let (_c1, c1_conn) = &carols[0];
    let mut link = link_as(&hostile, &nodes[0]).await;
    let mut honest_link = link_as(&honest, &nodes[0]).await;
    let hostile_fp = hostile.fingerprint().to_hex();
    let honest_fp = honest.fingerprint().to_hex();
    let (dave, erin) = (
        Identity::generate(KeyType::P256),
        Identity::generate(KeyType::P256),
    );
    let dave_home = LinkMessage::Directory {
        entries: vec![homed_at(&hostile, DAVE, &dave)],
    };
    send_link(&mut link, &dave_home).await;
    let (v1, _) = devices_of(&dave, DAVE, 1, &[1]);
    send_link(&mut link, &LinkMessage::Devices { entries: vec![v1] }).await;
    let erin_home = LinkMessage::Directory {
        entries: vec![homed_at(&honest, ERIN, &erin)],
    };
    send_link(&mut honest_link, &erin_home).await;
    let (e1, _) = devices_of(&erin, ERIN, 1, &[1]);
    send_link(
        &mut honest_link,
        &LinkMessage::Devices { entries: vec![e1] },
    )
    .await;
    lookup_shows(c1_conn, DAVE, 1, 1).await;
    lookup_shows(c1_conn, ERIN, 1, 1).await;
    let carol_peer = look_up(c1_conn, CAROL, &carol.identity()).await;

    // The hostile neighbour: 256 copies from a device above Dave's list.
    let (_, mut later) = devices_of(&dave, DAVE, 2, &[7]);
    let dave7 = later.remove(0);
    let mut session = start_session(&dave7, &carol_peer, 1, None);
    for i in 0..256 {
        let id = MessageId::random();
        let envelope = seal(&dave7, &mut session, id, &format!("filler {i}"));
        let r = relay(&dave7, CAROL, 1, id, envelope, hostile_fp.clone());
        send_link(&mut link, &LinkMessage::Relay(r)).await;
    }
    handled(&mut link).await;

    // The honest neighbour: Erin's new device 2 writes, its list follows.
    let (e2, new_erins) = devices_of(&erin, ERIN, 2, &[1, 2]);
    let erin2 = new_erins.into_iter().nth(1).unwrap();
    let waited = MessageId::random();
    let mut s2 = start_session(&erin2, &carol_peer, 1, None);
    let envelope = seal(&erin2, &mut s2, waited, "hello from my new phone");
    let r = relay(&erin2, CAROL, 1, waited, envelope, honest_fp.clone());
    send_link(&mut honest_link, &LinkMessage::Relay(r)).await;
    send_link(
        &mut honest_link,
        &LinkMessage::Devices { entries: vec![e2] },
    )
    .await;
    let answer = next_link_message(&mut honest_link, "the waiting copy's answer", |m| match m {
        LinkMessage::RelayAck { ids, .. } if ids.contains(&waited) => Some("acked".to_string()),
        LinkMessage::RelayRefused { id, message, .. } if id == waited => Some(message),
        _ => None,
    })
    .await;
    assert_eq!(answer, "acked");

    // A copy from a device never listed waits; one from a listed device
    // sent after it is acknowledged before the wait ends.
    let (_, mut unlisted) = devices_of(&erin, ERIN, 3, &[9]);
    let erin9 = unlisted.remove(0);
    let mut s9 = start_session(&erin9, &carol_peer, 1, None);
    let slow = MessageId::random();
    let envelope = seal(&erin9, &mut s9, slow, "never listed");
    let r = relay(&erin9, CAROL, 1, slow, envelope, honest_fp.clone());
    send_link(&mut honest_link, &LinkMessage::Relay(r)).await;
    let fast = MessageId::random();
    let envelope = seal(&erin2, &mut s2, fast, "listed device");
    let r = relay(&erin2, CAROL, 1, fast, envelope, honest_fp.clone());
    send_link(&mut honest_link, &LinkMessage::Relay(r)).await;
    let first = next_link_message(&mut honest_link, "an answer", |m| match m {
        LinkMessage::RelayAck { ids, .. } if ids.contains(&fast) => Some("fast acked"),
        LinkMessage::RelayRefused { id, .. } if id == slow => Some("slow refused"),
        _ => None,
    })
    .await;
    assert_eq!(first, "fast acked");
}

/// A hostile neighbour that is Dave's home, linked to node 0, where Carol
/// has one device, with a session from Dave's device to hers.
struct DaveBesideCarol {
    nodes: Vec<Node>,
    hostile: Identity,
    link: carrier::tls::ClientTlsStream,
    dave: Device,
    session: Session,
    carols: Vec<(Device, Connection)>,
}

impl DaveBesideCarol {
    async fn start() -> Self {
        let (nodes, hostile) = beside_a_hostile_neighbour().await;
        let (carol, _, carols) = with_devices(&nodes[0], CAROL, 1).await;
        let c1_conn = &carols[0].1;
        let mut link = link_as(&hostile, &nodes[0]).await;
        let dave = announce_dave(&mut link, &hostile).await;
        lookup_shows(c1_conn, DAVE, 1, 1).await;
        let carol_peer = look_up(c1_conn, CAROL, &carol.identity()).await;
        let session = start_session(&dave, &carol_peer, 1, None);
        Self {
            nodes,
            hostile,
            link,
            dave,
            session,
            carols,
        }
    }

    /// A relay of a new message from Dave's device to Carol's, as the
    /// hostile neighbour writes it (valid for the next hour).
    fn relay(&mut self, text: &str) -> Relayed {
        let id = MessageId::random();
        let envelope = seal(&self.dave, &mut self.session, id, text);
        let origin = self.hostile.fingerprint().to_hex();
        relay(&self.dave, CAROL, 1, id, envelope, origin)
    }

    /// Sends `r` over the link and waits for its acknowledgement.
    async fn acknowledged(&mut self, r: Relayed) {
        let id = r.id;
        send_link(&mut self.link, &LinkMessage::Relay(r)).await;
        next_link_message(&mut self.link, "the acknowledgement", |m| match m {
            LinkMessage::RelayAck { ids, .. } if ids.contains(&id) => Some(()),
            _ => None,
        })
        .await;
    }
}

/// A neighbour's date of first acceptance is no later than this server's
/// clock: one in the future would show and sort wrongly for the recipient.
#[tokio::test]
async fn a_relayed_date_in_the_future_is_capped_at_the_servers_clock() {
    let mut edge = DaveBesideCarol::start().await;
    let mut r = edge.relay("from the future");
    let id = r.id;
    let century_ms = 100 * 365 * 86_400_000;
    r.received_at = now_ms() as i64 + century_ms;
    edge.acknowledged(r).await;
    let asked_at = now_ms() as i64;
    let got = fetch(&edge.carols[0].1).await;
    assert_eq!(got.iter().map(|m| m.id).collect::<Vec<_>>(), [id]);
    assert!(
        got[0].received_at <= asked_at,
        "received_at {} is after {asked_at}",
        got[0].received_at
    );
}

/// A relay already past its `expires_at` is acknowledged, so its neighbour
/// drops it, but neither stored nor pushed; the next one still arrives.
#[tokio::test]
async fn a_relay_that_has_expired_is_acknowledged_but_never_delivered() {
    let mut edge = DaveBesideCarol::start().await;
    let mut expired = edge.relay("too late");
    expired.received_at = now_ms() as i64 - 120_000;
    expired.expires_at = now_ms() as i64 - 60_000;
    edge.acknowledged(expired).await;
    let node = &edge.nodes[0];
    assert_eq!(count(node, "SELECT count(*) FROM message_queue").await, 0);
    assert_eq!(count(node, "SELECT count(*) FROM relay_seen").await, 0);
    assert!(fetch(&edge.carols[0].1).await.is_empty());

    let fresh = edge.relay("in time");
    let id = fresh.id;
    edge.acknowledged(fresh).await;
    let pushed = next_pushed_message(&mut edge.carols[0].1).await;
    assert_eq!(pushed.id, id, "the first message pushed is the fresh one");
    let got = fetch(&edge.carols[0].1).await;
    assert_eq!(got.iter().map(|m| m.id).collect::<Vec<_>>(), [id]);
}

#[tokio::test]
async fn a_server_behind_a_neighbour_spends_its_own_claim_share() {
    let (nodes, hostile) = beside_a_hostile_neighbour().await;
    let (_, _, _carols) = with_devices(&nodes[1], CAROL, 1).await;
    let (_, _, bobs) = with_devices(&nodes[0], BOB, 1).await;
    let b1_conn = &bobs[0].1;
    lookup_shows(b1_conn, CAROL, 1, 1).await;
    let mut link = link_as(&hostile, &nodes[0]).await;
    let hostile_fp = hostile.fingerprint().to_hex();
    let asked = 70u64;
    for request in 0..asked {
        let claim = ClaimRequest {
            request,
            phone: CAROL.into(),
            devices: vec![1],
            path: vec![hostile_fp.clone()],
        };
        send_link(&mut link, &LinkMessage::Claim(claim)).await;
    }
    let mut with_key = 0;
    for _ in 0..asked {
        let claims = next_link_message(&mut link, "the claims' answers", |m| match m {
            LinkMessage::Claimed(a) => Some(a.claims.expect("claims")),
            _ => None,
        })
        .await;
        if ClaimedPrekeys::parse(&claims[0].0)
            .unwrap()
            .one_time
            .is_some()
        {
            with_key += 1;
        }
    }
    assert_eq!(with_key, 5, "the server behind gets its own small share");
    let from_bob = claim(b1_conn, CAROL, &[1]).await;
    assert!(
        from_bob[0].one_time.is_some(),
        "Bob's server keeps its share"
    );
}

/// A link's `hello` says protocol version 2. A neighbour's hello saying 1
/// (what earlier builds of version 2 wrote) keeps the link; one naming a
/// version this server does not speak ends it.
#[tokio::test]
async fn a_hello_names_version_2_and_an_unknown_version_ends_the_link() {
    let (nodes, hostile) = beside_a_hostile_neighbour().await;
    let hello = |version| LinkMessage::Hello {
        name: "hostile".into(),
        version,
    };
    let mut link = link_as(&hostile, &nodes[0]).await;
    let version = next_link_message(&mut link, "the server's hello", |m| match m {
        LinkMessage::Hello { version, .. } => Some(version),
        _ => None,
    })
    .await;
    assert_eq!(version, 2);
    send_link(&mut link, &hello(1)).await;
    handled(&mut link).await;

    send_link(&mut link, &hello(9)).await;
    let ended = crate::common::within("the link ends", async {
        loop {
            match carrier::protocol::read_frame(&mut link, carrier::protocol::link::MAX_LINK_FRAME)
                .await
            {
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return,
            }
        }
    });
    ended.await;
}

/// A `hello` naming a version past 255 is a version this server does not
/// speak like any other: it ends the link rather than being skipped as a
/// frame not understood (which left the link up and answering pings).
#[tokio::test]
async fn a_hello_with_a_version_past_a_byte_ends_the_link() {
    use tokio::io::AsyncWriteExt;
    let (nodes, hostile) = beside_a_hostile_neighbour().await;
    let mut link = link_as(&hostile, &nodes[0]).await;
    let hello = br#"{"type":"hello","name":"hostile","version":258}"#;
    carrier::protocol::write_frame(&mut link, hello)
        .await
        .unwrap();
    link.flush().await.unwrap();
    // Frames are handled in order: a link still up answers this ping.
    let _ =
        carrier::protocol::write_frame(&mut link, &serde_json::to_vec(&LinkMessage::Ping).unwrap())
            .await;
    let _ = link.flush().await;
    crate::common::within("the link ends", async {
        loop {
            match carrier::protocol::read_frame(&mut link, carrier::protocol::link::MAX_LINK_FRAME)
                .await
            {
                Ok(Some(frame)) => {
                    let m: LinkMessage = serde_json::from_slice(&frame).unwrap();
                    assert!(
                        !matches!(m, LinkMessage::Pong),
                        "the link answered after the hello"
                    );
                }
                Ok(None) | Err(_) => return,
            }
        }
    })
    .await;
}
