//! Limits on one user that hold across the members of a cluster: the
//! sessions a user may keep logged in, and how fast a user may send. A
//! user reaching both members through a balancer gets one user's share,
//! not one per member.

use carrier::config::ServerConfig;
use carrier::db::Location;
use carrier::domain::MessageId;
use carrier::protocol::{ErrorCode, KeyType, Response};
use carrier::rate::Rate;
use sha2::{Digest, Sha256};
use sqlx::Connection;
use sqlx::postgres::{PgConnection, PgListener};

use super::copy_keys;
use super::fetch_order::one_device;
use crate::common::*;
use crate::devices::client::*;
use crate::test_db::TestDb;

/// Two members of one cluster whose configurations `adjust` changes;
/// `None` without PostgreSQL.
async fn pair(adjust: fn(&mut ServerConfig)) -> Option<(TestServer, TestServer)> {
    TestDb::postgres().await?.remove().await;
    let a = spawn_server_with(adjust).await;
    let database = a.config.database.clone();
    let b = spawn_server_with(|config| {
        copy_keys(&a, &config.data_dir);
        config.database = database;
        adjust(config);
    })
    .await;
    Some((a, b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_per_user_count_every_member() {
    let Some((mut a, mut b)) = pair(|c| c.limits.sessions_per_user = 2).await else {
        return;
    };
    let alice = register(&a, ALICE, KeyType::P256).await;
    let identity = alice.identity();
    let first = logged_in_connection(&a, ALICE, &identity).await;
    let second = logged_in_connection(&a, ALICE, &identity).await;
    // B learns of A's sessions from A's presence, a moment after they
    // log in: until then a third session through B may pass, and is let
    // go again.
    let refused = within("B refuses a third session", async {
        loop {
            let conn = carrier::client::Connection::connect(
                &b.addr(),
                carrier::tls::Pin::Expect(b.fingerprint()),
            )
            .await
            .unwrap();
            let Response::Challenge { nonce } = conn
                .call(carrier::protocol::Request::Challenge)
                .await
                .unwrap()
            else {
                panic!("a challenge");
            };
            let signature = proof(
                &identity,
                carrier::crypto::Purpose::Login,
                conn.exporter(),
                &nonce.0,
                ALICE,
            );
            let answer = conn
                .ask(carrier::protocol::Request::Login {
                    phone: ALICE.into(),
                    signature: carrier::protocol::B64(signature),
                })
                .await
                .unwrap();
            conn.close().await;
            if !matches!(answer, Response::LoggedIn { .. }) {
                return answer;
            }
        }
    })
    .await;
    expect_error(refused, ErrorCode::RateLimited, "a third session, on B");
    first.close().await;
    second.close().await;
    b.stop().await;
    a.stop().await;
}

/// Sends a little below the default, with a burst of 4 and next to no
/// refill, so that what one member let through shows on the other.
fn four_sends(config: &mut ServerConfig) {
    config.limits.send_messages = Rate::per_minute(1, 4);
}

/// The messages a spent report (`member s phone:messages:bytes …`) says
/// `phone` sent; 0 for any other notification.
fn spent_by(payload: &str, phone: &str) -> u64 {
    let Some((_, entries)) = payload.split_once(" s ") else {
        return 0;
    };
    entries
        .split(' ')
        .filter_map(|e| e.strip_prefix(phone)?.strip_prefix(':'))
        .filter_map(|rest| rest.split(':').next()?.parse::<u64>().ok())
        .sum()
}

/// Listens on the cluster's notification channel of `member`'s database.
async fn cluster_channel(member: &TestServer) -> PgListener {
    let Some(Location::Postgres(url)) = member.config.database.clone() else {
        panic!("a member on PostgreSQL");
    };
    let mut conn = PgConnection::connect(&url).await.unwrap();
    let name: String = sqlx::query_scalar("SELECT current_database() || '.' || current_schema()")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let channel = format!(
        "carrier_{}",
        hex::encode(&Sha256::digest(name.as_bytes())[..8])
    );
    let mut listener = PgListener::connect(&url).await.unwrap();
    listener.listen(&channel).await.unwrap();
    listener
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_spends_one_rate_across_members() {
    let Some((mut a, mut b)) = pair(four_sends).await else {
        return;
    };
    let mut events = cluster_channel(&a).await;
    let (bob, _bob_device, bob_conn) = one_device(&b, BOB).await;
    let (_, alice_device, on_a) = one_device(&a, ALICE).await;
    let on_b = alice_device.connect(&b).await;
    let peer = look_up(&on_a, BOB, &bob.identity()).await;
    let mut session = start_session(&alice_device, &peer, 1, None);
    let mut send = |n: usize| {
        let id = MessageId::random();
        let envelope = seal(&alice_device, &mut session, id, &format!("message {n}"));
        send_request(id, BOB, 1, peer.version(), envelope)
    };
    // The whole burst through A.
    for n in 0..4 {
        let answer = on_a.ask(send(n)).await.unwrap();
        assert!(
            matches!(answer, Response::Accepted { .. }),
            "send {n}: {answer:?}"
        );
    }
    // A tells the other members what Alice spent, in as many reports as
    // the burst took ticks of its share loop.
    within("A reports what Alice spent", async {
        let mut reported = 0;
        while reported < 4 {
            let n = events.recv().await.unwrap();
            reported += spent_by(n.payload(), ALICE);
        }
    })
    .await;
    // B heard it too: it lets through no more than one send (one that
    // reaches it before it has taken the report in), not a burst of its own.
    let mut accepted = 0;
    let refused = loop {
        match on_b.ask(send(4 + accepted)).await.unwrap() {
            Response::Accepted { .. } => accepted += 1,
            other => break other,
        }
    };
    expect_error(refused, ErrorCode::RateLimited, "a send through B");
    assert!(accepted <= 1, "B let {accepted} more sends through");
    for conn in [bob_conn, on_a, on_b] {
        conn.close().await;
    }
    b.stop().await;
    a.stop().await;
}
