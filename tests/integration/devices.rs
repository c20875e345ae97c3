//! Protocol v2 on a real server, driven as clients would drive it: accounts
//! publish signed device lists, devices log in and publish prekeys, senders
//! look up, claim, seal per device with `crypto::v2` and send; each device
//! has its own queue. Runs on PostgreSQL too when the suite does.

pub mod client;
mod ids;
pub(crate) mod linking;

use std::collections::HashSet;

use carrier::client::{Connection, Event};
use carrier::crypto::v2::Envelope;
use carrier::domain::MessageId;
use carrier::protocol::{B64, ErrorCode, KeyType, Request, Response};
use carrier::rate::Rate;

use crate::common::*;
use crate::process::ServerFiles;
use crate::wire::Wire;
use client::*;

/// An account with devices 1 ..= `n` in its published list (version 1);
/// none of them has logged in or published prekeys yet.
pub async fn with_list(server: &impl Reachable, who: &str, n: u32) -> (TestUser, Account) {
    let user = register_account(server, who, KeyType::P256).await;
    let mut account = Account::new(&user);
    for i in 1..=n {
        account.add_device(&format!("device {i}"));
    }
    let conn = logged_in_connection(server, who, &account.identity).await;
    let answer = conn.ask(account.next_list()).await.unwrap();
    assert!(
        matches!(answer, Response::DevicesPublished { version: 1 }),
        "{who} publishes its list: {answer:?}"
    );
    conn.close().await;
    (user, account)
}

/// An account with `n` devices published (list version 1), each device
/// logged in on its own connection with its prekeys published.
pub async fn with_devices(
    server: &impl Reachable,
    who: &str,
    n: u32,
) -> (TestUser, Account, Vec<(Device, Connection)>) {
    let (user, account) = with_list(server, who, n).await;
    let mut devices = Vec::new();
    for id in 1..=n {
        let mut device = account.device(id);
        let conn = device.connect(server).await;
        let answer = device.publish_prekeys(&conn).await;
        assert!(
            matches!(
                answer,
                Response::PrekeysPublished {
                    one_time: 100,
                    kem_one_time: 40
                }
            ),
            "device {id} of {who} publishes its prekeys: {answer:?}"
        );
        devices.push((device, conn));
    }
    (user, account, devices)
}

/// The messages waiting on a device's connection.
async fn fetch(conn: &Connection) -> Vec<carrier::protocol::Delivered> {
    match conn
        .ask(Request::Fetch {
            limit: None,
            after: None,
        })
        .await
        .unwrap()
    {
        Response::Messages { messages, .. } => messages,
        other => panic!("fetch: {other:?}"),
    }
}

/// Rows stored for one device's queue.
async fn stored_for(server: &TestServer, who: &str, device: u32) -> i64 {
    let pool = server.db().await;
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM message_queue WHERE recipient = $1 AND device = $2",
    )
    .bind(who)
    .bind(i64::from(device))
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    n
}

#[tokio::test]
async fn each_device_gets_its_own_copy_and_acks_it_alone() {
    let server = spawn_server().await;
    let (alice, _, mut alices) = with_devices(&server, ALICE, 2).await;
    let (bob, _, mut bobs) = with_devices(&server, BOB, 2).await;
    let (first, second) = alices.split_at_mut(1);
    let (a1, a1_conn) = &first[0];
    let (a2, a2_conn) = &mut second[0];
    let bob_peer = look_up(a1_conn, BOB, &bob.identity()).await;
    let alice_peer = look_up(a1_conn, ALICE, &alice.identity()).await;
    assert_eq!(bob_peer.bundles.len(), 2, "a bundle per device of Bob");

    // One message to Bob: one envelope per device of Bob and one for
    // Alice's other device, all under one id.
    let id = MessageId::random();
    let claims = claim(a1_conn, BOB, &[1, 2]).await;
    for (device, claimed) in [1, 2].into_iter().zip(&claims) {
        assert!(claimed.one_time.is_some() && claimed.kem_one_time.is_some());
        let mut session = start_session(a1, &bob_peer, device, Some(claimed));
        let envelope = seal(a1, &mut session, id, "hello Bob");
        let answer = a1_conn
            .ask(send_request(id, BOB, device, 1, envelope))
            .await
            .unwrap();
        assert!(
            matches!(answer, Response::Accepted { id: got } if got == id),
            "to Bob's device {device}: {answer:?}"
        );
    }
    let mut copy = start_session(a1, &alice_peer, 2, None);
    let envelope = seal(a1, &mut copy, id, "sent to Bob");
    let answer = a1_conn
        .ask(send_request(id, ALICE, 2, 1, envelope))
        .await
        .unwrap();
    assert!(matches!(answer, Response::Accepted { .. }), "{answer:?}");

    // Bob's devices are connected: each is pushed its own envelope, which
    // opens with its own keys.
    let alice_from_bob = look_up(&bobs[0].1, ALICE, &alice.identity()).await;
    for (device, conn) in bobs.iter_mut() {
        let pushed = next_pushed_message(conn).await;
        assert_eq!((pushed.id, pushed.from.as_str()), (id, ALICE));
        assert_eq!(pushed.device, Some(1), "the sending device is named");
        let parsed = Envelope::parse(&pushed.envelope.0).unwrap();
        assert_eq!(parsed.recipient().1.get(), device.id);
        let opened = accept(device, &alice_from_bob.device(1), &pushed.envelope.0);
        assert_eq!(text_of(&opened), "hello Bob");
    }
    let synced = fetch(a2_conn).await;
    assert_eq!(synced.len(), 1, "Alice's other device has the copy");
    let opened = accept(a2, &alice_peer.device(1), &synced[0].envelope.0);
    assert_eq!(text_of(&opened), "sent to Bob");

    // Each device acknowledges its own copy; the other's stays.
    for (_, conn) in &bobs {
        assert_eq!(fetch(conn).await.len(), 1);
    }
    let acked = bobs[0].1.ask(Request::Ack { ids: vec![id] }).await.unwrap();
    assert!(matches!(acked, Response::Acked { deleted: 1 }), "{acked:?}");
    assert!(fetch(&bobs[0].1).await.is_empty());
    assert_eq!(
        fetch(&bobs[1].1).await.len(),
        1,
        "device 2's copy is still there"
    );
    assert_eq!(stored_for(&server, BOB, 2).await, 1);
    assert_eq!(stored_for(&server, BOB, 1).await, 0);

    // `devices` shows the account's list, certificates and last logins.
    let answer = bobs[1].1.ask(Request::Devices).await.unwrap();
    let Response::Devices {
        device_list,
        certificates,
        last_seen,
    } = answer
    else {
        panic!("devices: {answer:?}")
    };
    let shown = check_devices(&device_list.0, &[], &bob.identity(), BOB);
    assert_eq!(shown.version(), 1);
    assert_eq!(certificates.len(), 2);
    for cert in &certificates {
        let cert = carrier::crypto::v2::DeviceCertificate::parse(&cert.0).unwrap();
        shown
            .list
            .certify(&cert)
            .expect("each certificate is the list's");
    }
    let seen: Vec<u32> = last_seen
        .iter()
        .filter(|s| s.at > 0)
        .map(|s| s.device)
        .collect();
    assert_eq!(seen, [1, 2], "both devices have logged in");

    // The same envelope again is a retry; other bytes under the id are not.
    let mut again = start_session(a1, &bob_peer, 2, None);
    let other = seal(a1, &mut again, id, "something else");
    let answer = a1_conn
        .ask(send_request(id, BOB, 2, 1, other))
        .await
        .unwrap();
    expect_error(
        answer,
        ErrorCode::DuplicateId,
        "other bytes under a used id",
    );
}

#[tokio::test]
async fn a_send_under_an_old_list_gets_the_current_one() {
    let server = spawn_server().await;
    let (_, _, alices) = with_devices(&server, ALICE, 1).await;
    let (bob, mut bob_account, _bobs) = with_devices(&server, BOB, 1).await;
    let (a1, a1_conn) = &alices[0];
    let peer = look_up(a1_conn, BOB, &bob.identity()).await;

    // Bob adds a device: list version 2.
    let new = bob_account.add_device("tablet");
    let conn = logged_in_connection(&server, BOB, &bob_account.identity).await;
    let answer = conn.ask(bob_account.next_list()).await.unwrap();
    assert!(
        matches!(answer, Response::DevicesPublished { version: 2 }),
        "{answer:?}"
    );
    let mut tablet = bob_account.device(new);
    let tablet_conn = tablet.connect(&server).await;
    tablet.publish_prekeys(&tablet_conn).await;

    let id = MessageId::random();
    let mut session = start_session(a1, &peer, 1, None);
    let envelope = seal(a1, &mut session, id, "hi");
    let answer = a1_conn
        .ask(send_request(id, BOB, 1, peer.version(), envelope))
        .await
        .unwrap();
    let Response::Error {
        code: ErrorCode::StaleDevices,
        devices: Some(current),
        ..
    } = answer
    else {
        panic!("expected stale_devices with the current list, got {answer:?}");
    };
    let current = check_devices(
        &current.device_list.0,
        &current.bundles,
        &bob.identity(),
        BOB,
    );
    assert_eq!(current.version(), 2);
    assert_eq!(current.bundles.len(), 2, "the new device's bundle is there");
    assert_eq!(stored_for(&server, BOB, 1).await, 0, "nothing was queued");

    // Sealed again under the current list, it goes through to both.
    for device in [1, new] {
        let mut session = start_session(a1, &current, device, None);
        let envelope = seal(a1, &mut session, id, "hi");
        let answer = a1_conn
            .ask(send_request(id, BOB, device, 2, envelope))
            .await
            .unwrap();
        assert!(matches!(answer, Response::Accepted { .. }), "{answer:?}");
    }
    // A device not in the list is stale too.
    let mut session = start_session(a1, &current, 1, None);
    let envelope = seal(a1, &mut session, id, "hi");
    let wrong = Envelope::parse(&envelope).unwrap();
    assert_eq!(wrong.recipient().1.get(), 1);
    let answer = a1_conn
        .ask(send_request(MessageId::random(), BOB, 7, 2, envelope))
        .await
        .unwrap();
    expect_error(
        answer,
        ErrorCode::BadEnvelope,
        "a device other than the header's",
    );
}

#[tokio::test]
async fn one_time_prekeys_are_handed_out_once_under_concurrent_claims() {
    let server =
        spawn_server_with(|c| c.limits.claim_devices = Rate::per_minute(10_000, 10_000)).await;
    let (_, _, mut bobs) = with_devices(&server, BOB, 1).await;
    let alice = register_account(&server, ALICE, KeyType::P256).await;
    let carol = register_account(&server, CAROL, KeyType::P256).await;
    let mut claimers = Vec::new();
    for user in [&alice, &alice, &carol, &carol] {
        claimers.push(logged_in_connection(&server, &user.phone, &user.identity()).await);
    }
    // 4 × 30 claims at once against 100 one-time P-256 and 40 ML-KEM keys.
    let rounds = claimers.iter().map(|conn| async move {
        let mut got = Vec::new();
        for _ in 0..30 {
            got.extend(claim(conn, BOB, &[1]).await);
        }
        got
    });
    let claims: Vec<_> = futures::future::join_all(rounds)
        .await
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(claims.len(), 120);
    let ec: Vec<u32> = claims
        .iter()
        .filter_map(|c| c.one_time.as_ref())
        .map(|p| p.id)
        .collect();
    let kem: Vec<u32> = claims
        .iter()
        .filter_map(|c| c.kem_one_time.as_ref())
        .map(|p| p.id)
        .collect();
    let (ec_unique, kem_unique): (HashSet<_>, HashSet<_>) =
        (ec.iter().collect(), kem.iter().collect());
    assert_eq!(
        (ec.len(), ec_unique.len()),
        (100, 100),
        "each P-256 key once"
    );
    assert_eq!(
        (kem.len(), kem_unique.len()),
        (40, 40),
        "each ML-KEM key once"
    );

    // Exhausted: a claim still answers, with nothing in it, and the
    // device sees its pools empty and tops them up.
    let empty = claim(&claimers[0], BOB, &[1]).await;
    assert!(empty[0].one_time.is_none() && empty[0].kem_one_time.is_none());
    let (b1, b1_conn) = &mut bobs[0];
    let answer = b1_conn
        .ask(Request::PublishPrekeys { prekeys: vec![] })
        .await
        .unwrap();
    assert!(
        matches!(
            answer,
            Response::PrekeysPublished {
                one_time: 0,
                kem_one_time: 0
            }
        ),
        "{answer:?}"
    );
    // Topped up (here from a new store), claims hand keys out again.
    b1.prekeys = carrier::crypto::v2::PrekeyStore::new();
    let answer = b1.publish_prekeys(b1_conn).await;
    assert!(
        matches!(
            answer,
            Response::PrekeysPublished {
                one_time: 100,
                kem_one_time: 40
            }
        ),
        "{answer:?}"
    );
    let refill = claim(&claimers[1], BOB, &[1]).await;
    assert!(refill[0].one_time.is_some() && refill[0].kem_one_time.is_some());
}

#[tokio::test]
async fn claims_are_rate_limited_per_account() {
    let server = spawn_server().await;
    let (_, _, _bobs) = with_devices(&server, BOB, 1).await;
    let alice = register_account(&server, ALICE, KeyType::P256).await;
    let conn = logged_in_connection(&server, ALICE, &alice.identity()).await;
    let per_minute = server.config.limits.claim_devices.burst;
    for _ in 0..per_minute {
        claim(&conn, BOB, &[1]).await;
    }
    let answer = conn
        .ask(Request::Claim {
            phone: BOB.into(),
            devices: vec![1],
        })
        .await
        .unwrap();
    expect_error(answer, ErrorCode::RateLimited, "a claim past the burst");
}

/// A device named twice would hand out a one-time prekey per repetition.
#[tokio::test]
async fn a_claim_naming_a_device_twice_is_refused() {
    let server = spawn_server().await;
    let (_, _, _bobs) = with_devices(&server, BOB, 1).await;
    let alice = register_account(&server, ALICE, KeyType::P256).await;
    let conn = logged_in_connection(&server, ALICE, &alice.identity()).await;
    let answer = conn
        .ask(Request::Claim {
            phone: BOB.into(),
            devices: vec![1, 1],
        })
        .await
        .unwrap();
    expect_error(
        answer,
        ErrorCode::BadRequest,
        "a claim naming device 1 twice",
    );
    let once = claim(&conn, BOB, &[1]).await;
    assert_eq!(once.len(), 1);
}

#[tokio::test]
async fn a_disabled_account_s_devices_are_refused_at_device_login() {
    let server = spawn_server().await;
    let (_bob, account, _devices) = with_devices(&server, BOB, 1).await;
    let pool = server.db().await;
    sqlx::query("INSERT INTO disabled_users (phone, disabled_at) VALUES ($1, $2)")
        .bind(BOB)
        .bind(1_000_i64)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let device = account.device(1);
    let conn = Connection::connect(
        &server.addr(),
        carrier::tls::Pin::Expect(server.fingerprint()),
    )
    .await
    .expect("connects");
    let answer = device.log_in(&conn).await;
    expect_error(
        answer,
        ErrorCode::AccountDisabled,
        "a disabled account's device",
    );
}

#[tokio::test]
async fn removing_a_device_purges_its_queue_and_ends_its_sessions() {
    let server = spawn_server().await;
    let (_, _, alices) = with_devices(&server, ALICE, 1).await;
    let (bob, mut bob_account, mut bobs) = with_devices(&server, BOB, 2).await;
    let (a1, a1_conn) = &alices[0];
    let peer = look_up(a1_conn, BOB, &bob.identity()).await;
    // Bob's tablet goes offline with two messages waiting for it.
    let (tablet, tablet_conn) = bobs.pop().unwrap();
    tablet_conn.close().await;
    let mut session = start_session(a1, &peer, 2, None);
    for text in ["one", "two"] {
        let id = MessageId::random();
        let envelope = seal(a1, &mut session, id, text);
        let answer = a1_conn
            .ask(send_request(id, BOB, 2, 1, envelope))
            .await
            .unwrap();
        assert!(matches!(answer, Response::Accepted { .. }), "{answer:?}");
    }
    assert_eq!(stored_for(&server, BOB, 2).await, 2);
    let mut still_on = tablet.connect(&server).await;
    let mut on_wire = Wire::connect(&server).await;
    let answer = tablet.log_in_on_wire(&mut on_wire).await;
    assert!(matches!(answer, Response::LoggedIn { .. }), "{answer:?}");

    // Bob's phone removes it.
    bob_account.remove_device(2);
    let answer = bobs[0].1.ask(bob_account.next_list()).await.unwrap();
    assert!(
        matches!(answer, Response::DevicesPublished { version: 2 }),
        "{answer:?}"
    );
    assert_eq!(stored_for(&server, BOB, 2).await, 0, "its queue is purged");
    let pool = server.db().await;
    let prekeys: i64 =
        sqlx::query_scalar("SELECT count(*) FROM prekeys WHERE phone = $1 AND device = 2")
            .bind(BOB)
            .fetch_one(&pool)
            .await
            .unwrap();
    pool.close().await;
    assert_eq!(prekeys, 0, "its prekeys are gone");
    loop {
        match within("the removed device's session ends", still_on.next_event()).await {
            None => break,
            Some(Event::Message(m)) => panic!("a removed device was pushed {m:?}"),
            Some(_) => continue,
        }
    }
    // Told why, unlike a dropped connection.
    let told = on_wire.farewell().await;
    let Some((ErrorCode::UnknownDevice, message)) = told else {
        panic!("the removed device's session is closed without unknown_device: {told:?}");
    };
    assert!(
        message.contains(&format!("removed from {BOB}'s device list")),
        "the removed device is told: {message}"
    );
    let conn = Connection::connect(
        &server.addr(),
        carrier::tls::Pin::Expect(server.fingerprint),
    )
    .await
    .unwrap();
    let answer = tablet.log_in(&conn).await;
    expect_error(answer, ErrorCode::UnknownDevice, "a removed device logs in");

    // Senders are told the list moved on.
    let id = MessageId::random();
    let envelope = seal(a1, &mut session, id, "three");
    let answer = a1_conn
        .ask(send_request(id, BOB, 2, 2, envelope))
        .await
        .unwrap();
    expect_error(answer, ErrorCode::StaleDevices, "to a removed device");
    let peer = look_up(a1_conn, BOB, &bob.identity()).await;
    assert_eq!(peer.version(), 2);
    assert_eq!(peer.bundles.len(), 1);
}

#[tokio::test]
async fn v1_send_is_retired_and_v1_envelopes_are_refused() {
    let server = spawn_server().await;
    let (alice, alice_account, alices) = with_devices(&server, ALICE, 1).await;
    let (_, dave_account, _daves) = with_devices(&server, DAVE, 1).await;
    let id = MessageId::random();
    let v1 = carrier::crypto::seal(
        &alice.identity(),
        &dave_account.identity.public_key(),
        &carrier::crypto::Outgoing {
            id,
            counter: 1,
            sent_at_ms: now_ms(),
            sender_phone: &phone(ALICE),
            recipient_phone: &phone(DAVE),
            text: "v1",
        },
    )
    .unwrap();

    // `send` is answered the same whoever asks: a device, the account key,
    // or a connection not logged in.
    let account_conn = logged_in_connection(&server, ALICE, &alice_account.identity).await;
    let anonymous = Connection::connect(
        &server.addr(),
        carrier::tls::Pin::Expect(server.fingerprint),
    )
    .await
    .unwrap();
    for (who, conn) in [
        ("a device", &alices[0].1),
        ("the account key", &account_conn),
        ("nobody", &anonymous),
    ] {
        let answer = conn
            .ask(Request::Send {
                id,
                to: DAVE.into(),
                envelope: B64(v1.clone()),
            })
            .await
            .unwrap();
        let message = expect_error(answer, ErrorCode::VersionRetired, who);
        assert_eq!(
            message,
            "protocol v1's send is retired: seal one envelope per device and use device_send"
        );
    }

    // A v1 envelope in a device_send.
    let answer = alices[0]
        .1
        .ask(send_request(id, DAVE, 1, 1, v1))
        .await
        .unwrap();
    let message = expect_error(answer, ErrorCode::BadEnvelope, "v1 in a device_send");
    assert!(
        message.contains("v1 envelopes are no longer accepted"),
        "{message}"
    );
    assert_eq!(server.queued_for(DAVE).await, 0);
}

#[tokio::test]
async fn bad_publications_are_refused_and_change_nothing() {
    let server = spawn_server().await;
    let (bob, mut account, bobs) = with_devices(&server, BOB, 1).await;
    let carol = register_account(&server, CAROL, KeyType::P256).await;
    let conn = logged_in_connection(&server, BOB, &bob.identity()).await;

    let mut forged = Account::new(&bob);
    forged.identity = carol.identity();
    forged.add_device("forged");
    let mut crowded = Account::new(&bob);
    for i in 0..9 {
        crowded.add_device(&format!("d{i}"));
    }
    let Request::PublishDevices {
        list,
        mut certificates,
    } = account.list_request(5)
    else {
        unreachable!()
    };
    let uncertified = Request::PublishDevices {
        list: list.clone(),
        certificates: vec![],
    };
    let Request::PublishDevices {
        certificates: foreign,
        ..
    } = forged.list_request(5)
    else {
        unreachable!()
    };
    certificates[0] = foreign[0].clone();
    let foreign_certificate = Request::PublishDevices { list, certificates };
    let cases: Vec<(&str, Request, ErrorCode)> = vec![
        (
            "a list signed by another key",
            forged.list_request(5),
            ErrorCode::BadSignature,
        ),
        (
            "the stored version again",
            account.list_request(1),
            ErrorCode::StaleList,
        ),
        (
            "nine devices",
            crowded.list_request(5),
            ErrorCode::TooManyDevices,
        ),
        ("no certificates", uncertified, ErrorCode::BadRequest),
        (
            "a certificate of another key",
            foreign_certificate,
            ErrorCode::BadSignature,
        ),
        (
            "garbage",
            Request::PublishDevices {
                list: B64(vec![1, 2, 3]),
                certificates: vec![],
            },
            ErrorCode::BadRequest,
        ),
        (
            "prekeys from the account's session",
            Request::PublishPrekeys { prekeys: vec![] },
            ErrorCode::Forbidden,
        ),
    ];
    for (case, request, code) in cases {
        let answer = conn.ask(request).await.unwrap();
        expect_error(answer, code, case);
    }
    let peer = look_up(&conn, BOB, &bob.identity()).await;
    assert_eq!(
        (peer.version(), peer.bundles.len()),
        (1, 1),
        "nothing changed"
    );

    // A prekey signed by another device's key.
    let mut other = account.device(1);
    other.local = carrier::crypto::v2::LocalDevice::new(
        phone(BOB),
        carrier::crypto::v2::DeviceId::new(1).unwrap(),
        carrier::crypto::v2::DeviceKey::generate(),
    );
    let prekeys = other
        .prekeys
        .maintain(other.local.key(), now_ms())
        .iter()
        .take(3)
        .map(|p| B64(p.to_bytes()))
        .collect();
    let answer = bobs[0]
        .1
        .ask(Request::PublishPrekeys { prekeys })
        .await
        .unwrap();
    let message = expect_error(answer, ErrorCode::BadPrekey, "a prekey of another key");
    assert!(message.contains("prekey 0"), "{message}");
    let claimed = claim(&conn, BOB, &[1]).await;
    assert!(
        claimed[0].one_time.is_some(),
        "the device's own keys remain"
    );

    // Logging in as a device: a wrong key, an unlisted id.
    let fresh = Connection::connect(
        &server.addr(),
        carrier::tls::Pin::Expect(server.fingerprint),
    )
    .await
    .unwrap();
    let answer = other.log_in(&fresh).await;
    expect_error(
        answer,
        ErrorCode::BadSignature,
        "a device login with another key",
    );
    account.add_device("unlisted");
    let answer = account.device(2).log_in(&fresh).await;
    expect_error(
        answer,
        ErrorCode::UnknownDevice,
        "a device login of an unlisted id",
    );

    // A device_send needs a device session.
    let answer = conn
        .ask(send_request(MessageId::random(), BOB, 1, 1, vec![2; 300]))
        .await
        .unwrap();
    expect_error(
        answer,
        ErrorCode::Forbidden,
        "device_send from the account session",
    );
}

/// Every `device_send` the real server acknowledged is in the recipient
/// device's queue after `kill -9` and a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_device_sends_survive_kill_9() {
    let files = ServerFiles::new();
    let mut server = files.start();
    let (_, _, alices) = with_devices(&server, ALICE, 1).await;
    let (bob, bob_account, bobs) = with_devices(&server, BOB, 1).await;
    drop(bobs);
    let (a1, a1_conn) = &alices[0];
    let peer = look_up(a1_conn, BOB, &bob.identity()).await;
    let mut session = start_session(a1, &peer, 1, None);
    let mut pending = Vec::new();
    for n in 0..40 {
        let id = MessageId::random();
        let envelope = seal(a1, &mut session, id, &format!("message {n}"));
        pending.push((
            id,
            a1_conn.start(send_request(id, BOB, 1, 1, envelope)).await,
        ));
    }
    let mut accepted = HashSet::new();
    let mut killed = false;
    for (id, answer) in pending {
        let Ok(answer) = answer else { break };
        match within("an answer or a closed connection", answer).await {
            Ok(Response::Accepted { id: got }) => {
                assert_eq!(got, id);
                accepted.insert(id);
            }
            Ok(other) => panic!("a send was answered {other:?}"),
            Err(_) => {}
        }
        if !killed && accepted.len() >= 10 {
            killed = true;
            server.kill_9();
        }
    }
    assert!(killed, "the server was never killed");
    let server = files.start();
    let device = bob_account.device(1);
    let conn = device.connect(&server).await;
    let got: HashSet<MessageId> = fetch(&conn).await.iter().map(|m| m.id).collect();
    let lost: Vec<_> = accepted.difference(&got).collect();
    assert!(lost.is_empty(), "acknowledged sends lost: {lost:?}");
    eprintln!(
        "{} acknowledged, {} present after kill -9",
        accepted.len(),
        got.len()
    );
}

/// Bob's device 1 and his account key, each logged in on a connection of
/// its own: the sessions a new account key must close.
async fn bob_logged_in_twice(
    server: &impl Reachable,
    bob: &TestUser,
    account: &Account,
) -> (Wire, Wire) {
    let mut device_session = Wire::connect(server).await;
    let answer = account.device(1).log_in_on_wire(&mut device_session).await;
    assert!(matches!(answer, Response::LoggedIn { .. }), "{answer:?}");
    let mut account_session = Wire::connect(server).await;
    let answer = account_session.login(BOB, &bob.identity()).await;
    assert!(matches!(answer, Response::LoggedIn { .. }), "{answer:?}");
    (device_session, account_session)
}

/// `register` with a new key is a new account: the old key's devices are
/// gone, and the sessions the old key's devices and the old key itself
/// hold open are closed, each told why, so none of them goes on looking
/// up, claiming or fetching for an account that is no longer theirs.
#[tokio::test]
async fn a_new_account_key_leaves_the_old_devices_behind() {
    let server = spawn_server().await;
    let (_, _, alices) = with_devices(&server, ALICE, 1).await;
    let (old_bob, bob_account, _bobs) = with_devices(&server, BOB, 1).await;
    let (mut device_session, mut account_session) =
        bob_logged_in_twice(&server, &old_bob, &bob_account).await;

    let new_bob = register_account(&server, BOB, KeyType::P256).await;
    for (session, what, says) in [
        (
            &mut device_session,
            "an old device's session",
            "link it again",
        ),
        (
            &mut account_session,
            "the old key's session",
            "log in with the new key",
        ),
    ] {
        let told = session.farewell().await;
        let Some((ErrorCode::UnknownDevice, message)) = told else {
            panic!("{what} is closed without unknown_device: {told:?}");
        };
        assert!(
            message.contains("registered again with another key") && message.contains(says),
            "{what} is told: {message}"
        );
    }
    let answer = alices[0]
        .1
        .ask(Request::Lookup { phone: BOB.into() })
        .await
        .unwrap();
    let Response::User(info) = answer else {
        panic!("lookup: {answer:?}")
    };
    assert!(
        info.devices.is_none(),
        "the old key's devices are not served"
    );
    let pool = server.db().await;
    let lists: i64 = sqlx::query_scalar("SELECT count(*) FROM device_lists WHERE phone = $1")
        .bind(BOB)
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    assert_eq!(lists, 0);

    let conn = Connection::connect(
        &server.addr(),
        carrier::tls::Pin::Expect(server.fingerprint),
    )
    .await
    .unwrap();
    let answer = bob_account.device(1).log_in(&conn).await;
    expect_error(answer, ErrorCode::UnknownDevice, "an old device logs in");

    // The new key starts its own list at version 1.
    let mut account = Account::new(&new_bob);
    account.add_device("new phone");
    let conn = logged_in_connection(&server, BOB, &account.identity).await;
    let answer = conn.ask(account.next_list()).await.unwrap();
    assert!(
        matches!(answer, Response::DevicesPublished { version: 1 }),
        "{answer:?}"
    );
    let mut device = account.device(1);
    let device_conn = device.connect(&server).await;
    device.publish_prekeys(&device_conn).await;
    let peer = look_up(&alices[0].1, BOB, &account.identity).await;
    assert_eq!((peer.version(), peer.bundles.len()), (1, 1));
}

/// The old key's sessions do not keep a new key out: with every session
/// the account may have held by the old key's device and the old key (a
/// stolen phone, say), registering again with a new key still succeeds,
/// and those sessions are closed.
#[tokio::test]
async fn sessions_of_the_old_key_leave_room_for_the_new_one() {
    let server = spawn_server_with(|c| c.limits.sessions_per_user = 2).await;
    // Closed, so the two sessions opened below are the account's only ones.
    let (old_bob, bob_account, bobs) = with_devices(&server, BOB, 1).await;
    for (_, conn) in bobs {
        conn.close().await;
    }
    let (mut device_session, mut account_session) =
        bob_logged_in_twice(&server, &old_bob, &bob_account).await;
    let mut third = Wire::connect(&server).await;
    let answer = third.login(BOB, &old_bob.identity()).await;
    expect_error(answer, ErrorCode::RateLimited, "a third session");

    let new_bob = register_account(&server, BOB, KeyType::P256).await;
    for (session, what) in [
        (&mut device_session, "the old device's session"),
        (&mut account_session, "the old key's session"),
    ] {
        let told = session.farewell().await;
        assert!(
            matches!(told, Some((ErrorCode::UnknownDevice, _))),
            "{what} is closed: {told:?}"
        );
    }
    // The new key has the whole allowance.
    let mut again = Wire::connect(&server).await;
    let answer = again.login(BOB, &new_bob.identity()).await;
    assert!(matches!(answer, Response::LoggedIn { .. }), "{answer:?}");
}

/// Two members of a cluster (PostgreSQL only): Alice's device through A,
/// Bob's two devices through B. Each of Bob's devices is pushed at once the
/// envelope sent to it through A, not the other's; a list Bob publishes
/// through A ends, on B, the session of the device it leaves out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn across_cluster_members_each_device_gets_its_copy_and_lists_apply() {
    let Some(mut a) = crate::cluster::first_member().await else {
        return;
    };
    let mut b = crate::cluster::second_member(&a).await;
    let (_, _, alices) = with_devices(&a, ALICE, 1).await;
    let (bob, mut bob_account, mut bobs) = with_devices(&b, BOB, 2).await;
    let (a1, a1_conn) = &alices[0];
    let peer = look_up(a1_conn, BOB, &bob.identity()).await;
    assert_eq!(peer.version(), 1, "A serves the list published through B");

    let mut sent = Vec::new();
    for device in [1, 2] {
        let id = MessageId::random();
        let mut session = start_session(a1, &peer, device, None);
        let envelope = seal(a1, &mut session, id, "across members");
        let answer = a1_conn
            .ask(send_request(id, BOB, device, 1, envelope))
            .await
            .unwrap();
        assert!(matches!(answer, Response::Accepted { .. }), "{answer:?}");
        sent.push(id);
    }
    for ((own, conn), id) in bobs.iter_mut().zip(&sent) {
        let pushed = next_pushed_message(conn).await;
        assert_eq!(pushed.id, *id, "device {} is pushed its own copy", own.id);
        let parsed = Envelope::parse(&pushed.envelope.0).unwrap();
        assert_eq!(parsed.recipient().1.get(), own.id);
    }

    let bob_on_a = logged_in_connection(&a, BOB, &bob_account.identity).await;
    bob_account.remove_device(2);
    let answer = bob_on_a.ask(bob_account.next_list()).await.unwrap();
    assert!(
        matches!(answer, Response::DevicesPublished { version: 2 }),
        "{answer:?}"
    );
    let (_, mut tablet_conn) = bobs.pop().unwrap();
    loop {
        match within(
            "the removed device's session on B ends",
            tablet_conn.next_event(),
        )
        .await
        {
            None => break,
            Some(Event::Message(m)) => panic!("a removed device was pushed {m:?}"),
            Some(_) => continue,
        }
    }
    bob_on_a.close().await;
    b.stop().await;
    a.stop().await;
}
