//! A hostile neighbour flooding what servers pass on to everyone: presence
//! reports are kept and passed on only for phones homed at the reporting
//! server.

use carrier::client::Session;
use carrier::domain::Fingerprint;
use carrier::protocol::KeyType;
use carrier::protocol::link::LinkMessage;

use super::edge_attacks::handled;
use super::{
    beside_a_hostile_neighbour, eventually, link_as, next_link_message, now_ms, sees, send_link,
};
use crate::common::{ALICE, BOB, register};

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
