//! A cluster: two members on one PostgreSQL database with one identity.
//! A user registered through one logs in through the other; messages,
//! acknowledgements, presence and broadcasts cross members. Skipped (with
//! a message) when `CARRIER_TEST_DATABASE_URL` is unset.

use std::cell::Cell;
use std::collections::HashSet;

use carrier::clock::Clock;
use carrier::domain::MessageId;
use carrier::protocol::{KeyType, Request, Response};
use carrier::server::{KEY_FILE, Server, StartError};

use crate::common::*;
use crate::process::{ServerFiles, ServerProcess};
use crate::test_db::TestDb;

mod codes;
mod fetch_order;
mod limits;
mod linking;
mod resync;

/// The first member, on a fresh schema; `None` without PostgreSQL.
pub async fn first_member() -> Option<TestServer> {
    // Asked first so that the skip is said, and no server starts, without it.
    TestDb::postgres().await?.remove().await;
    Some(spawn_server().await)
}

/// Copies the files every member must share into `data_dir`.
fn copy_keys(from: &TestServer, data_dir: &std::path::Path) {
    std::fs::create_dir_all(data_dir).unwrap();
    let code_key = carrier::auth::code_key::CODE_KEY_FILE;
    for file in [KEY_FILE, code_key] {
        let to = data_dir.join(file);
        std::fs::copy(from.config.data_dir.join(file), &to).unwrap();
        std::fs::set_permissions(&to, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    }
}

/// Another member of `first`'s cluster: its keys, its database, a port and
/// a data directory of its own.
pub async fn second_member(first: &TestServer) -> TestServer {
    let database = first.config.database.clone();
    spawn_server_with(|config| {
        copy_keys(first, &config.data_dir);
        config.database = database;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_with_other_keys_refuses_to_start() {
    let Some(mut a) = first_member().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut config = a.config.clone();
    config.port = 0;
    config.data_dir = dir.path().join("stranger");
    let refused = Server::open(&config, Clock::manual()).await.err();
    match refused {
        Some(StartError::ForeignKey { cluster, ours }) => {
            assert_eq!(cluster, a.fingerprint.to_hex());
            assert_ne!(ours, cluster);
        }
        other => panic!("a member with its own key started: {other:?}"),
    }
    // The right server key but another code key is refused too.
    config.data_dir = dir.path().join("half");
    std::fs::create_dir_all(&config.data_dir).unwrap();
    let key = config.data_dir.join(KEY_FILE);
    std::fs::copy(a.config.data_dir.join(KEY_FILE), &key).unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let refused = Server::open(&config, Clock::manual()).await.err();
    assert!(
        matches!(refused, Some(StartError::ForeignCodeKey)),
        "a member with another code key: {refused:?}"
    );
    let message = StartError::ForeignCodeKey.to_string();
    assert!(message.contains("copy"), "{message}");
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_share_users_pushes_fetches_and_acks() {
    let Some(mut a) = first_member().await else {
        return;
    };
    let mut b = second_member(&a).await;
    assert_eq!(a.fingerprint, b.fingerprint);

    // Registered through A, logged in through B.
    let alice = register(&a, ALICE, KeyType::P256).await;
    let bob = register(&a, BOB, KeyType::P256).await;
    let bob_on_b = bob.client_for(&b).await;
    let mut bob_session = bob_on_b.login().await.expect("Bob logs in through B");

    // Sent through A, pushed at once by B.
    let alice_session = alice.client.login().await.unwrap();
    let id = alice_session.send(BOB, "across").await.unwrap();
    let pushed = next_pushed_message(&mut bob_session.conn).await;
    assert_eq!((pushed.id, pushed.from.as_str()), (id, ALICE));
    let got = bob_session
        .take_pushed(pushed)
        .await
        .unwrap()
        .expect("not refused")
        .expect("stored");
    assert_eq!(got.text, "across");
    assert_eq!(a.queued_for(BOB).await, 0, "the ack through B deleted it");

    // Sent through B to a recipient offline; fetched and acknowledged
    // through A.
    bob_session.close().await;
    let bob_on_b = bob.client_for(&b).await;
    let bob_session = bob_on_b.login().await.unwrap();
    let second = bob_session.send(ALICE, "back").await.unwrap();
    bob_session.close().await;
    alice_session.close().await;
    let mut alice_session = alice.client.login().await.unwrap();
    let (got, refused) = within("fetch", alice_session.fetch()).await.unwrap();
    assert!(refused.is_empty(), "{refused:?}");
    assert_eq!(got.iter().map(|m| m.id).collect::<Vec<_>>(), [second]);
    assert_eq!(b.queued_for(ALICE).await, 0);
    alice_session.close().await;
    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_and_broadcasts_are_cluster_wide() {
    let Some(mut a) = first_member().await else {
        return;
    };
    let mut b = second_member(&a).await;
    let alice = register(&a, ALICE, KeyType::P256).await;
    let bob = register(&b, BOB, KeyType::P256).await;
    let bob_on_b = bob.client_for(&b).await;
    let mut bob_session = bob_on_b.login().await.unwrap();
    let alice_session = alice.client.login().await.unwrap();

    // A's `list` learns that Bob is online through B.
    let online = within("Bob shown online on A", async {
        loop {
            let list = alice_session.list().await.unwrap();
            if list.iter().any(|u| u.phone == BOB && u.online) {
                return list;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(online.iter().any(|u| u.phone == ALICE && u.online));

    // A broadcast through A reaches Bob on B.
    alice_session.broadcast("hello, everyone").await.unwrap();
    let heard = within("the broadcast on B", async {
        loop {
            match bob_session.conn.next_event().await {
                Some(carrier::client::Event::Broadcast(b)) => return b,
                Some(_) => continue,
                None => panic!("B closed Bob's connection"),
            }
        }
    })
    .await;
    assert_eq!(
        (heard.from.as_str(), heard.text.as_str()),
        (ALICE, "hello, everyone")
    );
    alice_session.close().await;
    bob_session.close().await;
    b.stop().await;
    a.stop().await;
}

/// Sends `envelopes` pipelined on `conn` and kills `server` at the first
/// answer; returns the ids acknowledged (before the kill or racing it).
async fn send_and_kill(
    conn: &carrier::client::Connection,
    envelopes: Vec<(MessageId, Request)>,
    server: &mut ServerProcess,
) -> HashSet<MessageId> {
    let mut accepted = HashSet::new();
    let killed = Cell::new(false);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let pipeline = async {
        for (id, send) in envelopes {
            if killed.get() {
                break;
            }
            match conn.start(send).await {
                Ok(answer) => tx.send((id, answer)).expect("the collector is listening"),
                Err(_) => break,
            }
        }
        drop(tx);
    };
    let collect = async {
        while let Some((id, answer)) = rx.recv().await {
            match within("an answer or a closed connection", answer).await {
                Ok(Response::Accepted { id: got }) => {
                    assert_eq!(got, id);
                    accepted.insert(id);
                }
                Ok(other) => panic!("a send was answered {other:?}"),
                Err(_) => {} // the connection died first: unknown fate
            }
            if !killed.get() {
                killed.set(true);
                server.kill_9();
            }
        }
    };
    tokio::join!(pipeline, collect);
    assert!(killed.get(), "the member was never killed");
    accepted
}

/// Fetches through `server` until every id in `expected` has arrived;
/// fails on a duplicate or a message nobody sent.
async fn fetch_until(
    user: &TestUser,
    server: &impl Reachable,
    expected: &HashSet<MessageId>,
    sent: &HashSet<MessageId>,
) {
    let client = user.client_for(server).await;
    let mut session = client.login().await.expect("login on the surviving member");
    let mut got = HashSet::new();
    within("every acknowledged message", async {
        while !expected.is_subset(&got) {
            let (batch, refused) = session.fetch().await.expect("fetch");
            assert!(refused.is_empty(), "{refused:?}");
            for m in batch {
                assert!(sent.contains(&m.id), "{} was never sent", m.id);
                assert!(got.insert(m.id), "{} was delivered twice", m.id);
            }
            if !expected.is_subset(&got) {
                // Relayed messages arrive as the link drains; nothing to
                // await from here but the next fetch.
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    })
    .await;
    session.close().await;
}

/// Below the default burst of sends one user may make.
const UNDER_LOAD: u64 = 150;

/// `UNDER_LOAD` messages sealed on `from` (logged in as a device) for
/// `to`'s one device, as `device_send` requests.
async fn sealed(from: &carrier::client::Session<'_>, to: &str) -> Vec<(MessageId, Request)> {
    let mut out = Vec::new();
    for n in 1..=UNDER_LOAD {
        out.push(sealed_for(from, to, &format!("message {n}")).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_member_under_load_loses_nothing_acknowledged() {
    let first = ServerFiles::new();
    if !first.on_postgres() {
        return;
    }
    let mut a = first.start();
    let second = ServerFiles::member_of(&first).expect("PostgreSQL");
    let b = second.start();
    let alice = register(&a, ALICE, KeyType::P256).await;
    let bob = register(&b, BOB, KeyType::P256).await;

    let session = alice.client.login().await.unwrap();
    let envelopes = sealed(&session, BOB).await;
    let sent: HashSet<MessageId> = envelopes.iter().map(|(id, _)| *id).collect();
    let conn = &session.conn;
    let accepted = send_and_kill(conn, envelopes, &mut a).await;
    eprintln!(
        "{} of {UNDER_LOAD} sends accepted before SIGKILL",
        accepted.len()
    );
    drop(session);
    // The other member serves everything A acknowledged, at once.
    fetch_until(&bob, &b, &accepted, &sent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_neighbour_link_moves_to_the_other_member_when_its_holder_dies() {
    let mut m1_files = ServerFiles::new();
    if !m1_files.on_postgres() {
        return;
    }
    // The neighbour, which expects the cluster's key on the first member's
    // link port; the members dial it.
    let mut n_files = ServerFiles::new();
    n_files.set_links(0, &[]);
    let n = n_files.start();
    let n_link = n.link_addr.expect("a link port");
    m1_files.set_links(0, &[(n_link, Some(n.fingerprint))]);
    let mut m1 = m1_files.start();
    n_files.set_links(
        n_link.port(),
        &[(m1.link_addr.unwrap(), Some(m1.fingerprint))],
    );
    drop(n);
    let n = n_files.start();
    let mut m2_files = ServerFiles::member_of(&m1_files).expect("PostgreSQL");
    m2_files.set_links(0, &[(n_link, Some(n.fingerprint))]);

    let carol = register(&n, CAROL, KeyType::P256).await;
    let alice = register(&m1, ALICE, KeyType::P256).await;
    // The first member holds the link once Carol's entry came through it.
    within("Carol's entry on the first member", async {
        let session = alice.client.login().await.unwrap();
        while !session
            .list()
            .await
            .unwrap()
            .iter()
            .any(|u| u.phone == CAROL)
        {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        session.close().await;
    })
    .await;
    let m2 = m2_files.start();

    // Sent through the second member, queued for the neighbour, while the
    // first member (holding the link) is killed.
    let alice_on_m2 = alice.client_for(&m2).await;
    let session = alice_on_m2.login().await.unwrap();
    let envelopes = sealed(&session, CAROL).await;
    let sent: HashSet<MessageId> = envelopes.iter().map(|(id, _)| *id).collect();
    let conn = &session.conn;
    let mut answers = Vec::new();
    for (_, send) in envelopes {
        answers.push(conn.start(send).await.expect("written"));
    }
    m1.kill_9();
    for answer in answers {
        let answer = within("an answer", answer).await;
        assert!(
            matches!(answer, Ok(Response::Accepted { .. })),
            "{answer:?}"
        );
    }
    // The second member takes the link over and drains the shared queue:
    // everything arrives, once.
    fetch_until(&carol, &n, &sent, &sent).await;
    assert!(
        m2_files.log_text().contains("link up"),
        "the second member never linked:\n{}",
        m2_files.log_text()
    );
    drop(session);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_populated_sqlite_server_moves_to_a_cluster() {
    let Some(target) = TestDb::postgres().await else {
        return;
    };
    let old = ServerFiles::on_sqlite();
    let mut server = old.start();
    let alice = register(&server, ALICE, KeyType::P256).await;
    let bob = register(&server, BOB, KeyType::P256).await;
    let session = alice.client.login().await.unwrap();
    let mut queued = Vec::new();
    for n in 0..20 {
        queued.push(
            session
                .send(BOB, &format!("before the move {n}"))
                .await
                .unwrap(),
        );
    }
    session.close().await;
    assert!(server.terminate().success());

    let source = format!("sqlite:{}", old.data_dir().join("carrier.db").display());
    let migrate = std::process::Command::new(env!("CARGO_BIN_EXE_carrier-server"))
        .args(["migrate", "--from", &source, "--to", &target.url()])
        .env_remove("CARRIER_DATABASE_URL")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("carrier-server migrate starts");
    let out = crate::process::wait_within(migrate, "carrier-server migrate");
    let said = crate::process::stdout_of(&out);
    assert!(
        out.status.success(),
        "{said}{}",
        crate::process::stderr_of(&out)
    );
    assert!(said.contains("message_queue: 20 rows"), "{said}");

    // Two members on the copy, with the old server's keys.
    let m1_files = ServerFiles::sharing_keys(&old, target.url());
    let m2_files = ServerFiles::sharing_keys(&old, target.url());
    let m1 = m1_files.start();
    let m2 = m2_files.start();
    assert_eq!(
        (m1.fingerprint, m2.fingerprint),
        (server.fingerprint, server.fingerprint)
    );
    let bob_on_m2 = bob.client_for(&m2).await;
    let mut bob_session = bob_on_m2.login().await.expect("Bob logs in on the cluster");
    let (got, refused) = within("fetch", bob_session.fetch()).await.unwrap();
    assert!(refused.is_empty(), "{refused:?}");
    assert_eq!(got.iter().map(|m| m.id).collect::<Vec<_>>(), queued);
    // And the cluster goes on: Alice, through the other member, reaches him live.
    let alice_on_m1 = alice.client_for(&m1).await;
    let alice_session = alice_on_m1.login().await.unwrap();
    let id = alice_session.send(BOB, "after the move").await.unwrap();
    assert_eq!(next_pushed_message(&mut bob_session.conn).await.id, id);
    alice_session.close().await;
    bob_session.close().await;
    target.remove().await;
}
