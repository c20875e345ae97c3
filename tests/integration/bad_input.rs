//! Hostile and broken input: each is answered with its stable error code,
//! changes nothing, and leaves the server (and other sessions) working.

use std::sync::Arc;

use carrier::client::{ClientError, Received, show};
use carrier::crypto::{Identity, Purpose};
use carrier::domain::MessageId;
use carrier::protocol::{self, B64, ErrorCode, KeyType, Request, Response};
use carrier::tls::ConnectError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;
use crate::wire::Wire;

/// Alice and Bob registered; Bob's session is up and kept through the test
/// to show other sessions are unaffected.
async fn setup() -> (TestServer, TestUser, TestUser) {
    let server = spawn_server().await;
    let alice = register(&server, ALICE, KeyType::P256).await;
    let bob = register(&server, BOB, KeyType::P256).await;
    (server, alice, bob)
}

/// Alice can still log in and send; Bob gets it.
async fn still_delivers(alice: &TestUser, bob: &TestUser, text: &str) {
    let a = alice.client.login().await.expect("Alice logs in");
    a.send(BOB, text).await.expect("Alice sends");
    a.close().await;
    let mut b = bob.client.login().await.expect("Bob logs in");
    let (got, refused): (Vec<Received>, _) = b.fetch().await.expect("Bob fetches");
    assert!(refused.is_empty(), "{refused:?}");
    assert_eq!(
        got.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(),
        [text]
    );
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_get_their_error_codes_and_the_connection_goes_on() {
    let (mut server, alice, bob) = setup().await;
    let mut w = Wire::connect(&server).await;
    let long_type = format!(r#"{{"seq":7,"type":"{}"}}"#, "x".repeat(5000));
    let send_bad_to = r#"{"seq":7,"type":"send","id":"00","to":5,"envelope":"AA=="}"#;
    let login_bad_b64 = r#"{"seq":7,"type":"login","phone":"+12025550101","signature":"***"}"#;
    let register_dsa = r#"{"seq":7,"type":"register","phone":"+12025550103","key_type":"dsa","public_key":"AA=="}"#;
    use ErrorCode::{BadRequest, MalformedJson, UnknownRequest};
    // (case, frame body, expected code, whether the answer echoes seq 7)
    let cases: &[(&str, &[u8], ErrorCode, bool)] = &[
        ("not JSON", b"{not json", MalformedJson, false),
        ("a JSON array", b"[1,2,3]", MalformedJson, false),
        (
            "binary garbage",
            &[0xff, 0xfe, 0x00, 0x01],
            MalformedJson,
            false,
        ),
        (
            "truncated JSON",
            br#"{"seq":7,"type":"ping""#,
            MalformedJson,
            false,
        ),
        ("no type", br#"{"seq":7}"#, BadRequest, true),
        (
            "a number past a float's range, in an ignored member",
            br#"{"seq":7,"type":"ping","x":1e999999}"#,
            MalformedJson,
            false,
        ),
        (
            "type not a string",
            br#"{"seq":7,"type":5}"#,
            BadRequest,
            true,
        ),
        (
            "unknown type",
            br#"{"seq":7,"type":"launch_missiles"}"#,
            UnknownRequest,
            true,
        ),
        (
            "unknown type, long name",
            long_type.as_bytes(),
            UnknownRequest,
            true,
        ),
        ("wrong field type", send_bad_to.as_bytes(), BadRequest, true),
        (
            "missing field",
            br#"{"seq":7,"type":"lookup"}"#,
            BadRequest,
            true,
        ),
        ("bad base64", login_bad_b64.as_bytes(), BadRequest, true),
        (
            "bad message id",
            br#"{"seq":7,"type":"ack","ids":["xyz"]}"#,
            BadRequest,
            true,
        ),
        ("bad key type", register_dsa.as_bytes(), BadRequest, true),
    ];
    for (case, body, code, echoes) in cases {
        w.send_frame(body).await;
        let frame = w
            .read()
            .await
            .unwrap_or_else(|| panic!("{case}: the connection closed"));
        assert_eq!(frame.re, if *echoes { Some(7) } else { None }, "{case}: re");
        expect_error(frame.response, *code, case);
        assert!(w.ping().await, "{case}: the connection stopped answering");
    }
    // An empty frame is not JSON either.
    w.write_bytes(&0u32.to_be_bytes()).await;
    expect_error(
        w.answer(None).await,
        ErrorCode::MalformedJson,
        "empty frame",
    );
    assert!(
        w.ping().await,
        "empty frame: the connection stopped answering"
    );

    // Before login, a frame of exactly the pre-login maximum is read
    // (padding is JSON whitespace); after login, one of the request maximum.
    let padded = |len: usize| {
        let mut body = br#"{"seq":99,"type":"ping"}"#.to_vec();
        body.resize(len, b' ');
        body
    };
    w.send_frame(&padded(protocol::MAX_PRE_LOGIN_FRAME)).await;
    assert!(
        matches!(w.answer(Some(99)).await, Response::Pong),
        "a frame of the pre-login maximum"
    );
    // The largest request sent before login still fits: a link request.
    let seq = w
        .send(Request::LinkRequest {
            phone: ALICE.into(),
            rendezvous: B64(vec![7; 16]),
            request: B64(vec![0xff; carrier::routing::MAX_LINK_MESSAGE]),
        })
        .await;
    expect_error(
        w.answer(Some(seq)).await,
        ErrorCode::NoLink,
        "largest link request",
    );
    // A fresh connection, with its whole budget of requests before login.
    let mut w = Wire::connect(&server).await;
    assert!(matches!(
        w.login(ALICE, &alice.identity()).await,
        Response::LoggedIn { .. }
    ));
    w.send_frame(&padded(protocol::MAX_REQUEST_FRAME)).await;
    assert!(
        matches!(w.answer(Some(99)).await, Response::Pong),
        "a frame of the maximum size"
    );

    assert!(
        server.codes_for(CAROL).is_empty(),
        "a bad register sent a code"
    );
    still_delivers(&alice, &bob, "after the garbage").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_closes_only_its_connection() {
    let (mut server, alice, bob) = setup().await;
    let mut bob_session = bob.client.login().await.unwrap();
    for (case, len, log_in) in [
        (
            "one byte over",
            protocol::MAX_REQUEST_FRAME as u32 + 1,
            true,
        ),
        ("4 GiB", u32::MAX, true),
        (
            "one byte over before login",
            protocol::MAX_PRE_LOGIN_FRAME as u32 + 1,
            false,
        ),
    ] {
        let mut w = Wire::connect(&server).await;
        assert!(w.ping().await);
        if log_in {
            assert!(matches!(
                w.login(ALICE, &alice.identity()).await,
                Response::LoggedIn { .. }
            ));
        }
        let mut bytes = len.to_be_bytes().to_vec();
        bytes.extend_from_slice(b"{\"seq\":1,\"type\":\"ping\"}");
        w.write_bytes(&bytes).await;
        let frame = w
            .read()
            .await
            .unwrap_or_else(|| panic!("{case}: closed without an error"));
        assert_eq!(frame.re, None, "{case}");
        expect_error(frame.response, ErrorCode::FrameTooLarge, case);
        assert!(
            w.read().await.is_none(),
            "{case}: the connection stayed open"
        );

        // Bob's session on the same server still works, and receives live.
        let a = alice.client.login().await.unwrap();
        let id = a.send(BOB, case).await.unwrap();
        a.close().await;
        let pushed = next_pushed_message(&mut bob_session.conn).await;
        assert_eq!(pushed.id, id, "{case}");
        let got = bob_session
            .take_pushed(pushed)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(got.text, case);
    }
    bob_session.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_before_login_are_refused() {
    let (mut server, alice, _bob) = setup().await;
    let a = alice.client.login().await.unwrap();
    let (id, send) = sealed_for(&a, BOB, "sneaky").await;
    a.close().await;
    let mut w = Wire::connect(&server).await;
    let cases: Vec<(&str, Request)> = vec![
        (
            "fetch",
            Request::Fetch {
                limit: None,
                after: None,
            },
        ),
        ("device_send", send),
        ("lookup", Request::Lookup { phone: BOB.into() }),
        ("ack", Request::Ack { ids: vec![id] }),
    ];
    for (case, request) in cases {
        expect_error(w.call(request).await, ErrorCode::NotLoggedIn, case);
    }
    assert!(w.ping().await);
    assert_eq!(
        server.queued_for(BOB).await,
        0,
        "a send before login queued a message"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_proofs_are_bound_to_connection_nonce_and_key() {
    let (mut server, alice, bob) = setup().await;
    let alice_key = alice.identity();

    // A valid proof captured on connection A is useless on connection B,
    // even with B's own challenge.
    let mut a = Wire::connect(&server).await;
    let nonce_a = a.challenge().await;
    let captured = proof(&alice_key, Purpose::Login, &a.exporter, &nonce_a, ALICE);
    let mut b = Wire::connect(&server).await;
    let nonce_b = b.challenge().await;
    assert_ne!(nonce_a, nonce_b);
    let replay = Request::Login {
        phone: ALICE.into(),
        signature: B64(captured.clone()),
    };
    expect_error(
        b.call(replay).await,
        ErrorCode::BadSignature,
        "proof replayed on another connection",
    );
    // It was a valid proof: on its own connection it logs in.
    let on_a = a
        .call(Request::Login {
            phone: ALICE.into(),
            signature: B64(captured),
        })
        .await;
    assert!(
        matches!(on_a, Response::LoggedIn { .. }),
        "the captured proof on its connection: {on_a:?}"
    );

    // (case, signer, purpose, phone signed for, phone claimed)
    let bob_key = bob.identity();
    let stranger = Identity::generate(KeyType::P256);
    let cases: [(&str, &Identity, Purpose, &str, &str); 4] = [
        (
            "signed by another registered user",
            &bob_key,
            Purpose::Login,
            ALICE,
            ALICE,
        ),
        (
            "signed by an unknown key",
            &stranger,
            Purpose::Login,
            ALICE,
            ALICE,
        ),
        (
            "a registration proof used to log in",
            &alice_key,
            Purpose::Register,
            ALICE,
            ALICE,
        ),
        (
            "Bob's proof presented as Alice",
            &bob_key,
            Purpose::Login,
            BOB,
            ALICE,
        ),
    ];
    for (case, signer, purpose, signed_for, claimed) in cases {
        let mut w = Wire::connect(&server).await;
        let nonce = w.challenge().await;
        let signature = proof(signer, purpose, &w.exporter, &nonce, signed_for);
        let answer = w
            .call(Request::Login {
                phone: claimed.into(),
                signature: B64(signature),
            })
            .await;
        expect_error(answer, ErrorCode::BadSignature, case);
        expect_error(
            w.call(Request::Lookup { phone: BOB.into() }).await,
            ErrorCode::NotLoggedIn,
            case,
        );
    }

    // Garbage signatures of every length are refused the same way.
    for (case, signature) in [
        ("empty", vec![]),
        ("64 zero bytes", vec![0; 64]),
        ("long", vec![7; 600]),
    ] {
        let mut w = Wire::connect(&server).await;
        w.challenge().await;
        let answer = w
            .call(Request::Login {
                phone: ALICE.into(),
                signature: B64(signature),
            })
            .await;
        expect_error(answer, ErrorCode::BadSignature, case);
    }
    still_delivers(&alice, &bob, "after the forgeries").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_challenge_answers_one_proof() {
    let (mut server, alice, _bob) = setup().await;
    let key = alice.identity();

    let mut w = Wire::connect(&server).await;
    let signature = proof(&key, Purpose::Login, &w.exporter, &[0; 32], ALICE);
    let answer = w
        .call(Request::Login {
            phone: ALICE.into(),
            signature: B64(signature),
        })
        .await;
    expect_error(answer, ErrorCode::NoChallenge, "login without a challenge");

    // A failed proof uses the challenge up: a valid proof over the same
    // nonce is then refused.
    let nonce = w.challenge().await;
    let forged = proof(
        &Identity::generate(KeyType::P256),
        Purpose::Login,
        &w.exporter,
        &nonce,
        ALICE,
    );
    let answer = w
        .call(Request::Login {
            phone: ALICE.into(),
            signature: B64(forged),
        })
        .await;
    expect_error(answer, ErrorCode::BadSignature, "forged proof");
    let valid = proof(&key, Purpose::Login, &w.exporter, &nonce, ALICE);
    let answer = w
        .call(Request::Login {
            phone: ALICE.into(),
            signature: B64(valid),
        })
        .await;
    expect_error(
        answer,
        ErrorCode::NoChallenge,
        "the same challenge a second time",
    );

    // A fresh challenge works; once logged in, no second login.
    assert!(matches!(
        w.login(ALICE, &key).await,
        Response::LoggedIn { .. }
    ));
    expect_error(
        w.call(Request::Challenge).await,
        ErrorCode::AlreadyLoggedIn,
        "challenge after login",
    );

    // Verify needs a challenge too, and a pending code.
    let mut v = Wire::connect(&server).await;
    let answer = v
        .call(Request::Verify {
            phone: CAROL.into(),
            code: "123456".into(),
            signature: B64(vec![0; 64]),
        })
        .await;
    expect_error(answer, ErrorCode::NoChallenge, "verify without a challenge");
    let answer = v
        .verify(CAROL, &Identity::generate(KeyType::P256), "123456")
        .await;
    expect_error(answer, ErrorCode::NoPendingCode, "verify without register");
    // Login as somebody never registered.
    expect_error(
        v.login(CAROL, &key).await,
        ErrorCode::UnknownUser,
        "login as an unregistered phone",
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_proves_possession_of_the_key_being_registered() {
    let mut server = spawn_server().await;
    let key = Identity::generate(KeyType::P256);
    let other = Identity::generate(KeyType::P256);
    let mut w = Wire::connect(&server).await;
    assert!(matches!(
        w.register(CAROL, &key).await,
        Response::CodeSent { .. }
    ));
    let code = server.code_for(CAROL);
    // The right code with a proof by another key: refused, and no try spent.
    expect_error(
        w.verify(CAROL, &other, &code).await,
        ErrorCode::BadSignature,
        "proof by another key",
    );
    assert!(server.user_row(CAROL).await.is_none());
    assert!(matches!(
        w.verify(CAROL, &key, &code).await,
        Response::Registered { .. }
    ));

    // Keys that are not keys, or not of the declared type.
    let rsa_spki = shared_rsa_identity().public_key().to_spki_der();
    let p256_spki = key.public_key().to_spki_der();
    let cases: [(&str, KeyType, Vec<u8>); 4] = [
        ("empty key", KeyType::P256, vec![]),
        (
            "garbage key",
            KeyType::P256,
            vec![0x30, 0x03, 0x02, 0x01, 0x01],
        ),
        ("RSA key declared P-256", KeyType::P256, rsa_spki),
        ("P-256 key declared RSA", KeyType::Rsa, p256_spki),
    ];
    let mut w = Wire::connect(&server).await;
    for (case, key_type, public_key) in cases {
        let answer = w
            .call(Request::Register {
                phone: DAVE.into(),
                key_type,
                public_key: B64(public_key),
            })
            .await;
        expect_error(answer, ErrorCode::InvalidKey, case);
    }
    assert!(
        server.codes_for(DAVE).is_empty(),
        "a code was sent for an invalid key"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_that_do_not_match_the_session_are_refused() {
    use crate::devices::client::{Account, Ask, seal, start_session};

    let (mut server, alice, bob) = setup().await;
    let carol = register(&server, CAROL, KeyType::P256).await;
    let a = alice.client.login().await.unwrap();
    let b = bob.client.login().await.unwrap();
    let carol_peer = crate::devices::client::look_up(&a.conn, CAROL, &carol.identity()).await;

    let send = |(id, envelope): (MessageId, Vec<u8>), to: &str| Request::DeviceSend {
        id,
        to: to.into(),
        device: 1,
        list_version: 1,
        envelope: B64(envelope),
    };
    // A device of its own sealing as it pleases, named in its header.
    let forged = |phone: &str, peer: &crate::devices::client::Peer| {
        let mut account = Account::unregistered(phone);
        account.add_device("forged");
        let device = account.device(1);
        let mut session = start_session(&device, peer, 1, None);
        let id = MessageId::random();
        (id, seal(&device, &mut session, id, "x"))
    };
    let envelope_of = |request: Request| match request {
        Request::DeviceSend { id, envelope, .. } => (id, envelope.0),
        other => panic!("not a device_send: {other:?}"),
    };
    let (good_id, good) = envelope_of(sealed_for(&a, CAROL, "hi").await.1);
    let (bobs_id, bobs) = envelope_of(sealed_for(&b, CAROL, "x").await.1);
    let nobody = Account::unregistered(NOBODY);
    let mut nobody = nobody;
    nobody.add_device("nobody's");
    // (case, request, expected code)
    let cases: Vec<(&str, Request, ErrorCode)> = vec![
        (
            "sealed and signed by Bob's device",
            send((bobs_id, bobs), CAROL),
            ErrorCode::Forbidden,
        ),
        (
            "a key claiming to be Bob's device",
            send(forged(BOB, &carol_peer), CAROL),
            ErrorCode::Forbidden,
        ),
        (
            "unknown recipient",
            send(forged(ALICE, &nobody.as_peer()), NOBODY),
            ErrorCode::UnknownUser,
        ),
        (
            "envelope for Carol sent to Bob",
            send((good_id, good.clone()), BOB),
            ErrorCode::BadEnvelope,
        ),
        (
            "recipient not a phone number",
            send((good_id, good.clone()), "carol"),
            ErrorCode::InvalidPhone,
        ),
        (
            "id differs from the envelope's",
            send((MessageId::random(), good.clone()), CAROL),
            ErrorCode::BadEnvelope,
        ),
        (
            "not an envelope",
            send((good_id, b"hello".to_vec()), CAROL),
            ErrorCode::BadEnvelope,
        ),
        (
            "envelope cut short",
            send((good_id, good[..good.len() - 1].to_vec()), CAROL),
            ErrorCode::BadEnvelope,
        ),
        (
            "empty envelope",
            send((good_id, vec![]), CAROL),
            ErrorCode::BadEnvelope,
        ),
    ];
    for (case, request, code) in cases {
        expect_error(a.conn.ask(request).await.unwrap(), code, case);
    }
    for who in [BOB, CAROL, NOBODY] {
        assert_eq!(
            server.queued_for(who).await,
            0,
            "a refused send queued a message for {who}"
        );
    }
    // The untouched envelope is accepted on the same connection.
    assert!(matches!(
        a.conn.ask(send((good_id, good), CAROL)).await.unwrap(),
        Response::Accepted { .. }
    ));
    assert_eq!(server.queued_for(CAROL).await, 1);
    a.close().await;
    b.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_envelope_is_refused_by_the_recipient() {
    let (mut server, alice, bob) = setup().await;
    let a = alice.client.login().await.unwrap();
    let id = a.send(BOB, "the original").await.unwrap();
    let kept = a.send(BOB, "untouched").await.unwrap();
    a.close().await;

    // Someone with the server's disk flips one ciphertext byte.
    let pool = server.db().await;
    let mut envelope: Vec<u8> =
        sqlx::query_scalar("SELECT envelope FROM message_queue WHERE id = $1")
            .bind(&id.as_bytes()[..])
            .fetch_one(&pool)
            .await
            .unwrap();
    // Past the clear header, inside the padded ciphertext (the signature
    // is the last 64 bytes).
    carrier::crypto::v2::Envelope::parse(&envelope).expect("a v2 envelope");
    let at = envelope.len() - 64 - 100;
    envelope[at] ^= 0x01;
    let updated = sqlx::query("UPDATE message_queue SET envelope = $1 WHERE id = $2")
        .bind(&envelope)
        .bind(&id.as_bytes()[..])
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(updated.rows_affected(), 1);
    pool.close().await;

    let mut b = bob.client.login().await.unwrap();
    let (got, refused) = b.fetch().await.unwrap();
    assert_eq!(
        got.iter().map(|m| m.id).collect::<Vec<_>>(),
        [kept],
        "the tampered message was received"
    );
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!((refused[0].id, refused[0].from.as_str()), (id, ALICE));
    let history = bob.client.home.history().await.unwrap();
    assert!(
        history.iter().all(|e| e.text != "the original"),
        "tampered text in the history"
    );
    b.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_prekey_bundle_is_refused_and_the_sender_told_why() {
    let (mut server, alice, _bob) = setup().await;
    // Someone with the server's disk flips one byte of the signature on
    // Bob's signed prekey (its last 64 bytes).
    let pool = server.db().await;
    let (device, mut prekey): (i64, Vec<u8>) =
        sqlx::query_as("SELECT device, prekey FROM prekeys WHERE phone = $1 AND kind = 1")
            .bind(BOB)
            .fetch_one(&pool)
            .await
            .unwrap();
    let last = prekey.len() - 1;
    prekey[last] ^= 0x01;
    let updated = sqlx::query("UPDATE prekeys SET prekey = $1 WHERE phone = $2 AND kind = 1")
        .bind(&prekey)
        .bind(BOB)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(updated.rows_affected(), 1);
    pool.close().await;

    let notices = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = notices.clone();
    alice
        .client
        .replace_notify(Arc::new(move |n| seen.lock().unwrap().push(n)));
    let a = alice.client.login().await.unwrap();
    let refused = a.send(BOB, "for Bob's eyes").await.unwrap_err();
    assert!(matches!(refused, ClientError::Forged(_)), "{refused:?}");
    assert!(
        refused.to_string().contains("nothing was sent"),
        "{refused}"
    );
    // Looking contacts up for other reasons (as `fetch` does) sends
    // nothing, and so tells of no device left out.
    a.device_notices().await.unwrap();
    a.close().await;
    // Bob's key is pinned on first contact (a notice of its own), then
    // his one device is left out, and said so once.
    let told: Vec<String> = notices.lock().unwrap().iter().map(show::notice).collect();
    let warnings: Vec<&String> = told.iter().filter(|t| t.starts_with("warning")).collect();
    assert_eq!(
        warnings,
        [&format!(
            "warning: device {device} of {BOB} gets nothing from this send: its keys were \
             refused (signature does not verify)"
        )]
    );
    assert_eq!(server.queued_for(BOB).await, 0, "nothing reached the queue");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_another_key_on_a_pinned_address_is_refused() {
    let mut first = spawn_server().await;
    let addr = first.addr;
    // No --server-fingerprint: the client pins the key on first use.
    let (_home, client) = new_client(&addr.to_string(), None).await;
    register_client(&first, &client, ALICE, KeyType::P256)
        .await
        .expect("registration");
    assert_eq!(
        client.home.server_pin(&addr.to_string()).await.unwrap(),
        Some(first.fingerprint)
    );
    first.stop().await;

    // Another server (new data directory, new key) on the same address.
    let mut second = spawn_server_with(|c| c.port = addr.port()).await;
    assert_ne!(second.fingerprint, first.fingerprint);
    let err = match client.login().await {
        Ok(_) => panic!("the client logged in to a server with another key"),
        Err(e) => e,
    };
    match &err {
        ClientError::Connect(ConnectError::KeyChanged {
            expected,
            presented,
        }) => {
            assert_eq!(*expected, first.fingerprint);
            assert_eq!(*presented, second.fingerprint);
        }
        other => panic!("expected ConnectError::KeyChanged, got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains(&first.fingerprint.to_hex()) && text.contains(&second.fingerprint.to_hex()),
        "{text}"
    );
    assert_eq!(
        client.home.server_pin(&addr.to_string()).await.unwrap(),
        Some(first.fingerprint),
        "the pin changed"
    );
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_instead_of_tls_leaves_the_server_up() {
    let (mut server, alice, bob) = setup().await;
    let mut bob_wire = Wire::connect(&server).await;
    assert!(matches!(
        bob_wire.login(BOB, &bob.identity()).await,
        Response::LoggedIn { .. }
    ));
    let noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 | 1)
        .collect();
    let cases: [(&str, Vec<u8>); 5] = [
        (
            "an HTTP request",
            b"GET / HTTP/1.1\r\nHost: carrier\r\n\r\n".to_vec(),
        ),
        (
            "a plaintext Carrier frame",
            [&23u32.to_be_bytes()[..], br#"{"seq":1,"type":"ping"}"#].concat(),
        ),
        (
            "a TLS record header and junk",
            [&[0x16, 0x03, 0x01, 0x00, 0x10][..], &[0xaa; 16]].concat(),
        ),
        ("noise", noise),
        ("nothing at all", Vec::new()),
    ];
    for (case, bytes) in cases {
        let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        tcp.write_all(&bytes)
            .await
            .unwrap_or_else(|e| panic!("{case}: write: {e}"));
        tcp.shutdown().await.ok();
        let mut sink = Vec::new();
        // The server ends the connection (an alert, a reset or a close).
        let _ = within(case, tcp.read_to_end(&mut sink)).await;
        assert!(
            bob_wire.ping().await,
            "{case}: an established session stopped answering"
        );
    }
    still_delivers(&alice, &bob, "after the noise").await;
    server.stop().await;
}

/// One address cannot hold more connections that never log in than its
/// share: a newer one from it closes its oldest (told `server_busy`) and
/// is served.
#[tokio::test]
async fn one_address_cannot_hold_every_slot_without_logging_in() {
    use carrier::server::MAX_PENDING_PER_ADDRESS;

    let mut server = spawn_server().await;
    let mut held = Vec::new();
    for _ in 0..MAX_PENDING_PER_ADDRESS {
        held.push(Wire::connect(&server).await);
    }
    // Registering takes one more connection from the same address.
    let alice = register(&server, ALICE, KeyType::P256).await;
    assert_eq!(
        held[0].told_before_closing().await,
        Some(ErrorCode::ServerBusy),
        "the address's oldest connection was closed for its newest"
    );
    let newest = held.last_mut().expect("held connections");
    assert!(newest.ping().await, "the newest is still served");
    alice
        .client
        .login()
        .await
        .expect("logins work")
        .close()
        .await;
    server.stop().await;
}

/// A connection that has not logged in has a small request budget: past it
/// it is answered `rate_limited` and closed, whatever it sends. Logging in
/// lifts it, and other clients are served throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_before_login_are_budgeted_then_the_connection_is_closed() {
    let (mut server, alice, bob) = setup().await;
    let mut w = Wire::connect(&server).await;
    let mut answered = 0;
    let refusal = loop {
        assert!(
            answered < 200,
            "200 requests before login were all answered"
        );
        match w.call(Request::Ping).await {
            Response::Pong => answered += 1,
            other => break other,
        }
    };
    let message = expect_error(refusal, ErrorCode::RateLimited, "past the budget");
    assert!(message.contains("before logging in"), "{message}");
    assert!(answered >= 32, "only {answered} requests were answered");
    assert!(w.read().await.is_none(), "the connection is closed");

    // A logged-in session is not held to it.
    let mut logged_in = Wire::connect(&server).await;
    let answer = logged_in.login(ALICE, &alice.identity()).await;
    assert!(matches!(answer, Response::LoggedIn { .. }), "{answer:?}");
    for i in 0..64 {
        assert!(logged_in.ping().await, "ping {i} after login");
    }
    still_delivers(&alice, &bob, "after the flood").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_broadcast_is_told_the_text_limit() {
    let (mut server, alice, _bob) = setup().await;
    let mut w = Wire::connect(&server).await;
    assert!(matches!(
        w.login(ALICE, &alice.identity()).await,
        Response::LoggedIn { .. }
    ));
    let too_long = protocol::MAX_TEXT_BYTES + 1;
    let answer = w
        .call(Request::Broadcast {
            id: MessageId::random(),
            sent_at: 1,
            text: "x".repeat(too_long),
            signature: B64(vec![0; 64]),
        })
        .await;
    let Response::Error { code, message, .. } = answer else {
        panic!("an oversized broadcast was taken: {answer:?}");
    };
    assert_eq!(code, ErrorCode::MessageTooLarge);
    assert_eq!(
        message,
        format!(
            "the broadcast text is {too_long} bytes of UTF-8; the limit is {} bytes: shorten it",
            protocol::MAX_TEXT_BYTES
        )
    );
    server.stop().await;
}
