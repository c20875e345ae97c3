//! A relay that names no recipient device (protocol version 1's) is
//! refused at once, whether the receiving server is the recipient's home or
//! a hop: stored, it would wait in a queue no version 2 session reads until
//! it expired, counting against the recipient's quota, while its sender's
//! server believed it delivered.

use carrier::protocol::link::{LinkMessage, Relayed};
use carrier::protocol::{B64, ErrorCode, KeyType};

use super::{beside_a_hostile_neighbour, eventually, link_as, next_link_message, now_ms, sees};
use crate::common::{ALICE, BOB, CAROL, phone, register};

#[tokio::test]
async fn a_relay_without_a_device_is_refused_at_the_home_and_at_a_hop() {
    // hostile - victim - other: Bob lives on the victim, Carol beyond it.
    let (nodes, hostile) = beside_a_hostile_neighbour().await;
    let bob = register(&nodes[0], BOB, KeyType::P256).await;
    let carol = register(&nodes[1], CAROL, KeyType::P256).await;
    eventually("the victim learns Carol", || sees(&bob.client, CAROL)).await;
    let mut link = link_as(&hostile, &nodes[0]).await;

    let sender = carrier::crypto::Identity::generate(KeyType::P256);
    for to in [&bob, &carol] {
        // A well-formed version 1 message, which this server used to take
        // into the account's own queue (device 0).
        let id = carrier::domain::MessageId::random();
        let envelope = seal_v1(&sender, &to.identity().public_key(), &to.phone, id);
        let relay = Relayed {
            id,
            from: ALICE.into(),
            to: to.phone.clone(),
            device: 0,
            sender_device: 0,
            envelope: B64(envelope),
            received_at: now_ms(),
            expires_at: now_ms() + 3_600_000,
            path: vec![hostile.fingerprint().to_hex()],
        };
        super::send_link(&mut link, &LinkMessage::Relay(relay)).await;
        let answer = next_link_message(&mut link, "the relay's answer", |m| match m {
            LinkMessage::RelayAck { ids, .. } if ids.contains(&id) => Some(Err(ids)),
            LinkMessage::RelayRefused {
                id: refused,
                code,
                message,
                device,
                path,
                to,
                ..
            } if refused == id => Some(Ok((code, message, device, path, to))),
            _ => None,
        })
        .await;
        let (code, message, device, path, named) = answer
            .unwrap_or_else(|ids| panic!("{}: the relay was acknowledged: {ids:?}", to.phone));
        assert_eq!(code, ErrorCode::BadEnvelope, "{}: {message}", to.phone);
        assert!(
            message.contains("without a recipient device"),
            "{}: the reason names the missing device: {message}",
            to.phone
        );
        assert_eq!(device, 0, "the refusal is about the device-less copy");
        assert!(path.is_empty(), "a direct refusal carries no path");
        assert_eq!(named.as_deref(), Some(to.phone.as_str()));
    }
    assert_eq!(
        nodes[0].count("SELECT count(*) FROM message_queue").await,
        0,
        "nothing waits in Bob's queues"
    );
    assert_eq!(
        nodes[0].count("SELECT count(*) FROM outbound_queue").await,
        0,
        "nothing waits for the next hop towards Carol"
    );
}

/// A version 1 envelope from Alice (sealed by `sender`) to `to`.
fn seal_v1(
    sender: &carrier::crypto::Identity,
    to_key: &carrier::crypto::PublicKey,
    to: &str,
    id: carrier::domain::MessageId,
) -> Vec<u8> {
    let (from, to) = (phone(ALICE), phone(to));
    let outgoing = carrier::crypto::Outgoing {
        id,
        counter: 1,
        sent_at_ms: now_ms() as u64,
        sender_phone: &from,
        recipient_phone: &to,
        text: "hi",
    };
    carrier::crypto::seal(sender, to_key, &outgoing).expect("sealing succeeds")
}
