//! Graceful shutdown: prompt when idle; connected sessions are told; sends
//! in flight are finished, and what was acknowledged is kept.

use std::collections::HashSet;

use carrier::protocol::{ErrorCode, KeyType, Request, Response};

use crate::common::*;
use crate::devices::linking::Opener;
use crate::wire::Wire;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_server_stops_promptly() {
    let mut server = spawn_server().await;
    // A client came and went; nothing is connected or in flight now.
    let mut w = Wire::connect(&server).await;
    assert!(w.ping().await);
    assert!(matches!(w.call(Request::Quit).await, Response::Bye));
    assert!(
        w.read().await.is_none(),
        "the connection stays open after quit"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_sends_in_flight_and_tells_sessions() {
    let mut server = spawn_server().await;
    let alice = register(&server, ALICE, KeyType::P256).await;
    let bob = register(&server, BOB, KeyType::P256).await;
    let mut bob_wire = Wire::connect(&server).await;
    assert!(matches!(
        bob_wire.login(BOB, &bob.identity()).await,
        Response::LoggedIn { .. }
    ));

    let a = alice.client.login().await.expect("Alice logs in");
    let conn = &a.conn;
    let mut answers = Vec::new();
    for n in 1..=50 {
        let (id, request) = sealed_for(&a, BOB, &format!("message {n}")).await;
        answers.push((
            id,
            conn.start(request).await.expect("the request is written"),
        ));
    }
    server.stop().await;

    let mut accepted = HashSet::new();
    for (id, answer) in answers {
        match within("an answer or a closed connection", answer).await {
            Ok(Response::Accepted { id: got }) => {
                assert_eq!(got, id);
                accepted.insert(id);
            }
            Ok(Response::Error {
                code: ErrorCode::ShuttingDown,
                ..
            })
            | Err(_) => {}
            Ok(other) => panic!("a send in flight at shutdown was answered {other:?}"),
        }
    }
    // The idle session was told, then closed.
    let told = bob_wire.answer(None).await;
    expect_error(
        told,
        ErrorCode::ShuttingDown,
        "a logged-in session at shutdown",
    );
    assert!(
        bob_wire.read().await.is_none(),
        "the connection stayed open after shutting_down"
    );

    server.restart().await;
    let mut b = bob
        .client
        .login()
        .await
        .expect("Bob logs in after the restart");
    let (got, refused) = within("fetch", b.fetch()).await.expect("fetch");
    assert!(refused.is_empty(), "{refused:?}");
    let got: HashSet<_> = got.iter().map(|m| m.id).collect();
    let lost: Vec<_> = accepted.difference(&got).collect();
    assert!(
        lost.is_empty(),
        "acknowledged sends lost at shutdown: {lost:?}"
    );
    b.close().await;
    server.stop().await;
}

/// A link code held open, and a new device waiting on it, hold handles to
/// their connections in the server's rendezvous for up to 10 minutes;
/// neither may hold a graceful shutdown: both are told and closed at once
/// (`stop` fails the test if the shutdown takes 15 s; these waited 30).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_link_code_does_not_hold_the_shutdown() {
    let mut server = spawn_server().await;
    let mut opener = Opener::open(&server).await;
    let (_tablet, ask) = opener.new_device();
    let mut newcomer = Wire::connect(&server).await;
    newcomer.send(ask).await;
    let pushed = opener.wire.read().await.expect("the request is pushed");
    assert!(
        matches!(pushed.response, Response::LinkRequested { .. }),
        "{pushed:?}"
    );

    server.stop().await;
    for (who, wire) in [
        ("the opener", &mut opener.wire),
        ("the new device", &mut newcomer),
    ] {
        assert_eq!(
            wire.told_before_closing().await,
            Some(ErrorCode::ShuttingDown),
            "{who} is told why its connection ends"
        );
    }
}

/// Once the server has ended a connection, a request on it fails instead of
/// waiting forever for an answer nobody will read. The peer here is a TLS
/// endpoint that says goodbye (close_notify, FIN) but has not yet released
/// the socket, so the client's write still succeeds: the state a real
/// server's socket is in between its shutdown and its close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_after_the_server_ended_the_connection_fails() {
    use tokio::io::AsyncWriteExt;

    let key = carrier::crypto::Identity::generate(KeyType::P256);
    let acceptor =
        tokio_rustls::TlsAcceptor::from(carrier::tls::server_config(&key.pkcs8_der()).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let peer = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await.expect("handshake");
        tls.shutdown().await.expect("close_notify and FIN");
        let _ = released.await;
    });

    let pin = carrier::tls::Pin::Expect(key.fingerprint());
    let mut conn = carrier::client::Connection::connect(&addr, pin)
        .await
        .expect("connects");
    assert!(
        within("the end of the connection", conn.next_event())
            .await
            .is_none()
    );
    let answer =
        tokio::time::timeout(std::time::Duration::from_secs(5), conn.call(Request::Ping)).await;
    assert!(
        matches!(answer, Ok(Err(_))),
        "a request on a connection the server ended: {answer:?} (Err(Elapsed) = it hangs forever)"
    );
    let _ = release.send(());
    peer.await.unwrap();
}
