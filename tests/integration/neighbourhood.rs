//! Several servers linked into a neighbourhood, in this process: the seeds'
//! two-server case on distinct loopback hosts, a line of three with the
//! middle server down for a while, a ring of four, a neighbour presenting
//! the wrong key, and broadcasts. (`crash` kills a real server binary with
//! messages in its outbound queue.) `devices`: protocol v2 across a line
//! of three. `link_slots`: idle connections from one address leave room
//! on the link port for a neighbour. `forged_senders`: relays in the name
//! of a user not homed where the path starts are refused.

mod deviceless_relay;
pub(crate) mod devices;
mod edge_attacks;
mod edges;
mod flood_attacks;
mod forged_senders;
mod link_slots;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use carrier::auth::code_sink::CodeSink;
use carrier::client::{Client, Event};
use carrier::clock::Clock;
use carrier::config::{NeighbourConfig, ServerConfig};
use carrier::domain::Fingerprint;
use carrier::protocol::KeyType;
use carrier::server::{Listeners, Server};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::common::{Reachable, TestUser, register, within};
use crate::process::ServerFiles;
use crate::test_db::TestDb;

/// One server of a test neighbourhood, with its client and link listeners.
pub(crate) struct Node {
    addr: SocketAddr,
    pub(crate) link_addr: SocketAddr,
    pub(crate) fingerprint: Fingerprint,
    _dir: TempDir,
    pub(crate) config: ServerConfig,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
    /// The PostgreSQL schema, when the suite runs against PostgreSQL.
    _postgres: Option<TestDb>,
}

impl Reachable for Node {
    fn addr(&self) -> String {
        self.addr.to_string()
    }
    fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }
    fn otp_file(&self) -> &Path {
        self.config_otp()
    }
}

impl Node {
    fn config_otp(&self) -> &Path {
        match &self.config.code_sink {
            CodeSink::File(p) => p,
            _ => unreachable!("test nodes write codes to a file"),
        }
    }

    /// Starts the server again on its addresses (kept in its config).
    pub(crate) async fn start(&mut self) {
        let listeners = Listeners::bind(&self.config)
            .await
            .expect("the ports are free again");
        self.run(listeners).await;
    }

    async fn run(&mut self, listeners: Listeners) {
        let server = Server::open(&self.config, Clock::System)
            .await
            .expect("the server opens");
        assert_eq!(server.fingerprint(), self.fingerprint);
        self.shutdown = CancellationToken::new();
        self.task = Some(tokio::spawn(server.run(listeners, self.shutdown.clone())));
    }

    pub(crate) async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.task.take() {
            within("graceful shutdown", t)
                .await
                .expect("the server task does not panic");
        }
    }

    pub(crate) async fn db(&self) -> sqlx::AnyPool {
        crate::common::open_any(&self.config.database_location()).await
    }

    pub(crate) async fn count(&self, sql: &'static str) -> i64 {
        let pool = self.db().await;
        let n = sqlx::query_scalar(sql)
            .fetch_one(&pool)
            .await
            .expect("count query");
        pool.close().await;
        n
    }

    /// The stored route to `phone`: the neighbour it goes through, the
    /// hops, and the signature of the statement held.
    async fn route_to(&self, phone: &str) -> (Option<String>, i64, Vec<u8>) {
        let pool = self.db().await;
        let route = sqlx::query_as("SELECT via, hops, signature FROM directory WHERE phone = $1")
            .bind(phone)
            .fetch_one(&pool)
            .await
            .expect("a directory row");
        pool.close().await;
        route
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Starts one server per host in `hosts`, linked along `edges` (pairs of
/// indexes), each pinning its neighbours' real keys.
pub(crate) async fn neighbourhood(hosts: &[&str], edges: &[(usize, usize)]) -> Vec<Node> {
    let mut planned = Vec::new();
    for host in hosts {
        let dir = tempfile::tempdir().expect("temporary directory");
        let data = dir.path().join("data");
        let (key, _) =
            carrier::crypto::load_or_create_server_key(&data.join(carrier::server::KEY_FILE))
                .expect("the server key is made");
        let client = TcpListener::bind((*host, 0))
            .await
            .expect("bind client port");
        let links = TcpListener::bind((*host, 0)).await.expect("bind link port");
        planned.push((dir, data, key.fingerprint(), client, links));
    }
    let link_addrs: Vec<SocketAddr> = planned.iter().map(|p| p.4.local_addr().unwrap()).collect();
    let fps: Vec<Fingerprint> = planned.iter().map(|p| p.2).collect();
    let mut nodes = Vec::new();
    for (i, (dir, data, fingerprint, client, links)) in planned.into_iter().enumerate() {
        let mut config = ServerConfig::default();
        let addr = client.local_addr().unwrap();
        config.host = addr.ip().to_string();
        config.port = addr.port();
        config.server_port = Some(link_addrs[i].port());
        config.name = Some(format!("server{}", i + 1));
        config.data_dir = data;
        config.code_sink = CodeSink::File(dir.path().join("otp.txt"));
        config.neighbours = neighbours_of(i, edges, &link_addrs, &fps);
        let postgres = TestDb::postgres().await;
        config.database = postgres.as_ref().map(TestDb::location);
        let mut node = Node {
            addr,
            link_addr: link_addrs[i],
            fingerprint,
            _dir: dir,
            config,
            shutdown: CancellationToken::new(),
            task: None,
            _postgres: postgres,
        };
        node.run(Listeners {
            client,
            link: Some(links),
            metrics: None,
        })
        .await;
        nodes.push(node);
    }
    nodes
}

fn neighbours_of(
    i: usize,
    edges: &[(usize, usize)],
    links: &[SocketAddr],
    fps: &[Fingerprint],
) -> Vec<NeighbourConfig> {
    edges
        .iter()
        .filter_map(|&(a, b)| {
            if a == i {
                Some(b)
            } else if b == i {
                Some(a)
            } else {
                None
            }
        })
        .map(|j| NeighbourConfig {
            address: links[j].to_string(),
            fingerprint: Some(fps[j]),
        })
        .collect()
}

/// Polls `check` until it holds: directory spreading and queue draining
/// happen on other servers, with nothing a client could await.
pub(crate) async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    within(what, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
    .await
}

/// Whether `client`'s server lists `phone` (it knows the route there).
pub(crate) async fn sees(client: &Client, phone: &str) -> bool {
    let session = client.login().await.expect("login");
    let seen = session
        .list()
        .await
        .expect("list")
        .iter()
        .any(|u| u.phone == phone);
    session.close().await;
    seen
}

/// Fetches until `n` messages have arrived; returns their texts.
pub(crate) async fn fetch_n(user: &TestUser, n: usize) -> Vec<String> {
    let mut texts = Vec::new();
    within("messages to arrive", async {
        while texts.len() < n {
            let mut session = user.client.login().await.expect("login");
            let (received, refused) = session.fetch().await.expect("fetch");
            assert!(refused.is_empty(), "refused: {refused:?}");
            texts.extend(received.into_iter().map(|m| m.text));
            session.close().await;
            if texts.len() < n {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    })
    .await;
    texts
}

#[tokio::test]
async fn seeds_two_servers_on_distinct_hosts() {
    let nodes = neighbourhood(&["127.0.0.2", "127.0.0.3"], &[(0, 1)]).await;
    let alice = register(&nodes[0], crate::common::ALICE, KeyType::P256).await;
    let bob = register(&nodes[1], crate::common::BOB, KeyType::Rsa).await;
    eventually("server 1 learns bob", || sees(&alice.client, &bob.phone)).await;
    eventually("server 2 learns alice", || sees(&bob.client, &alice.phone)).await;

    let session = alice.client.login().await.expect("alice logs in");
    session
        .send(&bob.phone, "hello from server 1")
        .await
        .expect("send across servers");
    let users = session.list().await.expect("list");
    let listed_bob = users
        .iter()
        .find(|u| u.phone == bob.phone)
        .expect("bob is listed");
    assert_eq!(listed_bob.home, "server2");
    assert_eq!(listed_bob.fingerprint, bob.fingerprint);
    assert_eq!(listed_bob.home_fingerprint, nodes[1].fingerprint.to_hex());
    session.close().await;
    logging_in_elsewhere_names_the_home(&nodes[0], &bob.phone).await;

    assert_eq!(fetch_n(&bob, 1).await, ["hello from server 1"]);
    let session = bob.client.login().await.expect("bob logs in");
    session.send(&alice.phone, "and back").await.expect("reply");
    session.close().await;
    assert_eq!(fetch_n(&alice, 1).await, ["and back"]);
}

/// Logging in on `server` as `phone`, whose home is "server2", with the
/// account key or as a device: both are told where to go, before any
/// proof is looked at.
async fn logging_in_elsewhere_names_the_home(server: &Node, phone: &str) {
    use carrier::protocol::{B64, ErrorCode, Request, Response};
    let mut wire = crate::wire::Wire::connect(server).await;
    let logins = [
        Request::Login {
            phone: phone.into(),
            signature: B64(vec![0; 64]),
        },
        Request::DeviceLogin {
            phone: phone.into(),
            device: 1,
            signature: B64(vec![0; 64]),
        },
    ];
    for login in logins {
        wire.challenge().await;
        let answer = wire.call(login).await;
        let Response::Error { code, message, .. } = &answer else {
            panic!("a login for another server's user: {answer:?}");
        };
        assert_eq!(*code, ErrorCode::UnknownUser, "{answer:?}");
        assert!(
            message.contains("registered on the server server2; connect to it"),
            "{message}"
        );
    }
}

#[tokio::test]
async fn line_of_three_stores_and_forwards_while_the_middle_is_down() {
    let mut nodes = neighbourhood(&["127.0.0.1"; 3], &[(0, 1), (1, 2)]).await;
    let u1 = register(&nodes[0], crate::common::ALICE, KeyType::P256).await;
    let u3 = register(&nodes[2], crate::common::CAROL, KeyType::P256).await;
    eventually("server 1 learns the user of server 3", || {
        sees(&u1.client, &u3.phone)
    })
    .await;

    nodes[1].stop().await;
    let session = u1.client.login().await.expect("login on server 1");
    for i in 0..5 {
        session
            .send(&u3.phone, &format!("message {i}"))
            .await
            .expect("accepted while server 2 is down");
    }
    session.close().await;
    assert_eq!(
        nodes[0].count("SELECT count(*) FROM outbound_queue").await,
        5
    );

    nodes[1].start().await;
    let texts = fetch_n(&u3, 5).await;
    let expected: Vec<String> = (0..5).map(|i| format!("message {i}")).collect();
    assert_eq!(texts, expected, "all delivered, once, in order");
    eventually("server 1's outbound queue drains", || async {
        nodes[0].count("SELECT count(*) FROM outbound_queue").await == 0
    })
    .await;
    eventually("server 2's outbound queue drains", || async {
        nodes[1].count("SELECT count(*) FROM outbound_queue").await == 0
    })
    .await;
}

/// Registers one user on each server (Alice on the first, Bob on the
/// second, …) and waits until every server knows every user.
async fn one_user_per_server(nodes: &[Node]) -> Vec<TestUser> {
    let phones = [
        crate::common::ALICE,
        crate::common::BOB,
        crate::common::CAROL,
        crate::common::DAVE,
    ];
    assert!(nodes.len() <= phones.len(), "more servers than test phones");
    let mut users = Vec::new();
    for (node, phone) in nodes.iter().zip(phones) {
        users.push(register(node, phone, KeyType::P256).await);
    }
    for u in &users {
        for other in &users {
            eventually("every server learns every user", || {
                sees(&u.client, &other.phone)
            })
            .await;
        }
    }
    users
}

#[tokio::test]
async fn ring_of_four_delivers_once_without_loops() {
    let nodes = neighbourhood(&["127.0.0.1"; 4], &[(0, 1), (1, 2), (2, 3), (3, 0)]).await;
    let users = one_user_per_server(&nodes).await;
    for (i, u) in users.iter().enumerate() {
        let session = u.client.login().await.expect("login");
        for (j, other) in users.iter().enumerate() {
            if i != j {
                session
                    .send(&other.phone, &format!("{i}->{j}"))
                    .await
                    .expect("send around the ring");
            }
        }
        session.close().await;
    }
    for (j, u) in users.iter().enumerate() {
        let mut texts = fetch_n(u, 3).await;
        texts.sort();
        let mut expected: Vec<String> = (0..4)
            .filter(|&i| i != j)
            .map(|i| format!("{i}->{j}"))
            .collect();
        expected.sort();
        assert_eq!(texts, expected, "user {j} gets each message once");
    }
    for node in &nodes {
        eventually("outbound queues drain", || async {
            node.count("SELECT count(*) FROM outbound_queue").await == 0
        })
        .await;
        assert_eq!(
            node.count("SELECT count(*) FROM message_queue").await,
            0,
            "nothing left over or duplicated"
        );
    }
}

/// Server files with a link port of the server's choosing and links to
/// `neighbours`.
pub(crate) fn linked_files(neighbours: &[(SocketAddr, Option<Fingerprint>)]) -> ServerFiles {
    let mut files = ServerFiles::new();
    files.set_links(0, neighbours);
    files
}

/// Where a started server listens for links.
pub(crate) fn link_addr_of(server: &crate::process::ServerProcess) -> SocketAddr {
    server.link_addr.expect("the server listens for links")
}

#[tokio::test]
async fn a_neighbour_with_the_wrong_key_is_refused() {
    let files_b = linked_files(&[]);
    let b = files_b.start();
    let wrong = Fingerprint::of_spki(b"not the key of server b");
    let files_a = linked_files(&[(link_addr_of(&b), Some(wrong))]);
    let a = files_a.start();
    eventually("server a logs the refusal", || async {
        files_a.log_text().contains("presented an unexpected key")
    })
    .await;
    let log = files_a.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("presented an unexpected key"))
        .unwrap();
    assert!(
        line.contains(&wrong.to_hex()),
        "the log names the expected key: {line}"
    );
    // Server a still serves its own users.
    let alice = register(&a, crate::common::ALICE, KeyType::P256).await;
    assert!(sees(&alice.client, &alice.phone).await);
}

#[tokio::test]
async fn kill_9_with_an_outbound_queue_loses_nothing() {
    // Each server's config names the other's link address, known only once
    // it runs: start b alone, then a linked to it, then b again linked to a.
    // Both keep their ports for the restarts below.
    let mut files_b = linked_files(&[]);
    let mut b_alone = files_b.start();
    let b_link = link_addr_of(&b_alone);
    let mut files_a = linked_files(&[(b_link, None)]);
    let mut a = files_a.start();
    let a_link = link_addr_of(&a);
    files_a.set_links(a_link.port(), &[(b_link, None)]);
    files_b.set_links(b_link.port(), &[(a_link, None)]);
    assert!(b_alone.terminate().success(), "b stops to be reconfigured");
    let mut b = files_b.start();
    let alice = register(&a, crate::common::ALICE, KeyType::P256).await;
    let bob = register(&b, crate::common::BOB, KeyType::P256).await;
    eventually("server a learns bob", || sees(&alice.client, &bob.phone)).await;

    b.kill_9();
    let session = alice.client.login().await.expect("alice logs in");
    let n = 20;
    for i in 0..n {
        session
            .send(&bob.phone, &format!("queued {i}"))
            .await
            .expect("accepted into the outbound queue");
    }
    drop(session);
    a.kill_9();

    let _a = files_a.start();
    let b = files_b.start();
    let bob_again = TestUser {
        client: bob.client_for(&b).await,
        ..bob
    };
    let texts = fetch_n(&bob_again, n).await;
    let expected: Vec<String> = (0..n).map(|i| format!("queued {i}")).collect();
    assert_eq!(
        texts, expected,
        "every acknowledged message arrives once, in order"
    );
}

#[tokio::test]
async fn a_broadcast_reaches_every_connected_user_once() {
    let nodes = neighbourhood(&["127.0.0.1"; 3], &[(0, 1), (1, 2), (2, 0)]).await;
    let users = one_user_per_server(&nodes).await;
    let mut listeners = Vec::new();
    for u in &users[1..] {
        listeners.push(u.client.login().await.expect("login"));
    }
    // Presence reaches the author's server before the broadcast matters
    // only for `list`; broadcasts go to whoever is connected now.
    let author = users[0].client.login().await.expect("login");
    let first = author
        .broadcast("hello, neighbourhood")
        .await
        .expect("broadcast");
    let second = author.broadcast("second").await.expect("broadcast");
    for session in &mut listeners {
        let mut seen = Vec::new();
        while !seen.contains(&second) {
            match within("a broadcast", session.conn.next_event())
                .await
                .expect("connection open")
            {
                Event::Broadcast(b) => {
                    session
                        .verify_broadcast(&b)
                        .await
                        .expect("the author's signature verifies");
                    seen.push(b.id);
                }
                Event::Message(_) => {}
            }
        }
        while let Some(event) = session.conn.try_next_event() {
            if let Event::Broadcast(b) = event {
                seen.push(b.id);
            }
        }
        assert_eq!(
            seen.iter().filter(|id| **id == first).count(),
            1,
            "the first broadcast arrives once"
        );
        assert_eq!(
            seen.iter().filter(|id| **id == second).count(),
            1,
            "the second broadcast arrives once"
        );
    }
}

/// Sends one link message on a raw link.
pub(crate) async fn send_link(
    stream: &mut carrier::tls::ClientTlsStream,
    m: &carrier::protocol::link::LinkMessage,
) {
    use tokio::io::AsyncWriteExt;
    carrier::protocol::write_frame(stream, &serde_json::to_vec(m).unwrap())
        .await
        .unwrap();
    stream.flush().await.unwrap();
}

/// Two linked servers, the first of which also pins the key of a hostile
/// neighbour (returned) that the test plays by hand.
pub(crate) async fn beside_a_hostile_neighbour() -> (Vec<Node>, carrier::crypto::Identity) {
    let hostile = carrier::crypto::Identity::generate(KeyType::P256);
    let mut nodes = neighbourhood(&["127.0.0.1"; 2], &[(0, 1)]).await;
    let victim = &mut nodes[0];
    victim.stop().await;
    victim.config.neighbours.push(NeighbourConfig {
        address: "127.0.0.1:9".into(),
        fingerprint: Some(hostile.fingerprint()),
    });
    victim.start().await;
    (nodes, hostile)
}

/// A link to `node` as the server whose key is `key`.
pub(crate) async fn link_as(
    key: &carrier::crypto::Identity,
    node: &Node,
) -> carrier::tls::ClientTlsStream {
    let (link, _) = carrier::tls::connect_link(
        &node.link_addr.to_string(),
        &key.pkcs8_der(),
        carrier::tls::Pin::Expect(node.fingerprint),
    )
    .await
    .expect("the hostile neighbour links");
    link
}

#[tokio::test]
async fn a_hostile_neighbour_cannot_date_entries_ahead_or_poison_a_queue() {
    use carrier::crypto::Identity;
    use carrier::protocol::link::{DirectoryEntry, LinkMessage, Relayed};
    use carrier::protocol::{B64, signed};

    let (nodes, hostile) = beside_a_hostile_neighbour().await;
    let alice = register(&nodes[0], crate::common::ALICE, KeyType::P256).await;
    let bob = register(&nodes[1], crate::common::BOB, KeyType::P256).await;
    eventually("the victim learns bob", || sees(&alice.client, &bob.phone)).await;

    let mut link = link_as(&hostile, &nodes[0]).await;
    // An entry claiming alice, signed by the hostile server as her home and
    // dated a day ahead: it would outrank every later real registration.
    let mallory_key = Identity::generate(KeyType::P256).public_key().to_spki_der();
    let home_key = hostile.public_key().to_spki_der();
    let registered_at = now_ms() + 86_400_000;
    let bytes = signed::directory_entry_bytes(
        &alice.phone,
        "p256",
        &mallory_key,
        registered_at,
        &home_key,
        "evil",
    );
    let entry = DirectoryEntry {
        phone: alice.phone.clone(),
        key_type: KeyType::P256,
        public_key: B64(mallory_key),
        home_key: B64(home_key),
        home_name: "evil".into(),
        registered_at,
        signature: B64(hostile.sign(&bytes)),
        hops: 0,
    };
    send_link(
        &mut link,
        &LinkMessage::Directory {
            entries: vec![entry],
        },
    )
    .await;
    // A relay towards bob whose path is one huge string: were it stored, it
    // could never be forwarded and would block the queue behind it.
    let sealer = alice.client.login().await.expect("alice logs in");
    let (id, request) = crate::common::sealed_for(&sealer, &bob.phone, "poison").await;
    sealer.close().await;
    let carrier::protocol::Request::DeviceSend { envelope, .. } = request else {
        panic!("a device_send");
    };
    let relay = Relayed {
        id,
        from: alice.phone.clone(),
        to: bob.phone.clone(),
        device: 1,
        sender_device: 1,
        envelope,
        received_at: 0,
        expires_at: i64::MAX,
        path: vec!["f".repeat(100_000)],
    };
    send_link(&mut link, &LinkMessage::Relay(relay)).await;
    let refusal = next_link_message(&mut link, "the relay is refused", |m| match m {
        LinkMessage::RelayRefused { id, code, .. } => Some((id, code)),
        _ => None,
    })
    .await;
    assert_eq!(refusal, (id, carrier::protocol::ErrorCode::BadEnvelope));
    assert_eq!(
        nodes[0].count("SELECT count(*) FROM outbound_queue").await,
        0,
        "nothing poisonous was queued"
    );
    let session = alice
        .client
        .login()
        .await
        .expect("alice still logs in at her home");
    let listed = session.list().await.unwrap();
    let alice_entry = listed.iter().find(|u| u.phone == alice.phone).unwrap();
    assert_eq!(
        alice_entry.fingerprint, alice.fingerprint,
        "the future-dated entry was refused"
    );
    session.close().await;
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Reads link frames until one that `pick` takes.
pub(crate) async fn next_link_message<T>(
    link: &mut carrier::tls::ClientTlsStream,
    what: &str,
    mut pick: impl FnMut(carrier::protocol::link::LinkMessage) -> Option<T>,
) -> T {
    within(what, async {
        loop {
            let frame =
                carrier::protocol::read_frame(link, carrier::protocol::link::MAX_LINK_FRAME)
                    .await
                    .expect("link readable")
                    .expect("link open");
            if let Some(found) = serde_json::from_slice(&frame).ok().and_then(&mut pick) {
                return found;
            }
        }
    })
    .await
}

/// Two other valid signatures of a directory statement that `home` signed:
/// its high-S twin (r, n − s), and a second low-S signature by the home's
/// key with a fresh nonce, which every verifier accepts.
fn other_signatures(
    home: &carrier::crypto::Identity,
    statement: &[u8],
    signature: &[u8],
) -> [(&'static str, Vec<u8>); 2] {
    use p256::ecdsa::Signature;
    use p256::ecdsa::signature::RandomizedSigner;
    use p256::pkcs8::DecodePrivateKey;
    let sig = Signature::from_slice(signature).expect("a P-256 signature");
    let (r, s) = sig.split_scalars();
    let twin = Signature::from_scalars(r.to_bytes(), (-*s).to_bytes()).expect("a signature");
    let key = p256::ecdsa::SigningKey::from_pkcs8_der(&home.pkcs8_der()).expect("the home's key");
    let mut rng = rand::rand_core::UnwrapErr(rand::rngs::SysRng);
    let fresh: Signature = key.sign_with_rng(&mut rng, statement);
    [
        ("the high-S twin", twin.to_vec()),
        (
            "a second signature by the home",
            fresh.normalize_s().to_vec(),
        ),
    ]
}

#[tokio::test]
async fn a_neighbour_cannot_steal_a_route_by_resigning_an_entry() {
    use carrier::crypto::Identity;
    use carrier::protocol::B64;
    use carrier::protocol::link::LinkMessage;

    let (nodes, hostile) = beside_a_hostile_neighbour().await;
    let carol = register(&nodes[0], crate::common::CAROL, KeyType::P256).await;
    let alice = register(&nodes[1], crate::common::ALICE, KeyType::P256).await;
    eventually("the victim learns alice", || {
        sees(&carol.client, &alice.phone)
    })
    .await;
    let honest = nodes[0].route_to(&alice.phone).await;
    assert_eq!(
        (honest.0.clone(), honest.1),
        (Some(nodes[1].fingerprint.to_hex()), 1)
    );

    let mut link = link_as(&hostile, &nodes[0]).await;
    let entry = next_link_message(&mut link, "the victim's directory", |m| match m {
        LinkMessage::Directory { entries } => entries.into_iter().find(|e| e.phone == alice.phone),
        _ => None,
    })
    .await;
    let statement = carrier::protocol::signed::directory_entry_bytes(
        &entry.phone,
        entry.key_type.as_str(),
        &entry.public_key.0,
        entry.registered_at,
        &entry.home_key.0,
        &entry.home_name,
    );
    let home = Identity::load(
        &nodes[1].config.data_dir.join(carrier::server::KEY_FILE),
        None,
    )
    .expect("the home's key loads");
    for (what, signature) in other_signatures(&home, &statement, &entry.signature.0) {
        assert_ne!(signature, entry.signature.0, "{what}");
        let forged = carrier::protocol::link::DirectoryEntry {
            signature: B64(signature),
            hops: 5,
            ..entry.clone()
        };
        send_link(
            &mut link,
            &LinkMessage::Directory {
                entries: vec![forged],
            },
        )
        .await;
        // The link handles frames in order: once the ping is answered, the
        // directory frame before it has been applied.
        send_link(&mut link, &LinkMessage::Ping).await;
        next_link_message(&mut link, "a pong", |m| {
            matches!(m, LinkMessage::Pong).then_some(())
        })
        .await;
        assert_eq!(
            nodes[0].route_to(&alice.phone).await,
            honest,
            "{what} at 5 hops changed the route or the statement held"
        );
    }

    let session = carol.client.login().await.expect("carol logs in");
    session
        .send(&alice.phone, "by the honest route")
        .await
        .expect("send");
    session.close().await;
    assert_eq!(fetch_n(&alice, 1).await, ["by the honest route"]);
}

#[tokio::test]
async fn a_phone_twice_in_one_directory_frame_keeps_the_later_registration() {
    use carrier::crypto::Identity;
    use carrier::protocol::link::{DirectoryEntry, LinkMessage};
    use carrier::protocol::{B64, signed};

    let (nodes, hostile) = beside_a_hostile_neighbour().await;
    let alice = register(&nodes[0], crate::common::ALICE, KeyType::P256).await;
    let mut link = link_as(&hostile, &nodes[0]).await;
    let far = "+31612345678";
    let entry = |phone: &str, key: &Identity, registered_at: i64| {
        let key = key.public_key().to_spki_der();
        let home_key = hostile.public_key().to_spki_der();
        let bytes =
            signed::directory_entry_bytes(phone, "p256", &key, registered_at, &home_key, "far");
        DirectoryEntry {
            phone: phone.into(),
            key_type: KeyType::P256,
            public_key: B64(key),
            home_key: B64(home_key),
            home_name: "far".into(),
            registered_at,
            signature: B64(hostile.sign(&bytes)),
            hops: 0,
        }
    };
    let (earlier, later) = (
        Identity::generate(KeyType::P256),
        Identity::generate(KeyType::P256),
    );
    let now = now_ms();
    let entries = vec![entry(far, &later, now), entry(far, &earlier, now - 1000)];
    send_link(&mut link, &LinkMessage::Directory { entries }).await;
    // Frames on one link are taken in order: once the next one's entry is
    // listed, the first frame has been taken.
    let marker = "+31687654321";
    let entries = vec![entry(marker, &later, now)];
    send_link(&mut link, &LinkMessage::Directory { entries }).await;
    eventually("the second frame is taken", || sees(&alice.client, marker)).await;

    let session = alice.client.login().await.expect("alice logs in");
    let listed = session.list().await.unwrap();
    let held = listed.iter().find(|u| u.phone == far).unwrap();
    assert_eq!(
        held.fingerprint,
        later.public_key().fingerprint().to_hex(),
        "the earlier registration, later in the frame, changed nothing"
    );
    session.close().await;
}
