//! Protocol v2 across the neighbourhood, driven at the protocol level with
//! keys made by `crypto::v2`: device lists and bundles published on one
//! server are served by `lookup` on the others, claims reach the home
//! server and hand each one-time prekey out once, and `device_send` lands
//! in the right device queue of a user two hops away.

use std::collections::HashSet;
use std::time::Duration;

use carrier::client::Connection;
use carrier::domain::MessageId;
use carrier::protocol::{B64, ErrorCode, KeyType, Request, Response};

use super::{Node, eventually, link_addr_of, linked_files, neighbourhood};
use crate::common::{
    ALICE, BOB, CAROL, DAVE, Reachable, TestUser, expect_error, logged_in_connection,
    register_account, within,
};
use crate::devices::client::*;

/// Registers `who` on `node` with `n` devices (list version 1), each logged
/// in on its own connection with its prekeys published.
pub(super) async fn with_devices(
    node: &impl Reachable,
    who: &str,
    n: u32,
) -> (TestUser, Account, Vec<(Device, Connection)>) {
    let user = register_account(node, who, KeyType::P256).await;
    let mut account = Account::new(&user);
    for i in 1..=n {
        account.add_device(&format!("device {i}"));
    }
    let conn = logged_in_connection(node, who, &account.identity).await;
    let answer = conn.ask(account.next_list()).await.unwrap();
    assert!(
        matches!(answer, Response::DevicesPublished { version: 1 }),
        "{who} publishes its list: {answer:?}"
    );
    conn.close().await;
    let mut devices = Vec::new();
    for id in 1..=n {
        let mut device = account.device(id);
        let conn = device.connect(node).await;
        let answer = device.publish_prekeys(&conn).await;
        assert!(
            matches!(answer, Response::PrekeysPublished { .. }),
            "{answer:?}"
        );
        devices.push((device, conn));
    }
    (user, account, devices)
}

/// Waits until `who`'s directory entry has reached the server behind
/// `conn`, then until its `lookup` there shows list `version` with
/// `bundles` bundles.
pub(super) async fn lookup_shows(conn: &Connection, who: &str, version: u64, bundles: usize) {
    eventually("the device list spreads", || async {
        match conn.ask(Request::Lookup { phone: who.into() }).await {
            Ok(Response::User(info)) => info.devices.is_some_and(|d| {
                let list = carrier::crypto::v2::DeviceList::parse(&d.device_list.0).unwrap();
                list.version == version && d.bundles.len() == bundles
            }),
            _ => false,
        }
    })
    .await;
}

/// The messages waiting on a device's connection.
pub(super) async fn fetch(conn: &Connection) -> Vec<carrier::protocol::Delivered> {
    let request = Request::Fetch {
        limit: None,
        after: None,
    };
    match conn.ask(request).await.unwrap() {
        Response::Messages { messages, .. } => messages,
        other => panic!("fetch: {other:?}"),
    }
}

/// Fetches on a device's connection until something has arrived.
pub(super) async fn fetch_some(conn: &Connection) -> Vec<carrier::protocol::Delivered> {
    within("messages to arrive", async {
        loop {
            let got = fetch(conn).await;
            if !got.is_empty() {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
    .await
}

pub(super) async fn count(node: &Node, sql: &'static str) -> i64 {
    node.count(sql).await
}

#[tokio::test]
async fn devices_claims_and_sends_cross_a_line_of_three() {
    let nodes = neighbourhood(&["127.0.0.1"; 3], &[(0, 1), (1, 2)]).await;
    let (alice, _, alices) = with_devices(&nodes[0], ALICE, 1).await;
    let (carol, _, mut carols) = with_devices(&nodes[2], CAROL, 2).await;
    let bob = register_account(&nodes[1], BOB, KeyType::P256).await;
    let (a1, a1_conn) = &alices[0];

    // Carol's list and both bundles reach server 1, two hops away, and
    // check out under her account key as a client checks them.
    lookup_shows(a1_conn, CAROL, 1, 2).await;
    let carol_peer = look_up(a1_conn, CAROL, &carol.identity()).await;
    assert_eq!(carol_peer.version(), 1);
    // And Alice's reach Carol's server.
    lookup_shows(&carols[0].1, ALICE, 1, 1).await;
    let alice_peer = look_up(&carols[0].1, ALICE, &alice.identity()).await;

    // A claim from server 1 is answered by server 3 through server 2.
    let claims = claim(a1_conn, CAROL, &[1, 2]).await;
    assert_eq!(claims.len(), 2);
    assert!(claims.iter().all(|c| c.one_time.is_some()));

    // One message to both of Carol's devices, under one id.
    let id = MessageId::random();
    for (device, claimed) in [1, 2].into_iter().zip(&claims) {
        let mut session = start_session(a1, &carol_peer, device, Some(claimed));
        let envelope = seal(a1, &mut session, id, "hello Carol");
        let answer = a1_conn
            .ask(send_request(id, CAROL, device, 1, envelope))
            .await
            .unwrap();
        assert!(
            matches!(answer, Response::Accepted { id: got } if got == id),
            "to Carol's device {device}: {answer:?}"
        );
    }
    for (device, conn) in carols.iter_mut() {
        let got = fetch_some(conn).await;
        assert_eq!(got.len(), 1, "device {} has exactly its copy", device.id);
        assert_eq!((got[0].id, got[0].from.as_str()), (id, ALICE));
        let opened = accept(device, &alice_peer.device(1), &got[0].envelope.0);
        assert_eq!(text_of(&opened), "hello Carol");
    }
    for node in &nodes {
        eventually("outbound queues drain", || async {
            count(node, "SELECT count(*) FROM outbound_queue").await == 0
        })
        .await;
    }

    // A list version the sending server does not know is refused there,
    // with the list it knows.
    let mut session = start_session(a1, &carol_peer, 1, None);
    let envelope = seal(a1, &mut session, MessageId::random(), "old list");
    let parsed = carrier::crypto::v2::Envelope::parse(&envelope).unwrap();
    let answer = a1_conn
        .ask(send_request(parsed.id(), CAROL, 1, 7, envelope))
        .await
        .unwrap();
    let Response::Error {
        code: ErrorCode::StaleDevices,
        devices: Some(current),
        ..
    } = answer
    else {
        panic!("expected stale_devices, got {answer:?}");
    };
    let current = check_devices(
        &current.device_list.0,
        &current.bundles,
        &carol.identity(),
        CAROL,
    );
    assert_eq!(current.version(), 1);

    // Claims from two servers at once: every one-time key goes out once.
    let claimers = [
        logged_in_connection(&nodes[0], ALICE, &alice.identity()).await,
        logged_in_connection(&nodes[0], ALICE, &alice.identity()).await,
        logged_in_connection(&nodes[1], BOB, &bob.identity()).await,
    ];
    let rounds = claimers.iter().map(|conn| async move {
        let mut got = Vec::new();
        for _ in 0..15 {
            got.extend(claim(conn, CAROL, &[1]).await);
        }
        got
    });
    let all: Vec<_> = futures::future::join_all(rounds)
        .await
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(all.len(), 45);
    let ec: Vec<u32> = all
        .iter()
        .filter_map(|c| c.one_time.as_ref().map(|p| p.id))
        .collect();
    let unique: HashSet<_> = ec.iter().collect();
    // Carol's home hands out at most 10 one-time keys of one device in 10
    // minutes to claims from other servers (5 to each server at once);
    // the rest are answered with none, and their senders fall back to
    // the bundle's last-resort keys.
    assert!(
        (5..=10).contains(&ec.len()),
        "one-time keys only within the device's budget: {}",
        ec.len()
    );
    assert_eq!(unique.len(), ec.len(), "no one-time key went out twice");
    assert!(
        !ec.contains(&claims[0].one_time.as_ref().unwrap().id),
        "nor the one claimed first"
    );
    let kem: HashSet<u32> = all
        .iter()
        .filter_map(|c| c.kem_one_time.as_ref().map(|p| p.id))
        .collect();
    assert_eq!(
        kem.len(),
        ec.len(),
        "each ML-KEM key once, with its P-256 one"
    );
}

#[tokio::test]
async fn the_home_server_refuses_a_copy_for_a_removed_device() {
    let mut nodes = neighbourhood(&["127.0.0.1"; 3], &[(0, 1), (1, 2)]).await;
    let (_, _, alices) = with_devices(&nodes[0], ALICE, 1).await;
    let (carol, mut carol_account, carols) = with_devices(&nodes[2], CAROL, 2).await;
    let (a1, a1_conn) = &alices[0];
    lookup_shows(a1_conn, CAROL, 1, 2).await;
    let carol_peer = look_up(a1_conn, CAROL, &carol.identity()).await;

    // With the middle server down, a claim has no way home.
    nodes[1].stop().await;
    let answer = a1_conn
        .ask(Request::Claim {
            phone: CAROL.into(),
            devices: vec![1],
        })
        .await
        .unwrap();
    // (The link's end may not have been noticed yet: then the claim goes
    // unanswered and times out, also `unavailable`.)
    let message = expect_error(answer, ErrorCode::Unavailable, "claim with the link down");
    assert!(
        message.contains("link") || message.contains("did not answer"),
        "{message}"
    );

    // Carol removes device 2 while server 1 cannot hear of it, and Alice
    // writes to both devices under the list server 1 knows.
    carol_account.remove_device(2);
    let conn = logged_in_connection(&nodes[2], CAROL, &carol_account.identity).await;
    let answer = conn.ask(carol_account.next_list()).await.unwrap();
    assert!(matches!(answer, Response::DevicesPublished { version: 2 }));
    let id = MessageId::random();
    for device in [1, 2] {
        let mut session = start_session(a1, &carol_peer, device, None);
        let envelope = seal(a1, &mut session, id, "while the middle is down");
        let answer = a1_conn
            .ask(send_request(id, CAROL, device, 1, envelope))
            .await
            .unwrap();
        assert!(matches!(answer, Response::Accepted { .. }), "{answer:?}");
    }
    assert_eq!(
        count(&nodes[0], "SELECT count(*) FROM outbound_queue").await,
        2,
        "both copies wait on server 1"
    );

    // Once the middle is back: device 1 gets its copy, the copy for the
    // removed device is refused by Carol's server and dropped on the way
    // back, and server 1 learns the new list.
    nodes[1].start().await;
    let c1 = &carols[0].1;
    let got = fetch_some(c1).await;
    assert_eq!(got[0].id, id);
    for node in &nodes[..2] {
        eventually("the refused copy leaves every queue", || async {
            count(node, "SELECT count(*) FROM outbound_queue").await == 0
        })
        .await;
    }
    assert_eq!(
        count(
            &nodes[2],
            "SELECT count(*) FROM message_queue WHERE device = 2"
        )
        .await,
        0
    );
    lookup_shows(a1_conn, CAROL, 2, 1).await;
    // The refusal crossed the middle server back to Alice's, which tells
    // the device that sent the copy.
    let got = fetch_some(a1_conn).await;
    let notice = carrier::protocol::notice::Undeliverable::parse(&got[0].envelope.0)
        .expect("an undeliverable notice");
    assert_eq!(
        (notice.id, notice.to.as_str(), notice.device, notice.code),
        (id, CAROL, 2, ErrorCode::StaleDevices)
    );
}

#[tokio::test]
async fn kill_9_of_the_middle_server_loses_no_device_copy() {
    // Real binaries in a line a - b - c. b starts alone to learn its link
    // port, a and c link to it, then b starts again linked to both (and
    // keeps its ports for the restart after the kill).
    let mut files_b = linked_files(&[]);
    let mut b_alone = files_b.start();
    let b_link = link_addr_of(&b_alone);
    let files_a = linked_files(&[(b_link, None)]);
    let a = files_a.start();
    let files_c = linked_files(&[(b_link, None)]);
    let c = files_c.start();
    files_b.set_links(
        b_link.port(),
        &[(link_addr_of(&a), None), (link_addr_of(&c), None)],
    );
    assert!(b_alone.terminate().success(), "b stops to be reconfigured");
    let mut b = files_b.start();

    let (_, _, alices) = with_devices(&a, ALICE, 1).await;
    let (carol, _, carols) = with_devices(&c, CAROL, 2).await;
    let (a1, a1_conn) = &alices[0];
    lookup_shows(a1_conn, CAROL, 1, 2).await;
    let carol_peer = look_up(a1_conn, CAROL, &carol.identity()).await;
    let mut sessions: Vec<_> = [1, 2]
        .map(|device| start_session(a1, &carol_peer, device, None))
        .into();

    // Messages to both devices; halfway, b dies without a chance to flush.
    let n = 30;
    let mut sent = Vec::new();
    for i in 0..n {
        if i == n / 2 {
            b.kill_9();
        }
        let id = MessageId::random();
        for (device, session) in [1, 2].into_iter().zip(&mut sessions) {
            let envelope = seal(a1, session, id, &format!("message {i}"));
            let answer = a1_conn
                .ask(send_request(id, CAROL, device, 1, envelope))
                .await
                .unwrap();
            assert!(matches!(answer, Response::Accepted { .. }), "{answer:?}");
        }
        sent.push(id);
    }
    let _b = files_b.start();

    // Every copy arrives, once, in its own device's queue.
    sent.sort();
    for (device, conn) in &carols {
        let got = within("every copy to arrive", async {
            loop {
                let got = fetch(conn).await;
                if got.len() >= n {
                    return got;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        let mut ids: Vec<MessageId> = got.iter().map(|m| m.id).collect();
        ids.sort();
        assert_eq!(ids, sent, "device {} has each message once", device.id);
    }
}

/// A device list and bundle of `phone`'s one device, as `account` signs
/// them: what a home server floods in a `devices` entry.
fn signed_devices(
    account: &carrier::crypto::Identity,
    phone: &str,
) -> carrier::protocol::link::DeviceEntry {
    use carrier::crypto::v2::{
        DeviceCertificate, DeviceId, DeviceKey, DeviceList, PrekeyBundle, PrekeyKind, PrekeyStore,
    };
    let who = crate::common::phone(phone);
    let id = DeviceId::new(1).unwrap();
    let key = DeviceKey::generate();
    let now = now_ms();
    let list = DeviceList::issue(account, &who, 1, now, vec![(id, key.public())]).unwrap();
    let certificate =
        DeviceCertificate::issue(account, &who, id, &key.public(), "phone", now).unwrap();
    let published = PrekeyStore::new().maintain(&key, now);
    let of_kind = |kind| published.iter().find(|p| p.kind == kind).unwrap().clone();
    let bundle = PrekeyBundle {
        certificate,
        signed_prekey: of_kind(PrekeyKind::Signed),
        kem_prekey: of_kind(PrekeyKind::KemLastResort),
    };
    carrier::protocol::link::DeviceEntry {
        phone: phone.into(),
        device_list: B64(list.to_bytes()),
        bundles: vec![B64(bundle.to_bytes())],
    }
}

const ERIN: &str = "+12025550105";

/// `phone`'s directory entry with key `account`, signed by `home` as the
/// user's home server.
pub(crate) fn homed_at(
    home: &carrier::crypto::Identity,
    phone: &str,
    account: &carrier::crypto::Identity,
) -> carrier::protocol::link::DirectoryEntry {
    let key = account.public_key().to_spki_der();
    let home_key = home.public_key().to_spki_der();
    let registered_at = now_ms() as i64;
    let bytes = carrier::protocol::signed::directory_entry_bytes(
        phone,
        "p256",
        &key,
        registered_at,
        &home_key,
        "far",
    );
    carrier::protocol::link::DirectoryEntry {
        phone: phone.into(),
        key_type: KeyType::P256,
        public_key: B64(key),
        home_key: B64(home_key),
        home_name: "far".into(),
        registered_at,
        signature: B64(home.sign(&bytes)),
        hops: 0,
    }
}

#[tokio::test]
async fn lists_are_checked_at_each_hop_and_a_silent_home_times_out() {
    use carrier::crypto::Identity;
    use carrier::protocol::link::{ClaimAnswer, LinkMessage};

    let (nodes, hostile) = super::beside_a_hostile_neighbour().await;
    let (_, _, alices) = with_devices(&nodes[0], ALICE, 1).await;
    let a1_conn = &alices[0].1;
    let mut link = super::link_as(&hostile, &nodes[0]).await;

    // Dave and Erin live on the hand-played server.
    let dave = Identity::generate(KeyType::P256);
    let erin = Identity::generate(KeyType::P256);
    let directory = LinkMessage::Directory {
        entries: vec![
            homed_at(&hostile, DAVE, &dave),
            homed_at(&hostile, ERIN, &erin),
        ],
    };
    super::send_link(&mut link, &directory).await;
    let devices = |entry| LinkMessage::Devices {
        entries: vec![entry],
    };
    super::send_link(&mut link, &devices(signed_devices(&dave, DAVE))).await;
    lookup_shows(a1_conn, DAVE, 1, 1).await;

    // A list for Dave signed by another key is not taken (Erin's list,
    // sent after it, shows that it was read).
    let forged = signed_devices(&Identity::generate(KeyType::P256), DAVE);
    super::send_link(&mut link, &devices(forged)).await;
    super::send_link(&mut link, &devices(signed_devices(&erin, ERIN))).await;
    lookup_shows(a1_conn, ERIN, 1, 1).await;
    let peer = look_up(a1_conn, DAVE, &dave).await;
    assert_eq!(peer.bundles.len(), 1, "Dave's own list and bundle stay");

    // A claim for Dave goes to his home with the asking server's path; the
    // answer comes back to the client as it was sent.
    let asking = a1_conn.ask(Request::Claim {
        phone: DAVE.into(),
        devices: vec![1],
    });
    let asker = nodes[0].fingerprint.to_hex();
    let home = async {
        let claim = super::next_link_message(&mut link, "a claim", |m| match m {
            LinkMessage::Claim(c) => Some(c),
            _ => None,
        })
        .await;
        assert_eq!((claim.phone.as_str(), &claim.devices[..]), (DAVE, &[1][..]));
        assert_eq!(claim.path, std::slice::from_ref(&asker));
        let result = carrier::crypto::v2::ClaimedPrekeys {
            device_id: carrier::crypto::v2::DeviceId::new(1).unwrap(),
            one_time: None,
            kem_one_time: None,
        };
        let answer = ClaimAnswer {
            request: claim.request,
            path: vec![asker.clone(), hostile.fingerprint().to_hex()],
            claims: Some(vec![B64(result.to_bytes())]),
            code: None,
            message: None,
        };
        super::send_link(&mut link, &LinkMessage::Claimed(answer)).await;
        result
    };
    let (answer, result) = tokio::join!(asking, home);
    match answer.unwrap() {
        Response::Claimed { claims } => assert_eq!(claims, [B64(result.to_bytes())]),
        other => panic!("the relayed claim: {other:?}"),
    }

    // Unanswered, a claim ends with a clear `unavailable` after its time.
    let answer = a1_conn
        .ask(Request::Claim {
            phone: DAVE.into(),
            devices: vec![1],
        })
        .await
        .unwrap();
    let message = expect_error(answer, ErrorCode::Unavailable, "an unanswered claim");
    assert!(
        message.contains("did not answer the claim within 10 s"),
        "{message}"
    );
}

#[tokio::test]
async fn acks_name_the_device_and_a_refusal_finds_its_way_back() {
    use carrier::crypto::Identity;
    use carrier::crypto::v2::{DeviceId, DeviceKey, LocalDevice, PrekeyStore};
    use carrier::protocol::link::{LinkMessage, Relayed};

    // hostile - victim - home; Dave lives on the hand-played server,
    // Carol on the home with two devices, then only one.
    let (nodes, hostile) = super::beside_a_hostile_neighbour().await;
    let (_, _, alices) = with_devices(&nodes[0], ALICE, 1).await;
    let (carol, mut carol_account, _carols) = with_devices(&nodes[1], CAROL, 2).await;
    let mut link = super::link_as(&hostile, &nodes[0]).await;
    let dave = Identity::generate(KeyType::P256);
    let directory = LinkMessage::Directory {
        entries: vec![homed_at(&hostile, DAVE, &dave)],
    };
    super::send_link(&mut link, &directory).await;
    let a1_conn = &alices[0].1;
    lookup_shows(a1_conn, CAROL, 1, 2).await;
    let carol_peer = look_up(a1_conn, CAROL, &carol.identity()).await;
    carol_account.remove_device(2);
    let conn = logged_in_connection(&nodes[1], CAROL, &carol_account.identity).await;
    let answer = conn.ask(carol_account.next_list()).await.unwrap();
    assert!(matches!(answer, Response::DevicesPublished { version: 2 }));

    // Dave's device writes to Carol's removed device, through the victim.
    let dave_device = Device {
        phone: DAVE.into(),
        id: 1,
        local: LocalDevice::new(
            crate::common::phone(DAVE),
            DeviceId::new(1).unwrap(),
            DeviceKey::generate(),
        ),
        prekeys: PrekeyStore::new(),
    };
    let mut session = start_session(&dave_device, &carol_peer, 2, None);
    let id = MessageId::random();
    let envelope = seal(&dave_device, &mut session, id, "to a gone device");
    let hostile_fp = hostile.fingerprint().to_hex();
    let relay = Relayed {
        id,
        from: DAVE.into(),
        to: CAROL.into(),
        device: 2,
        sender_device: 1,
        envelope: B64(envelope),
        received_at: now_ms() as i64,
        expires_at: now_ms() as i64 + 3_600_000,
        path: vec![hostile_fp.clone()],
    };
    super::send_link(&mut link, &LinkMessage::Relay(relay)).await;

    // The victim commits it and acknowledges that device's copy.
    let acked = super::next_link_message(&mut link, "the relay's ack", |m| match m {
        LinkMessage::RelayAck { ids, device, .. } => Some((ids, device)),
        _ => None,
    })
    .await;
    assert_eq!(acked, (vec![id], 2));
    // The home refuses it; the refusal comes back with the message's path.
    let refused = super::next_link_message(&mut link, "the refusal", |m| match m {
        LinkMessage::RelayRefused {
            id,
            code,
            device,
            path,
            ..
        } => Some((id, code, device, path)),
        _ => None,
    })
    .await;
    let victim_fp = nodes[0].fingerprint.to_hex();
    assert_eq!(
        refused,
        (id, ErrorCode::StaleDevices, 2, vec![hostile_fp, victim_fp])
    );
    eventually("the victim's queue towards the home drains", || async {
        count(&nodes[0], "SELECT count(*) FROM outbound_queue").await == 0
    })
    .await;
}

/// Message ids are unique per recipient only (PROTOCOL §1), so one id may
/// wait in a neighbour's queue for two recipients. The neighbour's
/// `relay_ack` for one of them must not delete the other's copy, which it
/// has not taken: that copy would be lost with nobody told.
#[tokio::test]
async fn an_ack_for_one_recipient_keeps_another_recipients_copy_of_the_same_id() {
    use carrier::crypto::Identity;
    use carrier::protocol::link::LinkMessage;

    let (nodes, hostile) = super::beside_a_hostile_neighbour().await;
    let (_, _, alices) = with_devices(&nodes[0], ALICE, 1).await;
    let (alice_device, conn) = &alices[0];
    let mut link = super::link_as(&hostile, &nodes[0]).await;
    let dave = Identity::generate(KeyType::P256);
    let erin = Identity::generate(KeyType::P256);
    let directory = LinkMessage::Directory {
        entries: vec![
            homed_at(&hostile, DAVE, &dave),
            homed_at(&hostile, ERIN, &erin),
        ],
    };
    super::send_link(&mut link, &directory).await;
    let entries = vec![signed_devices(&dave, DAVE), signed_devices(&erin, ERIN)];
    super::send_link(&mut link, &LinkMessage::Devices { entries }).await;
    lookup_shows(conn, DAVE, 1, 1).await;
    lookup_shows(conn, ERIN, 1, 1).await;

    // Alice writes to Dave and to Erin under one id, as PROTOCOL allows.
    let id = MessageId::random();
    for (to, key) in [(DAVE, &dave), (ERIN, &erin)] {
        let peer = look_up(conn, to, key).await;
        let mut session = start_session(alice_device, &peer, 1, None);
        let envelope = seal(alice_device, &mut session, id, "hi");
        let answer = conn
            .ask(send_request(id, to, 1, 1, envelope))
            .await
            .unwrap();
        assert!(
            matches!(answer, Response::Accepted { .. }),
            "{to}: {answer:?}"
        );
    }
    let mut relayed = HashSet::new();
    while relayed.len() < 2 {
        let to = super::next_link_message(&mut link, "both relays", |m| match m {
            LinkMessage::Relay(r) if r.id == id => Some(r.to),
            _ => None,
        })
        .await;
        relayed.insert(to);
    }

    // The neighbour takes Dave's copy only (Erin's commit failed, say).
    let ack = LinkMessage::RelayAck {
        ids: vec![id],
        device: 1,
        to: Some(DAVE.into()),
    };
    super::send_link(&mut link, &ack).await;
    // Acknowledged copies are deleted by a task of their own, after the
    // link has read the ack: wait for Dave's to go.
    eventually("Dave's copy is gone", || async {
        count(&nodes[0], "SELECT count(*) FROM outbound_queue").await == 1
    })
    .await;
    assert_eq!(
        count(
            &nodes[0],
            "SELECT count(*) FROM outbound_queue WHERE recipient = '+12025550105'"
        )
        .await,
        1,
        "Erin's copy still waits for the neighbour"
    );
}
