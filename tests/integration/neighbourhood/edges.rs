//! Protocol v2's edges across links: a hostile neighbour draining a user's
//! one-time prekeys, a message from a device whose list is still on its
//! way (the flood held back by a hand-played server), and the sending
//! device told when the recipient's server refuses its copy.

use carrier::client::Notice;
use carrier::crypto::Identity;
use carrier::crypto::v2::{
    ClaimedPrekeys, DeviceCertificate, DeviceId, DeviceKey, DeviceList, LocalDevice, PrekeyBundle,
    PrekeyKind, PrekeyStore,
};
use carrier::domain::MessageId;
use carrier::protocol::link::{ClaimRequest, DeviceEntry, LinkMessage, Relayed};
use carrier::protocol::notice::Undeliverable;
use carrier::protocol::{B64, Delivered, ErrorCode, KeyType, Request, Response};

use super::devices::{count, fetch, fetch_some, homed_at, lookup_shows, with_devices};
use super::{
    beside_a_hostile_neighbour, eventually, link_as, neighbourhood, next_link_message, send_link,
};
use crate::common::{BOB, CAROL, DAVE, phone};
use crate::devices::client::*;

/// Dave announced over `link` by `home` as his home server would flood
/// him: his directory entry, then his list of one device; that device.
pub(super) async fn announce_dave(
    link: &mut carrier::tls::ClientTlsStream,
    home: &Identity,
) -> Device {
    let dave = Identity::generate(KeyType::P256);
    let directory = LinkMessage::Directory {
        entries: vec![homed_at(home, DAVE, &dave)],
    };
    send_link(link, &directory).await;
    let (list, mut daves) = devices_of(&dave, DAVE, 1, &[1]);
    send_link(
        link,
        &LinkMessage::Devices {
            entries: vec![list],
        },
    )
    .await;
    daves.remove(0)
}

/// `who`'s devices `ids` as the account key signs them (list `version`),
/// with a bundle each: the entry a home floods, and the devices.
pub(super) fn devices_of(
    account: &Identity,
    who: &str,
    version: u64,
    ids: &[u32],
) -> (DeviceEntry, Vec<Device>) {
    let now = now_ms();
    let mut listed = Vec::new();
    let mut bundles = Vec::new();
    let mut devices = Vec::new();
    for &id in ids {
        let device_id = DeviceId::new(id).unwrap();
        let key = DeviceKey::generate();
        let certificate =
            DeviceCertificate::issue(account, &phone(who), device_id, &key.public(), "d", now)
                .unwrap();
        let mut prekeys = PrekeyStore::new();
        let published = prekeys.maintain(&key, now);
        let of_kind = |kind| published.iter().find(|p| p.kind == kind).unwrap().clone();
        let bundle = PrekeyBundle {
            certificate,
            signed_prekey: of_kind(PrekeyKind::Signed),
            kem_prekey: of_kind(PrekeyKind::KemLastResort),
        };
        bundles.push(B64(bundle.to_bytes()));
        listed.push((device_id, key.public()));
        devices.push(Device {
            phone: who.into(),
            id,
            local: LocalDevice::new(phone(who), device_id, key),
            prekeys,
        });
    }
    let list = DeviceList::issue(account, &phone(who), version, now, listed).unwrap();
    let entry = DeviceEntry {
        phone: who.into(),
        device_list: B64(list.to_bytes()),
        bundles,
    };
    (entry, devices)
}

/// A relay of `envelope` from `from`'s device to `to`'s `device`, first
/// sent by the server whose fingerprint is `origin`.
pub(super) fn relay(
    from: &Device,
    to: &str,
    device: u32,
    id: MessageId,
    envelope: Vec<u8>,
    origin: String,
) -> Relayed {
    Relayed {
        id,
        from: from.phone.clone(),
        to: to.into(),
        device,
        sender_device: from.id,
        envelope: B64(envelope),
        received_at: now_ms() as i64,
        expires_at: now_ms() as i64 + 3_600_000,
        path: vec![origin],
    }
}

/// The undeliverable notices among delivered messages.
pub(super) fn notices(got: &[Delivered]) -> Vec<Undeliverable> {
    got.iter()
        .filter_map(|m| Undeliverable::parse(&m.envelope.0))
        .collect()
}

#[tokio::test]
async fn a_neighbour_claiming_past_its_limit_gets_last_resort_keys_only() {
    let (nodes, hostile) = beside_a_hostile_neighbour().await;
    let (carol, _, mut carols) = with_devices(&nodes[0], CAROL, 1).await;
    let (bob, _, bobs) = with_devices(&nodes[1], BOB, 1).await;
    let mut link = link_as(&hostile, &nodes[0]).await;
    let hostile_fp = hostile.fingerprint().to_hex();

    // The hostile neighbour asks for Carol's one-time keys as fast as it
    // can, as if for many users of its own.
    let burst = nodes[0].config.limits.claim_devices.burst;
    let asked = burst + 20;
    for request in 0..asked {
        let claim = ClaimRequest {
            request,
            phone: CAROL.into(),
            devices: vec![1],
            path: vec![hostile_fp.clone()],
        };
        send_link(&mut link, &LinkMessage::Claim(claim)).await;
    }
    let mut answers = Vec::new();
    while answers.len() < asked as usize {
        let claims = next_link_message(&mut link, "the claims' answers", |m| match m {
            LinkMessage::Claimed(a) => Some(a.claims.expect("answered with claims")),
            _ => None,
        })
        .await;
        answers.push(ClaimedPrekeys::parse(&claims[0].0).unwrap());
    }
    // Every claim is answered for device 1; only the first few (the burst
    // one server may take of one user) carry a one-time key, the rest
    // none, so the pool keeps the others.
    assert!(answers.iter().all(|c| c.device_id.get() == 1));
    let with_key = answers.iter().filter(|c| c.one_time.is_some()).count();
    assert_eq!(with_key, 5, "one-time keys only up to the limit");
    let empty = answers.last().unwrap().clone();
    assert!(empty.one_time.is_none() && empty.kem_one_time.is_none());

    // Another neighbour's users still get one-time keys.
    let (b1, b1_conn) = &bobs[0];
    let from_bob = claim(b1_conn, CAROL, &[1]).await;
    assert!(from_bob[0].one_time.is_some(), "the pool was not drained");

    // What the limit leaves is a usable set-up: a session started from a
    // claim without one-time keys (the last-resort keys of the bundle)
    // carries a message Carol opens.
    lookup_shows(b1_conn, CAROL, 1, 1).await;
    let carol_peer = look_up(b1_conn, CAROL, &carol.identity()).await;
    let mut session = start_session(b1, &carol_peer, 1, Some(&empty));
    let id = MessageId::random();
    let envelope = seal(b1, &mut session, id, "last resort");
    let answer = b1_conn
        .ask(send_request(id, CAROL, 1, 1, envelope))
        .await
        .unwrap();
    assert!(matches!(answer, Response::Accepted { .. }), "{answer:?}");
    lookup_shows(&carols[0].1, BOB, 1, 1).await;
    let bob_peer = look_up(&carols[0].1, BOB, &bob.identity()).await;
    let (c1, c1_conn) = &mut carols[0];
    let got = fetch_some(c1_conn).await;
    let opened = accept(c1, &bob_peer.device(1), &got[0].envelope.0);
    assert_eq!(text_of(&opened), "last resort");
}

#[tokio::test]
async fn a_message_from_a_device_whose_list_trails_it_waits_for_the_list() {
    // hostile (Dave's home, played here) - victim - Carol's home.
    let (nodes, hostile) = beside_a_hostile_neighbour().await;
    let (carol, _, mut carols) = with_devices(&nodes[1], CAROL, 1).await;
    let mut link = link_as(&hostile, &nodes[0]).await;
    let hostile_fp = hostile.fingerprint().to_hex();
    let dave = Identity::generate(KeyType::P256);
    let directory = LinkMessage::Directory {
        entries: vec![homed_at(&hostile, DAVE, &dave)],
    };
    send_link(&mut link, &directory).await;
    let (v1, mut daves) = devices_of(&dave, DAVE, 1, &[1]);
    send_link(&mut link, &LinkMessage::Devices { entries: vec![v1] }).await;
    let (mut c1, conn) = carols.remove(0);
    let c1_conn = &conn;
    lookup_shows(c1_conn, DAVE, 1, 1).await;
    let carol_peer = look_up(c1_conn, CAROL, &carol.identity()).await;

    // Dave adds device 2; its first message leaves before the list that
    // names it (the hand-played home holds the flood back), followed by
    // one from device 1.
    let (v2, new_daves) = devices_of(&dave, DAVE, 2, &[1, 2]);
    let mut new_daves = new_daves.into_iter();
    let (dave1_v2, dave2) = (new_daves.next().unwrap(), new_daves.next().unwrap());
    let first = MessageId::random();
    let mut session = start_session(&dave2, &carol_peer, 1, None);
    let envelope = seal(&dave2, &mut session, first, "from the new device");
    let r = relay(&dave2, CAROL, 1, first, envelope, hostile_fp.clone());
    send_link(&mut link, &LinkMessage::Relay(r)).await;
    let second = MessageId::random();
    let dave1 = daves.remove(0);
    let mut session = start_session(&dave1, &carol_peer, 1, None);
    let envelope = seal(&dave1, &mut session, second, "from the old device");
    let r = relay(&dave1, CAROL, 1, second, envelope, hostile_fp.clone());
    send_link(&mut link, &LinkMessage::Relay(r)).await;

    // Both cross the victim in order; Carol's server delivers the second
    // and keeps the first unacknowledged (the victim still holds it)
    // rather than hand Carol an envelope from a device it cannot vouch for.
    let got = fetch_some(c1_conn).await;
    assert_eq!(
        got.iter().map(|m| m.id).collect::<Vec<_>>(),
        [second],
        "only the message from the listed device is delivered"
    );
    // The second is acknowledged without waiting for the first, which
    // stays in the victim's queue.
    super::eventually("the second message is acknowledged", || async {
        count(&nodes[0], "SELECT count(*) FROM outbound_queue").await == 1
    })
    .await;

    // The list arrives: the message that waited is delivered, and Carol's
    // device opens it against the list her server now serves.
    send_link(&mut link, &LinkMessage::Devices { entries: vec![v2] }).await;
    let got = within_fetch(c1_conn, first).await;
    lookup_shows(c1_conn, DAVE, 2, 2).await;
    let dave_peer = look_up(c1_conn, DAVE, &dave).await;
    let opened = accept(&mut c1, &dave_peer.device(2), &got.envelope.0);
    assert_eq!(text_of(&opened), "from the new device");
    super::eventually("the victim's queue drains", || async {
        count(&nodes[0], "SELECT count(*) FROM outbound_queue").await == 0
    })
    .await;
    drop(dave1_v2);

    // A device the list leaves out below a listed one is a removed device:
    // refused at once, and the refusal comes back with who sent it.
    let (v3, _) = devices_of(&dave, DAVE, 3, &[3]);
    send_link(&mut link, &LinkMessage::Devices { entries: vec![v3] }).await;
    lookup_shows(c1_conn, DAVE, 3, 1).await;
    let gone = MessageId::random();
    let mut session = start_session(&dave2, &carol_peer, 1, None);
    let envelope = seal(&dave2, &mut session, gone, "from a removed device");
    let r = relay(&dave2, CAROL, 1, gone, envelope, hostile_fp.clone());
    send_link(&mut link, &LinkMessage::Relay(r)).await;
    let refused = next_link_message(&mut link, "the refusal", |m| match m {
        LinkMessage::RelayRefused {
            id,
            code,
            message,
            path,
            from,
            sender_device,
            ..
        } if id == gone => Some((code, message, path.len(), from, sender_device)),
        _ => None,
    })
    .await;
    assert_eq!(refused.0, ErrorCode::UnknownDevice);
    assert!(refused.1.contains("removed device"), "{}", refused.1);
    assert_eq!(
        (refused.2, refused.3.as_deref(), refused.4),
        (2, Some(DAVE), 2)
    );

    // A device above every listed one whose list never comes is refused
    // after the wait, with a reason saying so.
    let (_, mut later) = devices_of(&dave, DAVE, 4, &[7]);
    let dave7 = later.remove(0);
    let late = MessageId::random();
    let mut session = start_session(&dave7, &carol_peer, 1, None);
    let envelope = seal(&dave7, &mut session, late, "from a device never listed");
    let r = relay(&dave7, CAROL, 1, late, envelope, hostile_fp);
    send_link(&mut link, &LinkMessage::Relay(r)).await;
    let message = next_link_message(&mut link, "the refusal after the wait", |m| match m {
        LinkMessage::RelayRefused { id, message, .. } if id == late => Some(message),
        _ => None,
    })
    .await;
    assert!(
        message.contains("did not reach this server within 10 s"),
        "{message}"
    );
    let ids: Vec<MessageId> = fetch(c1_conn).await.iter().map(|m| m.id).collect();
    assert!(!ids.contains(&gone) && !ids.contains(&late), "{ids:?}");
}

/// Fetches until message `id` is there; returns it.
async fn within_fetch(conn: &carrier::client::Connection, id: MessageId) -> Delivered {
    crate::common::within("the message to arrive", async {
        loop {
            if let Some(m) = fetch(conn).await.into_iter().find(|m| m.id == id) {
                return m;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
    })
    .await
}

/// Alice (one device, on `nodes[0]`) sending to Carol (one device, on
/// `nodes[carol_at]`, whose server takes one message per queue), with a
/// session to Carol's device set up.
pub(super) struct ToAFullQueue {
    alices: Vec<(Device, carrier::client::Connection)>,
    _carols: Vec<(Device, carrier::client::Connection)>,
    session: carrier::crypto::v2::Session,
}

impl ToAFullQueue {
    pub(super) async fn set_up(nodes: &mut [super::Node], carol_at: usize) -> Self {
        nodes[carol_at].stop().await;
        nodes[carol_at].config.quota.max_messages = 1;
        nodes[carol_at].start().await;
        let (_, _, alices) = with_devices(&nodes[0], crate::common::ALICE, 1).await;
        let (carol, _, carols) = with_devices(&nodes[carol_at], CAROL, 1).await;
        let (a1, a1_conn) = &alices[0];
        lookup_shows(a1_conn, CAROL, 1, 1).await;
        let carol_peer = look_up(a1_conn, CAROL, &carol.identity()).await;
        let session = start_session(a1, &carol_peer, 1, None);
        Self {
            alices,
            _carols: carols,
            session,
        }
    }

    /// Alice's device connection.
    pub(super) fn alice(&self) -> &carrier::client::Connection {
        &self.alices[0].1
    }

    /// Sends Carol two messages, both accepted by Alice's server; Carol's
    /// refuses the second. Returns their ids.
    pub(super) async fn send_two(&mut self) -> [MessageId; 2] {
        let (a1, a1_conn) = &self.alices[0];
        let ids = [MessageId::random(), MessageId::random()];
        for (i, id) in ids.into_iter().enumerate() {
            let envelope = seal(a1, &mut self.session, id, &format!("message {i}"));
            let answer = a1_conn.ask(send_request(id, CAROL, 1, 1, envelope)).await;
            assert!(
                matches!(answer, Ok(Response::Accepted { .. })),
                "{answer:?}"
            );
        }
        ids
    }
}

/// A copy refused because the recipient's list moved on while it waited
/// for the link: the notice, which carries no list (the `stale_devices`
/// error it stands for does), says to look the recipient up again.
#[tokio::test]
async fn a_stale_devices_notice_says_to_look_the_recipient_up_again() {
    let mut nodes = neighbourhood(&["127.0.0.1"; 2], &[(0, 1)]).await;
    let (_, _, alices) = with_devices(&nodes[0], crate::common::ALICE, 1).await;
    let (carol, mut carol_account, _carols) = with_devices(&nodes[1], CAROL, 2).await;
    let (a1, a1_conn) = &alices[0];
    lookup_shows(a1_conn, CAROL, 1, 2).await;
    let carol_peer = look_up(a1_conn, CAROL, &carol.identity()).await;
    let mut session = start_session(a1, &carol_peer, 2, None);

    // Carol's server is down: the copy for her device 2 waits on Alice's.
    nodes[1].stop().await;
    let id = MessageId::random();
    let envelope = seal(a1, &mut session, id, "to the tablet");
    let answer = a1_conn.ask(send_request(id, CAROL, 2, 1, envelope)).await;
    assert!(
        matches!(answer, Ok(Response::Accepted { .. })),
        "{answer:?}"
    );
    // Then Alice's is, while Carol drops device 2 from her list.
    nodes[0].stop().await;
    nodes[1].start().await;
    carol_account.remove_device(2);
    let conn = crate::common::logged_in_connection(&nodes[1], CAROL, &carol_account.identity).await;
    let answer = conn.ask(carol_account.next_list()).await.unwrap();
    assert!(
        matches!(answer, Response::DevicesPublished { version: 2 }),
        "{answer:?}"
    );
    nodes[0].start().await;

    let a1_conn = a1.connect(&nodes[0]).await;
    let got = fetch_some(&a1_conn).await;
    let notice = notices(&got).pop().expect("an undeliverable notice");
    assert_eq!(
        (notice.id, notice.device, notice.code),
        (id, 2, ErrorCode::StaleDevices)
    );
    assert!(
        notice.reason.contains(&format!("look {CAROL} up again"))
            && !notice.reason.contains("in this error"),
        "the notice says: {}",
        notice.reason
    );
}

#[tokio::test]
async fn the_sending_device_learns_that_its_copy_was_refused() {
    // Carol's server takes one message per queue: both are accepted by
    // Alice's server; Carol's refuses the second.
    let mut nodes = neighbourhood(&["127.0.0.1"; 2], &[(0, 1)]).await;
    let mut pair = ToAFullQueue::set_up(&mut nodes, 1).await;
    let ids = pair.send_two().await;
    let a1_conn = pair.alice();

    // Alice's device finds a notice in its queue, from nobody but its
    // own server, and the command line says what happened.
    let got = fetch_some(a1_conn).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        (got[0].from.as_str(), got[0].device),
        (crate::common::ALICE, None)
    );
    let notice = notices(&got).pop().expect("an undeliverable notice");
    assert_eq!(
        (notice.id, notice.to.as_str(), notice.device, notice.code),
        (ids[1], CAROL, 1, ErrorCode::QuotaExceeded)
    );
    let line = carrier::client::show::notice(&Notice::Undeliverable(notice.clone()));
    assert_eq!(
        line,
        format!(
            "message {} to {CAROL} device 1 was refused: {}",
            ids[1], notice.reason
        )
    );
    assert!(!notice.reason.is_empty());
    // Acknowledged like a message, it is gone.
    let answer = a1_conn
        .ask(Request::Ack {
            ids: vec![got[0].id],
        })
        .await
        .unwrap();
    assert!(matches!(answer, Response::Acked { .. }), "{answer:?}");
    assert!(fetch(a1_conn).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_prints_a_refused_copy_at_the_next_fetch() {
    use crate::client_support::{carrier_out, outcome, register_typing};

    let mut nodes = neighbourhood(&["127.0.0.1"; 2], &[(0, 1)]).await;
    nodes[1].stop().await;
    nodes[1].config.quota.max_messages = 1;
    nodes[1].start().await;
    let homes = tempfile::tempdir().unwrap();
    let (carol, alice) = (homes.path().join("carol"), homes.path().join("alice"));
    for (node, home, who) in [
        (&nodes[1], &carol, CAROL),
        (&nodes[0], &alice, crate::common::ALICE),
    ] {
        let (status, _, stderr) = outcome(&register_typing(node, home, who, 0).await);
        assert_eq!(status, 0, "register {who}: {stderr}");
    }
    // The first send goes once Carol's list has reached Alice's server.
    super::eventually("Carol's devices reach Alice's server", || async {
        outcome(&carrier_out(&alice, &["send", CAROL, "one"]).await).0 == 0
    })
    .await;
    let (status, _, stderr) = outcome(&carrier_out(&alice, &["send", CAROL, "two"]).await);
    assert_eq!(status, 0, "{stderr}");
    let said = crate::common::within("the refusal to be told", async {
        loop {
            let (status, _, stderr) = outcome(&carrier_out(&alice, &["fetch"]).await);
            assert_eq!(status, 0, "{stderr}");
            if stderr.contains("was refused") {
                return stderr;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    let line = said.lines().find(|l| l.contains("was refused")).unwrap();
    assert!(
        line.starts_with("message ")
            && line.contains(&format!(" to {CAROL} device 1 was refused: ")),
        "{line}"
    );
    // Told once: the notice was acknowledged.
    let (_, _, stderr) = outcome(&carrier_out(&alice, &["fetch"]).await);
    assert!(!stderr.contains("was refused"), "{stderr}");
}

/// A device holds at most 32 undeliverable notices at once: with 32
/// waiting, a further refusal queues none (the refused copy still leaves
/// the outbound queue), so a sender's failures cannot crowd out its mail.
#[tokio::test]
async fn a_device_holds_at_most_32_notices() {
    const WAITING_NOTICES: &str = "SELECT count(*) FROM message_queue
        WHERE recipient = '+12025550101' AND device = 1 AND sender_device = 0";
    let mut nodes = neighbourhood(&["127.0.0.1"; 2], &[(0, 1)]).await;
    let mut pair = ToAFullQueue::set_up(&mut nodes, 1).await;

    // 32 notices already wait for Alice's device.
    let pool = nodes[0].db().await;
    for _ in 0..32 {
        let notice = Undeliverable {
            id: MessageId::random(),
            to: CAROL.into(),
            device: 1,
            code: ErrorCode::QuotaExceeded,
            reason: "full".into(),
        };
        sqlx::query(
            "INSERT INTO message_queue (id, recipient, device, sender, sender_device, envelope,
                 received_at, expires_at)
             VALUES ($1, '+12025550101', 1, '+12025550101', 0, $2, 1, 9000000000000000)",
        )
        .bind(MessageId::random().as_bytes().to_vec())
        .bind(notice.to_bytes())
        .execute(&pool)
        .await
        .unwrap();
    }
    pool.close().await;

    // Carol's server refuses the second message.
    pair.send_two().await;
    eventually("the refused copy leaves the outbound queue", || async {
        nodes[0].count("SELECT count(*) FROM outbound_queue").await == 0
    })
    .await;
    assert_eq!(nodes[0].count(WAITING_NOTICES).await, 32, "no 33rd notice");
}
