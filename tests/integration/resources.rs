//! What one client, user or address may take of a server, and what happens
//! past each limit: connections past the server's capacity are told
//! `server_busy` at once instead of waiting in the listen backlog; a sender
//! past their rate is told `rate_limited` and when to retry; a session that
//! stops reading is closed once its unsent messages (or all of its user's
//! sessions') reach their bound, while broadcasts past it are only missed;
//! a user has a bounded number of sessions;
//! one address has a bounded rate of `register`.

use std::time::Duration;

use carrier::client::Session;
use carrier::crypto::Purpose;
use carrier::protocol::{
    self, B64, ErrorCode, KeyType, Request, RequestFrame, Response, ResponseFrame,
};
use carrier::rate::Rate;
use carrier::tls::{self, ClientTlsStream, Pin};
use tokio::io::AsyncWriteExt;

use crate::common::*;
use crate::process::{ServerFiles, ServerProcess, run, stderr_of};

/// The next frame from the server, as a response; `None` once it closed.
async fn next_response(stream: &mut ClientTlsStream) -> Option<ResponseFrame> {
    let frame = within(
        "a frame from the server",
        protocol::read_frame(stream, protocol::MAX_RESPONSE_FRAME),
    )
    .await
    .expect("the connection reads cleanly")?;
    Some(serde_json::from_slice(&frame).expect("a response frame"))
}

/// Whether a new connection is served: it answers `ping` with `pong`.
async fn served(server: &ServerProcess) -> bool {
    let (mut stream, _) = tls::connect(&server.addr, Pin::Expect(server.fingerprint))
        .await
        .expect("the handshake completes");
    let ping = RequestFrame {
        seq: Some(1),
        request: Request::Ping,
    };
    protocol::write_frame(&mut stream, &serde_json::to_vec(&ping).unwrap())
        .await
        .unwrap();
    stream.flush().await.unwrap();
    matches!(
        next_response(&mut stream).await,
        Some(ResponseFrame {
            response: Response::Pong,
            ..
        })
    )
}

/// Logged-in sessions holding every slot the open-file limit leaves: new
/// connections are told `server_busy` at once.
#[tokio::test]
async fn connections_past_the_open_file_limit_are_turned_away_at_once() {
    // The server keeps 128 descriptors for itself and takes as many
    // connections as the rest allow.
    const OPEN_FILES: u64 = 160;
    let slots = (OPEN_FILES - 128) as usize;
    let files = ServerFiles::new();
    files.set_extra_config("", &format!("[limits]\nmax_sessions_per_user = {slots}"));
    let server = files.start_with_open_file_limit(OPEN_FILES);
    let pin = Pin::Expect(server.fingerprint);
    let alice = register(&server, ALICE, KeyType::P256).await;
    let mut held = Vec::new();
    for i in 0..slots {
        // Logged in, so that no newcomer closes it to take its slot.
        let mut session = crate::wire::Wire::connect(&server).await;
        let answer = session.login(ALICE, &alice.identity()).await;
        assert!(
            matches!(answer, Response::LoggedIn { .. }),
            "session {i}: {answer:?}"
        );
        held.push(session);
    }
    let turned_away = 8;
    for i in 0..turned_away {
        let (mut stream, _) = tls::connect(&server.addr, pin)
            .await
            .unwrap_or_else(|e| panic!("connection {i} past the limit: {e}"));
        match next_response(&mut stream).await {
            Some(ResponseFrame {
                re: None,
                response: Response::Error { code, .. },
            }) => assert_eq!(code, ErrorCode::ServerBusy, "connection {i}"),
            other => panic!("connection {i} past the limit got {other:?}"),
        }
        assert!(next_response(&mut stream).await.is_none(), "then closed");
    }
    let warnings = files
        .log_text()
        .matches("every connection slot is taken")
        .count();
    assert!(
        (1..turned_away).contains(&warnings),
        "{warnings} warnings for {turned_away} connections turned away"
    );

    // A slot set free serves again.
    drop(held.pop());
    within("a freed slot serves a new connection", async {
        while !served(&server).await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// A server the system refuses the threads it is configured for (here for
/// want of address space for their stacks; a limit on processes does the
/// same) exits at once with a sentence naming the key, rather than hanging.
#[test]
fn a_server_refused_its_threads_exits_with_a_sentence() {
    let files = ServerFiles::new();
    files.set_extra_config("worker_threads = 1024", "");
    // A gibibyte holds the server but not 1,024 stacks of 2 MiB.
    let mut cmd = files.command_with_address_space(1 << 20);
    let out = run(&mut cmd, "carrier-server without room for its threads");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = stderr_of(&out);
    assert!(
        err.contains("cannot start the runtime's threads") && err.contains("worker_threads"),
        "{err}"
    );
}

/// Sends `text` on `session` to `to`'s one device.
async fn send_text(session: &Session<'_>, to: &TestUser, text: &str) -> Response {
    let (_, send) = sealed_for(session, &to.phone, text).await;
    let answer = session.conn.start(send).await.expect("the request is sent");
    within("an answer", answer).await.expect("an answer")
}

/// The wait a `rate_limited` answer asks for; panics naming `case` on
/// any other answer.
fn retry_after(answer: Response, case: &str) -> u64 {
    match answer {
        Response::Error {
            code: ErrorCode::RateLimited,
            retry_after_ms: Some(ms),
            message,
            ..
        } => {
            assert!(message.contains(" in "), "{case}: {message}");
            ms
        }
        other => panic!("{case}: expected rate_limited with retry_after_ms, got {other:?}"),
    }
}

#[tokio::test]
async fn a_sender_past_their_rate_waits_and_others_do_not() {
    let server = spawn_server_with(|c| {
        c.limits.send_messages = Rate::per_second(2, 5);
    })
    .await;
    let alice = register(&server, ALICE, KeyType::P256).await;
    let bob = register(&server, BOB, KeyType::P256).await;
    let carol = register(&server, CAROL, KeyType::P256).await;
    let a = alice.client.login().await.unwrap();
    // The server's clock stands still: the bucket refills only when the
    // test moves it.
    for i in 0..5 {
        let answer = send_text(&a, &bob, &format!("burst {i}")).await;
        assert!(
            matches!(answer, Response::Accepted { .. }),
            "{i}: {answer:?}"
        );
    }
    let wait = retry_after(send_text(&a, &bob, "one too many").await, "past the burst");
    assert_eq!(wait, 500, "one message every 500 ms");
    assert_eq!(
        server.queued_for(BOB).await,
        5,
        "the refused one is not stored"
    );
    // Another session of the same sender shares the bucket.
    let again = alice.client.login().await.unwrap();
    retry_after(
        send_text(&again, &bob, "from elsewhere").await,
        "second session",
    );
    // Other senders are not slowed down.
    let c = carol.client.login().await.unwrap();
    let answer = send_text(&c, &bob, "hello").await;
    assert!(matches!(answer, Response::Accepted { .. }), "{answer:?}");

    server.clock.advance_ms(wait as i64);
    let answer = send_text(&a, &bob, "after the wait").await;
    assert!(matches!(answer, Response::Accepted { .. }), "{answer:?}");
}

#[tokio::test]
async fn envelope_bytes_and_broadcasts_count_against_the_rate() {
    let server = spawn_server_with(|c| {
        c.limits.send_bytes = Rate::per_second(10_000, protocol::MAX_ENVELOPE_BYTES as u64);
    })
    .await;
    let alice = register(&server, ALICE, KeyType::P256).await;
    let bob = register(&server, BOB, KeyType::P256).await;
    let a = alice.client.login().await.unwrap();
    let big = "x".repeat(40_000);
    let mut sizes = Vec::new();
    let mut answers = Vec::new();
    for _ in 0..2 {
        let (_, send) = sealed_for(&a, &bob.phone, &big).await;
        if let Request::DeviceSend { envelope, .. } = &send {
            sizes.push(envelope.0.len() as u64);
        }
        answers.push(
            within("an answer", a.conn.start(send).await.unwrap())
                .await
                .unwrap(),
        );
    }
    let second = answers.pop().unwrap();
    let first = answers.pop().unwrap();
    assert!(matches!(first, Response::Accepted { .. }), "{first:?}");
    let wait = retry_after(second, "a second large one");
    // The padded envelopes (about 66 KB each) overrun the burst by this
    // many bytes, refilled at 10 000 a second.
    let short = sizes.iter().sum::<u64>() - protocol::MAX_ENVELOPE_BYTES as u64;
    let expected = short / 10;
    assert!(
        (expected * 8 / 10..=expected * 12 / 10 + 100).contains(&wait),
        "{short} bytes short at 10 000 a second: {wait} ms, not about {expected}"
    );
    // A broadcast spends the same bytes.
    let session = alice.client.login().await.expect("login");
    let err = session.broadcast(&big).await.expect_err("rate limited");
    assert_eq!(server_code(&err), Some(ErrorCode::RateLimited), "{err}");
}

/// Writes one request frame on a raw connection.
async fn write_request(stream: &mut ClientTlsStream, request: Request) {
    let frame = RequestFrame {
        seq: Some(1),
        request,
    };
    protocol::write_frame(stream, &serde_json::to_vec(&frame).unwrap())
        .await
        .unwrap();
    stream.flush().await.unwrap();
}

/// Logs `who` in on a raw connection, which the caller may then leave
/// unread; returns the server's answer to `login` and the connection.
async fn raw_login(server: &impl Reachable, who: &TestUser) -> (Response, ClientTlsStream) {
    let (mut stream, _) = tls::connect(&server.addr(), Pin::Expect(server.fingerprint()))
        .await
        .expect("connects");
    let exporter = tls::auth_exporter(stream.get_ref().1).expect("an exporter");
    write_request(&mut stream, Request::Challenge).await;
    let Some(ResponseFrame {
        response: Response::Challenge { nonce },
        ..
    }) = next_response(&mut stream).await
    else {
        panic!("expected a challenge");
    };
    let signature = proof(
        &who.identity(),
        Purpose::Login,
        &exporter,
        &nonce.0,
        &who.phone,
    );
    write_request(
        &mut stream,
        Request::Login {
            phone: who.phone.clone(),
            signature: B64(signature),
        },
    )
    .await;
    let answer = next_response(&mut stream)
        .await
        .expect("an answer")
        .response;
    (answer, stream)
}

/// A connection logged in by hand as `device`, with nothing reading it.
async fn raw_device_login(
    server: &impl Reachable,
    device: &crate::devices::client::Device,
) -> (Response, ClientTlsStream) {
    let (mut stream, _) = tls::connect(&server.addr(), Pin::Expect(server.fingerprint()))
        .await
        .expect("connects");
    let exporter = tls::auth_exporter(stream.get_ref().1).expect("an exporter");
    write_request(&mut stream, Request::Challenge).await;
    let Some(ResponseFrame {
        response: Response::Challenge { nonce },
        ..
    }) = next_response(&mut stream).await
    else {
        panic!("expected a challenge");
    };
    let nonce: [u8; 32] = nonce.0.try_into().expect("a 32-byte nonce");
    let signature = device.local.sign_login(&exporter, &nonce);
    write_request(
        &mut stream,
        Request::DeviceLogin {
            phone: device.phone.clone(),
            device: device.id,
            signature: B64(signature.to_vec()),
        },
    )
    .await;
    let answer = next_response(&mut stream)
        .await
        .expect("an answer")
        .response;
    (answer, stream)
}

/// Reads whatever the server had queued until it closes the connection.
async fn drain_until_closed(stream: &mut ClientTlsStream, what: &str) {
    within(what, async {
        while let Ok(Some(_)) = protocol::read_frame(stream, protocol::MAX_RESPONSE_FRAME).await {}
    })
    .await;
}

/// Limits that let one sender flood: what is measured is the recipient's side.
fn flood_allowed(c: &mut carrier::config::ServerConfig) {
    c.limits.send_messages = Rate::per_second(1_000_000, 1_000_000);
    c.limits.send_bytes = Rate::per_second(1 << 40, 1 << 40);
    c.limits.session_backlog_bytes = protocol::MAX_RESPONSE_FRAME;
    c.limits.user_backlog_bytes = 2 * protocol::MAX_RESPONSE_FRAME;
}

/// Enough bytes of pushes to fill a session's bound and whatever the
/// kernel's socket buffers on both sides hold besides.
const FLOOD_BYTES: usize = 24 << 20;
const LARGE_TEXT: usize = 60_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_stops_reading_is_closed_and_loses_nothing() {
    let server = spawn_server_with(flood_allowed).await;
    let alice = register(&server, ALICE, KeyType::P256).await;
    // Bob's device, whose key the test holds, logs in by hand.
    let (_, _, mut bobs) = crate::devices::with_devices(&server, BOB, 1).await;
    let (bob_device, publishing) = bobs.remove(0);
    publishing.close().await;
    let (answer, mut silent) = raw_device_login(&server, &bob_device).await;
    assert!(matches!(answer, Response::LoggedIn { .. }), "{answer:?}");

    let alice_session = alice.client.login().await.unwrap();
    let a = &alice_session.conn;
    let text = "m".repeat(LARGE_TEXT);
    let n = FLOOD_BYTES / LARGE_TEXT;
    let mut answers = Vec::new();
    for _ in 0..n {
        let (_, request) = sealed_for(&alice_session, BOB, &text).await;
        answers.push(a.start(request).await.expect("sent"));
    }
    for answer in answers {
        let answer = within("an answer", answer).await.expect("an answer");
        assert!(matches!(answer, Response::Accepted { .. }), "{answer:?}");
    }
    // The push that did not fit closed Bob's session before Alice's send
    // was answered: he is no longer online, and the connection ends.
    let list = Request::List {
        after: None,
        limit: None,
    };
    let Response::Users { users, .. } = a.call(list).await.expect("list") else {
        panic!("expected users");
    };
    let listed = users
        .iter()
        .find(|u| u.phone == BOB)
        .expect("bob is listed");
    assert!(!listed.online, "bob's silent session is still logged in");
    drain_until_closed(&mut silent, "the server to close the silent session").await;
    assert_eq!(
        server.queued_for(BOB).await,
        n as i64,
        "every message waits for a fetch"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sessions_flooded_with_broadcasts_miss_them_and_stay_open() {
    let server = spawn_server_with(flood_allowed).await;
    let alice = register(&server, ALICE, KeyType::P256).await;
    let bob = register(&server, BOB, KeyType::P256).await;
    let mut silent = Vec::new();
    for _ in 0..4 {
        let (answer, stream) = raw_login(&server, &bob).await;
        assert!(matches!(answer, Response::LoggedIn { .. }), "{answer:?}");
        silent.push(stream);
    }
    let session = alice.client.login().await.expect("alice logs in");
    let text = "b".repeat(LARGE_TEXT);
    for _ in 0..FLOOD_BYTES / LARGE_TEXT {
        session.broadcast(&text).await.expect("broadcast");
    }
    let users = session.list().await.expect("list");
    let listed = users
        .iter()
        .find(|u| u.phone == BOB)
        .expect("bob is listed");
    assert!(listed.online, "bob's silent sessions were closed");
    for (i, stream) in silent.iter_mut().enumerate() {
        write_request(stream, Request::Ping).await;
        read_until_pong(stream, &format!("silent session {i} to answer a ping")).await;
    }
}

/// Reads what the server had queued until the answer to a `ping`; fails if
/// the server closes the connection first.
async fn read_until_pong(stream: &mut ClientTlsStream, what: &str) {
    within(what, async {
        loop {
            let frame = protocol::read_frame(stream, protocol::MAX_RESPONSE_FRAME)
                .await
                .expect("the connection reads cleanly")
                .expect("the server kept the session open");
            let frame: ResponseFrame = serde_json::from_slice(&frame).expect("a response frame");
            if matches!(frame.response, Response::Pong) {
                return;
            }
        }
    })
    .await;
}

#[tokio::test]
async fn sessions_per_user_are_limited() {
    let server = spawn_server_with(|c| c.limits.sessions_per_user = 2).await;
    let bob = register(&server, BOB, KeyType::P256).await;
    let (first, first_stream) = raw_login(&server, &bob).await;
    let (second, _second_stream) = raw_login(&server, &bob).await;
    for answer in [first, second] {
        assert!(matches!(answer, Response::LoggedIn { .. }), "{answer:?}");
    }
    let (third, _) = raw_login(&server, &bob).await;
    let message = expect_error(third, ErrorCode::RateLimited, "a third session");
    assert!(message.contains("2 sessions"), "{message}");
    // A session that ends makes room (once the server has seen it end).
    drop(first_stream);
    within("room for a new session", async {
        loop {
            match raw_login(&server, &bob).await.0 {
                Response::LoggedIn { .. } => break,
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await;
}

#[tokio::test]
async fn one_address_cannot_flood_registration() {
    let server = spawn_server_with(|c| c.register_per_address = Rate::per_minute(1, 3)).await;
    let id = carrier::crypto::Identity::generate(KeyType::P256);
    let mut w = crate::wire::Wire::connect(&server).await;
    for phone in [ALICE, BOB, "not a phone"] {
        // Every request counts, before anything else is looked at.
        let answer = w.register(phone, &id).await;
        assert!(
            !matches!(
                answer,
                Response::Error {
                    code: ErrorCode::RateLimited,
                    ..
                }
            ),
            "{phone}: {answer:?}"
        );
    }
    // A new connection from the same address shares the count.
    let mut other = crate::wire::Wire::connect(&server).await;
    let answer = other.register(CAROL, &id).await;
    let wait = retry_after(answer, "a fourth register from one address");
    assert_eq!(wait, 60_000, "one more a minute");
    assert!(server.try_code_for(CAROL).is_none(), "no code was sent");
    server.clock.advance_ms(60_000);
    let answer = other.register(CAROL, &id).await;
    assert!(matches!(answer, Response::CodeSent { .. }), "{answer:?}");
}

/// Connections that never log in cannot keep a client out: one that finds
/// every connection slot taken closes the oldest connection not logged in
/// (told `server_busy`), and logs in. Logged-in sessions are never closed
/// to make room, however many connections come after them.
#[tokio::test]
async fn connections_not_logged_in_yield_their_slots_to_new_ones() {
    use crate::wire::Wire;
    const SLOTS: usize = 6;

    let mut server = spawn_server_with(|c| c.max_connections = SLOTS).await;
    let alice = register(&server, ALICE, KeyType::P256).await;
    let bob = register(&server, BOB, KeyType::P256).await;
    let mut bob_session = bob.client.login().await.expect("bob logs in");
    // Idle connections from two addresses, as many as there are slots.
    let mut idle = Vec::new();
    for i in 0..SLOTS {
        let source = std::net::Ipv4Addr::new(127, 0, 0, 2 + (i % 2) as u8);
        idle.push(Wire::connect_from(&server, source.into()).await);
    }

    let session = alice.client.login().await.expect("alice logs in");
    let answer = send_text(&session, &bob, "past the crowd").await;
    assert!(matches!(answer, Response::Accepted { .. }), "{answer:?}");
    next_pushed_message(&mut bob_session.conn).await;
    let mut oldest = idle.remove(0);
    assert_eq!(
        oldest.told_before_closing().await,
        Some(ErrorCode::ServerBusy),
        "the oldest connection not logged in was closed for a newer one"
    );

    // A second crowd, each closing an older idle one: both sessions stay.
    for i in 0..SLOTS {
        let source = std::net::Ipv4Addr::new(127, 0, 0, 4 + (i % 2) as u8);
        idle.push(Wire::connect_from(&server, source.into()).await);
    }
    let mut newest = idle.pop().expect("the newest idle connection");
    assert!(newest.ping().await, "the newest connection is served");
    let answer = send_text(&session, &bob, "still here").await;
    assert!(matches!(answer, Response::Accepted { .. }), "{answer:?}");
    next_pushed_message(&mut bob_session.conn).await;
    session.close().await;
    bob_session.close().await;
    drop(idle);
    server.stop().await;
}

/// A registration under way (`register` answered, the user reading the
/// code) is closed last to make room: idle connections filling every slot
/// close each other, and each other's requests, before it.
#[tokio::test]
async fn a_registration_waiting_for_its_code_outlasts_idle_connections() {
    use crate::wire::Wire;
    const SLOTS: usize = 4;

    let mut server = spawn_server_with(|c| c.max_connections = SLOTS).await;
    let id = carrier::crypto::Identity::generate(KeyType::P256);
    let mut registering = Wire::connect(&server).await;
    let answer = registering.register(CAROL, &id).await;
    assert!(matches!(answer, Response::CodeSent { .. }), "{answer:?}");
    // Connections that asked something, then more that never do: each
    // past the limit closes one of the others, never the registration.
    let mut asking = Vec::new();
    for i in 0..SLOTS {
        let source = std::net::Ipv4Addr::new(127, 0, 0, 2 + (i % 2) as u8);
        let mut conn = Wire::connect_from(&server, source.into()).await;
        assert!(conn.ping().await, "connection {i} is served");
        asking.push(conn);
    }
    let mut idle = Vec::new();
    for i in 0..2 * SLOTS {
        let source = std::net::Ipv4Addr::new(127, 0, 0, 4 + (i % 2) as u8);
        idle.push(Wire::connect_from(&server, source.into()).await);
    }
    let mut newest = idle.pop().expect("the newest idle connection");
    assert!(newest.ping().await, "the newest connection is served");
    let code = server.code_for(CAROL);
    let answer = registering.verify(CAROL, &id, &code).await;
    assert!(
        matches!(answer, Response::Registered { .. }),
        "the registration was not closed: {answer:?}"
    );
    drop((asking, idle));
    server.stop().await;
}
