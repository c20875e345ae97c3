//! A hostile neighbour flooding what servers pass on to everyone: presence
//! reports are kept and passed on only for phones homed at the reporting
//! server, and broadcasts only when their author's key signed them.

use carrier::client::{Event, Session};
use carrier::crypto::Identity;
use carrier::domain::{Fingerprint, MessageId};
use carrier::protocol::link::LinkMessage;
use carrier::protocol::{Broadcast, KeyType};

use super::edge_attacks::handled;
use super::{
    beside_a_hostile_neighbour, eventually, link_as, next_link_message, now_ms, sees, send_link,
};
use crate::common::{ALICE, BOB, CAROL, DAVE, broadcast_by, register, within};

/// Made-up phones, none of them registered anywhere.
fn strangers(n: u32) -> Vec<String> {
    (0..n).map(|i| format!("+3161{i:07}")).collect()
}

/// Whether `phone` is listed online by the server of `session`.
async fn listed_online(session: &Session<'_>, phone: &str) -> bool {
    let users = session.list().await.expect("list");
    users.iter().any(|u| u.phone == phone && u.online)
}

#[tokio::test]
async fn presence_is_kept_and_passed_on_only_for_phones_homed_at_its_origin() {
    let (nodes, hostile) = beside_a_hostile_neighbour().await;
    let alice = register(&nodes[0], ALICE, KeyType::P256).await;
    let bob = register(&nodes[1], BOB, KeyType::P256).await;
    eventually("the victim learns bob", || sees(&alice.client, &bob.phone)).await;
    let bob_session = bob.client.login().await.expect("bob logs in");
    let watcher = alice.client.login().await.expect("alice logs in");
    eventually("bob is listed online at the victim", || {
        listed_online(&watcher, &bob.phone)
    })
    .await;

    let mut link = link_as(&hostile, &nodes[0]).await;
    // Servers nobody knows of, each claiming many users online.
    let made_up: Vec<Fingerprint> = (0..3u8).map(|i| Fingerprint::of_spki(&[i, 0xee])).collect();
    for origin in &made_up {
        let report = LinkMessage::Presence {
            origin: origin.to_hex(),
            seq: now_ms() as u64,
            online: strangers(20_000),
        };
        send_link(&mut link, &report).await;
    }
    // Bob's home, claiming strangers, Alice (homed at the victim) and Bob
    // many times over besides.
    let mut online = strangers(1_000);
    online.push(alice.phone.clone());
    online.extend(std::iter::repeat_n(bob.phone.clone(), 1_000));
    let report = LinkMessage::Presence {
        origin: nodes[1].fingerprint.to_hex(),
        seq: now_ms() as u64 + 60_000,
        online,
    };
    send_link(&mut link, &report).await;
    handled(&mut link).await;

    // What the victim holds, as it greets a new link: its own report, then
    // every report it keeps, before the answer to a ping.
    let mut link = link_as(&hostile, &nodes[0]).await;
    send_link(&mut link, &LinkMessage::Ping).await;
    let mut held = Vec::new();
    next_link_message(&mut link, "the victim's greeting", |m| match m {
        LinkMessage::Presence { origin, online, .. } => {
            held.push((origin, online));
            None
        }
        LinkMessage::Pong => Some(()),
        _ => None,
    })
    .await;
    for origin in &made_up {
        assert!(
            held.iter().all(|(o, _)| *o != origin.to_hex()),
            "a report from a server nobody knows of is held"
        );
    }
    let from_bobs_home: Vec<&Vec<String>> = held
        .iter()
        .filter(|(o, _)| *o == nodes[1].fingerprint.to_hex())
        .map(|(_, online)| online)
        .collect();
    assert_eq!(
        from_bobs_home,
        [&vec![bob.phone.clone()]],
        "only bob, once, is held for his home"
    );
    assert!(listed_online(&watcher, &bob.phone).await);
    watcher.close().await;
    bob_session.close().await;
}

/// The broadcasts `session` is pushed, as (id, text), up to and including
/// the first under id `last`.
async fn broadcasts_until(session: &mut Session<'_>, last: MessageId) -> Vec<(MessageId, String)> {
    let mut seen = Vec::new();
    while !seen.iter().any(|(id, _)| *id == last) {
        match within("a broadcast", session.conn.next_event()).await {
            Some(Event::Broadcast(b)) => seen.push((b.id, b.text)),
            Some(Event::Message(_)) => {}
            None => panic!("the connection closed"),
        }
    }
    seen
}

#[tokio::test]
async fn a_neighbour_cannot_pass_on_a_broadcast_its_author_did_not_sign() {
    let (nodes, hostile) = beside_a_hostile_neighbour().await;
    let alice = register(&nodes[0], ALICE, KeyType::P256).await;
    let bob = register(&nodes[1], BOB, KeyType::P256).await;
    let carol = register(&nodes[1], CAROL, KeyType::P256).await;
    eventually("the victim learns carol", || {
        sees(&alice.client, &carol.phone)
    })
    .await;
    let mut at_victim = alice.client.login().await.expect("alice logs in");
    let mut beyond = bob.client.login().await.expect("bob logs in");

    let mallory = Identity::generate(KeyType::P256);
    let forged = broadcast_by(&mallory, &carol.phone, "forged as carol");
    let unknown = broadcast_by(&mallory, DAVE, "from nobody registered");
    let genuine = broadcast_by(&carol.identity(), &carol.phone, "really carol");
    // The genuine broadcast's id and signature over other text: were it
    // taken, it would also have the genuine one dropped as seen before.
    let tampered = Broadcast {
        text: "altered".into(),
        ..genuine.clone()
    };
    let mut link = link_as(&hostile, &nodes[0]).await;
    // Frames of one link are handled, flooded and pushed in order: had the
    // others been passed on, they would arrive before the genuine one.
    for b in [&forged, &unknown, &tampered, &genuine] {
        send_link(&mut link, &LinkMessage::Broadcast(b.clone())).await;
    }
    for (who, session) in [
        ("at the victim", &mut at_victim),
        ("a hop beyond", &mut beyond),
    ] {
        let seen = broadcasts_until(session, genuine.id).await;
        assert_eq!(
            seen,
            [(genuine.id, genuine.text.clone())],
            "{who}: only the genuine broadcast"
        );
    }
    at_victim.close().await;
    beyond.close().await;
}
