//! `carrier-server admin users delete` withdraws the user from the
//! neighbourhood: a statement signed by the home server, flooded hop by hop,
//! after which every server answers for the phone as for an unknown user.
//! A replayed old entry does not bring the route back, a replayed old
//! withdrawal does not remove a later registration, and a user deleted
//! while their server was stopped is withdrawn at its next start.

use carrier::admin::cli::{AdminArgs, AdminCommand, UsersCommand};
use carrier::crypto::Identity;
use carrier::protocol::link::{DirectoryEntry, LinkMessage, Withdrawal};
use carrier::protocol::{B64, ErrorCode, KeyType, signed};

use crate::common::{ALICE, BOB, CAROL, DAVE, TestUser, register, server_code};
use crate::neighbourhood::{
    Node, eventually, fetch_n, link_as, neighbourhood, now_ms, sees, send_link,
};

/// `carrier-server admin users delete <phone>` for `node`, as the binary
/// runs it: through the admin socket when the server runs, on its store
/// when it is stopped.
async fn delete_user(node: &Node, phone: &str) {
    let args = AdminArgs {
        json: false,
        command: AdminCommand::Users(UsersCommand::Delete {
            phone: phone.into(),
        }),
    };
    carrier::admin::cli::run(&node.config, args)
        .await
        .unwrap_or_else(|e| panic!("admin users delete {phone}: {e}"));
}

/// The server key of `node`, to speak on its links as the test needs.
fn key_of(node: &Node) -> Identity {
    let path = node.config.data_dir.join(carrier::server::KEY_FILE);
    carrier::crypto::load_or_create_server_key(&path)
        .expect("the key file reads")
        .0
}

/// `node`'s own directory entry for `phone`, in its wire form.
async fn own_entry(node: &Node, phone: &str) -> DirectoryEntry {
    let pool = node.db().await;
    let (key_type, public_key, home_key, home_name, registered_at, signature): (
        String,
        Vec<u8>,
        Vec<u8>,
        String,
        i64,
        Vec<u8>,
    ) = sqlx::query_as(
        "SELECT key_type, public_key, home_key, home_name, registered_at, signature
         FROM directory WHERE phone = $1 AND via IS NULL",
    )
    .bind(phone)
    .fetch_one(&pool)
    .await
    .expect("the home holds its user's entry");
    pool.close().await;
    DirectoryEntry {
        phone: phone.into(),
        key_type: KeyType::parse(&key_type).unwrap(),
        public_key: B64(public_key),
        home_key: B64(home_key),
        home_name,
        registered_at,
        signature: B64(signature),
        hops: 0,
    }
}

/// The withdrawal `node` holds for `phone`.
async fn held_withdrawal(node: &Node, phone: &str) -> Withdrawal {
    let pool = node.db().await;
    let (registered_at, withdrawn_at, home_key, signature): (i64, i64, Vec<u8>, Vec<u8>) =
        sqlx::query_as(
            "SELECT registered_at, withdrawn_at, home_key, signature
             FROM directory_withdrawals WHERE phone = $1",
        )
        .bind(phone)
        .fetch_one(&pool)
        .await
        .expect("a withdrawal is held");
    pool.close().await;
    Withdrawal {
        phone: phone.into(),
        registered_at,
        withdrawn_at,
        home_key: B64(home_key),
        signature: B64(signature),
    }
}

/// A fresh entry for `phone` signed by `home`: a marker that, once seen
/// downstream, shows that every frame sent before it was handled.
fn marker(home: &Identity, phone: &str) -> DirectoryEntry {
    let user = Identity::generate(KeyType::P256).public_key().to_spki_der();
    let home_key = home.public_key().to_spki_der();
    let at = now_ms();
    let bytes = signed::directory_entry_bytes(phone, "p256", &user, at, &home_key, "marker");
    DirectoryEntry {
        phone: phone.into(),
        key_type: KeyType::P256,
        public_key: B64(user),
        home_key: B64(home_key),
        home_name: "marker".into(),
        registered_at: at,
        signature: B64(home.sign(&bytes)),
        hops: 0,
    }
}

/// Plays the stopped server `home` towards `next`: sends `frames`, then a
/// marker entry for `marker_phone`, and waits until `watcher` (further
/// down the line) lists the marker.
async fn replay_as(
    home: &Node,
    next: &Node,
    frames: Vec<LinkMessage>,
    marker_phone: &str,
    watcher: &TestUser,
) {
    let key = key_of(home);
    let mut link = link_as(&key, next).await;
    for frame in &frames {
        send_link(&mut link, frame).await;
    }
    let entries = vec![marker(&key, marker_phone)];
    send_link(&mut link, &LinkMessage::Directory { entries }).await;
    eventually("the marker to travel down the line", || {
        sees(&watcher.client, marker_phone)
    })
    .await;
}

/// What the server of `user` answers to a send to `phone`.
async fn send_refused_as_unknown(user: &TestUser, phone: &str) {
    let session = user.client.login().await.expect("login");
    let err = session
        .send(phone, "are you there?")
        .await
        .expect_err("the phone is withdrawn");
    assert_eq!(server_code(&err), Some(ErrorCode::UnknownUser), "{err}");
    session.close().await;
}

#[tokio::test]
async fn a_deleted_user_is_withdrawn_along_a_line_of_three() {
    let mut nodes = neighbourhood(&["127.0.0.1"; 3], &[(0, 1), (1, 2)]).await;
    let _alice = register(&nodes[0], ALICE, KeyType::P256).await;
    let bob = register(&nodes[1], BOB, KeyType::P256).await;
    let carol = register(&nodes[2], CAROL, KeyType::P256).await;
    eventually("the line learns alice", || async {
        sees(&bob.client, ALICE).await && sees(&carol.client, ALICE).await
    })
    .await;
    let stale = own_entry(&nodes[0], ALICE).await;

    delete_user(&nodes[0], ALICE).await;
    eventually("b and c drop alice", || async {
        !sees(&bob.client, ALICE).await && !sees(&carol.client, ALICE).await
    })
    .await;
    send_refused_as_unknown(&carol, ALICE).await;
    send_refused_as_unknown(&bob, ALICE).await;
    for node in &nodes[1..] {
        assert_eq!(
            node.count("SELECT count(*) FROM directory WHERE phone = '+12025550101'")
                .await,
            0,
            "the route is gone from the table too"
        );
    }
    let withdrawal = held_withdrawal(&nodes[2], ALICE).await;
    assert_eq!(withdrawal.registered_at, stale.registered_at);
    assert_eq!(withdrawal.home_key, stale.home_key);

    // The old entry, replayed by its home's key, does not come back.
    nodes[0].stop().await;
    let replay = LinkMessage::Directory {
        entries: vec![stale],
    };
    replay_as(&nodes[0], &nodes[1], vec![replay], DAVE, &carol).await;
    assert!(
        !sees(&bob.client, ALICE).await,
        "b took the stale entry back"
    );
    assert!(
        !sees(&carol.client, ALICE).await,
        "c took the stale entry back"
    );

    // Registering the phone again at the home brings it back everywhere.
    nodes[0].start().await;
    let alice = register(&nodes[0], ALICE, KeyType::P256).await;
    eventually("the line learns alice again", || async {
        sees(&bob.client, ALICE).await && sees(&carol.client, ALICE).await
    })
    .await;
    for node in &nodes {
        assert_eq!(
            node.count("SELECT count(*) FROM directory_withdrawals")
                .await,
            0,
            "the later registration replaced the tombstone"
        );
    }
    let session = carol.client.login().await.expect("carol logs in");
    session
        .send(ALICE, "welcome back")
        .await
        .expect("accepted for the new alice");
    session.close().await;
    assert_eq!(fetch_n(&alice, 1).await, ["welcome back"]);

    // The old withdrawal, replayed, does not remove the new registration.
    nodes[0].stop().await;
    let replay = LinkMessage::Withdrawn {
        withdrawals: vec![withdrawal],
    };
    replay_as(&nodes[0], &nodes[1], vec![replay], "+12025550105", &carol).await;
    assert!(sees(&bob.client, ALICE).await, "b lost the new alice");
    assert!(sees(&carol.client, ALICE).await, "c lost the new alice");
}

#[tokio::test]
async fn a_user_deleted_while_the_server_is_stopped_is_withdrawn_at_its_start() {
    let mut nodes = neighbourhood(&["127.0.0.1"; 2], &[(0, 1)]).await;
    let _alice = register(&nodes[0], ALICE, KeyType::P256).await;
    let bob = register(&nodes[1], BOB, KeyType::P256).await;
    eventually("b learns alice", || sees(&bob.client, ALICE)).await;

    nodes[0].stop().await;
    delete_user(&nodes[0], ALICE).await;
    // A tombstone older than the 30 days they live, forgotten at start.
    let pool = nodes[0].db().await;
    sqlx::query(
        "INSERT INTO directory_withdrawals (phone, registered_at, withdrawn_at, home_key,
             signature) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(CAROL)
    .bind(1_i64)
    .bind(now_ms() - 31 * 24 * 3600 * 1000)
    .bind(b"home".to_vec())
    .bind(b"signed long ago".to_vec())
    .execute(&pool)
    .await
    .expect("an old tombstone is planted");
    pool.close().await;
    assert!(
        sees(&bob.client, ALICE).await,
        "nothing is flooded while the home is stopped"
    );
    nodes[0].start().await;
    eventually("b drops alice once her home is back", || async {
        !sees(&bob.client, ALICE).await
    })
    .await;
    send_refused_as_unknown(&bob, ALICE).await;
    let held = held_withdrawal(&nodes[1], ALICE).await;
    assert_eq!(
        held.home_key.0,
        key_of(&nodes[0]).public_key().to_spki_der()
    );
    assert_eq!(
        nodes[0]
            .count("SELECT count(*) FROM directory_withdrawals WHERE length(signature) = 0")
            .await,
        0,
        "the home signed its pending withdrawal at start"
    );
    assert_eq!(
        nodes[0]
            .count("SELECT count(*) FROM directory_withdrawals WHERE phone = '+12025550103'")
            .await,
        0,
        "the expired tombstone was forgotten at start"
    );
}

/// In a cluster, a user deleted through one member is dropped by the other
/// member's copy of the directory too, and its tombstone is shared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_deleted_through_one_member_is_gone_from_the_other() {
    let Some(mut a) = crate::cluster::first_member().await else {
        return;
    };
    let mut b = crate::cluster::second_member(&a).await;
    let _alice = register(&a, ALICE, KeyType::P256).await;
    let bob = register(&a, BOB, KeyType::P256).await;
    let bob_on_b = TestUser {
        client: bob.client_for(&b).await,
        ..bob
    };
    assert!(sees(&bob_on_b.client, ALICE).await, "b knows alice");

    let args = AdminArgs {
        json: false,
        command: AdminCommand::Users(UsersCommand::Delete {
            phone: ALICE.into(),
        }),
    };
    carrier::admin::cli::run(&a.config, args)
        .await
        .expect("admin users delete through a");
    eventually("b drops alice", || async {
        !sees(&bob_on_b.client, ALICE).await
    })
    .await;
    send_refused_as_unknown(&bob_on_b, ALICE).await;
    b.stop().await;
    a.stop().await;
}

/// Only the home that signed a user's entry may withdraw it (SECURITY,
/// "Withdraw another server's user"): a neighbour that signs a withdrawal
/// for another server's user with its own key, dated after the user's
/// registration, must not make the user vanish.
#[tokio::test]
async fn a_neighbour_cannot_withdraw_another_homes_user() {
    let (nodes, hostile) = crate::neighbourhood::beside_a_hostile_neighbour().await;
    let alice = register(&nodes[0], ALICE, KeyType::P256).await;
    let bob = register(&nodes[1], BOB, KeyType::P256).await;
    eventually("the victim learns bob", || sees(&alice.client, &bob.phone)).await;

    let mut link = link_as(&hostile, &nodes[0]).await;
    let home_key = hostile.public_key().to_spki_der();
    let (registered_at, withdrawn_at) = (now_ms(), now_ms());
    let bytes = signed::withdrawal_bytes(&bob.phone, registered_at, withdrawn_at, &home_key);
    let forged = Withdrawal {
        phone: bob.phone.clone(),
        registered_at,
        withdrawn_at,
        home_key: B64(home_key),
        signature: B64(hostile.sign(&bytes)),
    };
    send_link(
        &mut link,
        &LinkMessage::Withdrawn {
            withdrawals: vec![forged],
        },
    )
    .await;
    // Frames are handled in order: once the marker is listed, so was the
    // withdrawal.
    let entries = vec![marker(&hostile, DAVE)];
    send_link(&mut link, &LinkMessage::Directory { entries }).await;
    eventually("the marker arrives", || sees(&alice.client, DAVE)).await;

    assert!(
        sees(&alice.client, &bob.phone).await,
        "bob is still listed at the victim"
    );
    assert_eq!(
        nodes[0]
            .count("SELECT count(*) FROM directory_withdrawals")
            .await,
        0,
        "no tombstone was kept for bob"
    );
    let session = alice.client.login().await.expect("login");
    session
        .send(&bob.phone, "still there?")
        .await
        .expect("bob is still reachable");
    session.close().await;
    let got = fetch_n(&bob, 1).await;
    assert_eq!(got, ["still there?"]);
}

/// A withdrawal signed by a key no entry or tombstone held names, for a
/// phone no entry is held for: a flood of them would push real tombstones
/// out of the bounded store, so that a replayed old entry brings a deleted
/// user back. They are neither kept nor sent on.
#[tokio::test]
async fn withdrawals_signed_by_an_unknown_home_are_neither_kept_nor_forwarded() {
    let (nodes, hostile) = crate::neighbourhood::beside_a_hostile_neighbour().await;
    let carol = register(&nodes[1], CAROL, KeyType::P256).await;
    let stranger = Identity::generate(KeyType::P256);
    let home_key = stranger.public_key().to_spki_der();
    let made_up: Vec<Withdrawal> = ["+12025550170", "+12025550171", "+12025550172"]
        .into_iter()
        .map(|phone| {
            let (registered_at, withdrawn_at) = (now_ms() - 10, now_ms());
            let bytes = signed::withdrawal_bytes(phone, registered_at, withdrawn_at, &home_key);
            Withdrawal {
                phone: phone.into(),
                registered_at,
                withdrawn_at,
                home_key: B64(home_key.clone()),
                signature: B64(stranger.sign(&bytes)),
            }
        })
        .collect();
    let mut link = link_as(&hostile, &nodes[0]).await;
    send_link(
        &mut link,
        &LinkMessage::Withdrawn {
            withdrawals: made_up,
        },
    )
    .await;
    // Frames are handled and sent on in order: once the marker reaches the
    // next server, the withdrawals were judged at both.
    let entries = vec![marker(&hostile, DAVE)];
    send_link(&mut link, &LinkMessage::Directory { entries }).await;
    eventually("the marker reaches the next server", || {
        sees(&carol.client, DAVE)
    })
    .await;
    for node in &nodes {
        assert_eq!(
            node.count("SELECT count(*) FROM directory_withdrawals")
                .await,
            0,
            "no made-up tombstone is kept"
        );
    }
}
