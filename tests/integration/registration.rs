//! Registration with a one-time code: the happy paths for both key types,
//! re-registration with a new key, and every way a code is refused.

use carrier::client::ClientError;
use carrier::crypto::Identity;
use carrier::protocol::{ErrorCode, KeyType, Response};

use crate::common::*;
use crate::wire::Wire;

/// What registration must leave behind: the account in the home, the users
/// row on the server, and a key that logs in.
async fn check_registered(server: &TestServer, user: &TestUser, key_type: KeyType) {
    let identity = user.identity();
    let account = user.client.account().expect("an account");
    assert_eq!(account.phone, user.phone);
    assert_eq!(account.key_type, key_type);
    assert_eq!(account.fingerprint, identity.fingerprint().to_hex());
    let row = server.user_row(&user.phone).await.expect("a users row");
    assert_eq!(row.key_type, key_type.as_str());
    assert_eq!(row.public_key, identity.public_key().to_spki_der());
    assert_eq!(row.fingerprint, account.fingerprint);
    let session = user
        .client
        .login()
        .await
        .expect("the registered key logs in");
    session.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_a_p256_key_with_the_printed_code() {
    let mut server = spawn_server().await;
    let alice = register(&server, ALICE, KeyType::P256).await;
    check_registered(&server, &alice, KeyType::P256).await;
    assert_eq!(server.codes_for(ALICE).len(), 1, "one code was sent");

    // Registering again from the same home keeps the key: nothing replaced.
    let replaced = register_client(&server, &alice.client, ALICE, KeyType::P256)
        .await
        .expect("re-registration");
    assert!(!replaced, "the same key was reported as replaced");
    assert_eq!(
        server.user_row(ALICE).await.unwrap().fingerprint,
        alice.fingerprint
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_a_new_rsa_key_with_the_printed_code() {
    let mut server = spawn_server().await;
    // The client makes the RSA key itself here (about a second).
    let (home, client) = new_client(&server.addr(), Some(server.fingerprint)).await;
    let replaced = register_client(&server, &client, BOB, KeyType::Rsa)
        .await
        .expect("RSA registration");
    assert!(!replaced);
    let fingerprint = client.account().unwrap().fingerprint;
    let bob = TestUser {
        phone: BOB.into(),
        home,
        client,
        fingerprint,
    };
    check_registered(&server, &bob, KeyType::Rsa).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_key_needs_a_fresh_code_and_warns_senders_until_trusted() {
    let mut server = spawn_server().await;
    let alice = register(&server, ALICE, KeyType::P256).await;
    let bob = register(&server, BOB, KeyType::P256).await;
    let old_code = server.code_for(ALICE);
    let old_fp = alice.fingerprint.clone();

    // Bob writes to Alice: he pins her first key. Alice reads it.
    let bob_session = bob.client.login().await.unwrap();
    bob_session
        .send(ALICE, "before")
        .await
        .expect("first message");
    {
        let mut s = alice.client.login().await.unwrap();
        let (got, refused) = s.fetch().await.unwrap();
        assert!(refused.is_empty(), "{refused:?}");
        assert_eq!(
            got.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(),
            ["before"]
        );
        s.close().await;
    }

    // Alice's new device: a new home, so a new key. The code of the first
    // registration does not register it.
    let (home2, client2) = new_client(&server.addr(), Some(server.fingerprint)).await;
    let err = client2
        .register(ALICE, KeyType::P256, |_| Ok(old_code.clone()))
        .await
        .err()
        .expect("the old code is refused");
    let fresh = server.code_for(ALICE);
    if fresh != old_code {
        assert_eq!(server_code(&err), Some(ErrorCode::WrongCode), "{err}");
    }
    let row = server.user_row(ALICE).await.unwrap();
    assert_eq!(
        row.fingerprint, old_fp,
        "a refused code changed the registered key"
    );

    let replaced = register_client(&server, &client2, ALICE, KeyType::P256)
        .await
        .expect("fresh code works");
    assert!(
        replaced,
        "Registered.replaced_key must be true for a new key"
    );
    let alice2 = TestUser {
        phone: ALICE.into(),
        home: home2,
        fingerprint: client2.account().unwrap().fingerprint,
        client: client2,
    };
    let new_fp = alice2.fingerprint.clone();
    assert_ne!(new_fp, old_fp);
    assert_eq!(server.user_row(ALICE).await.unwrap().fingerprint, new_fp);
    assert_eq!(
        bob_session.lookup(&phone(ALICE)).await.unwrap().fingerprint,
        new_fp
    );

    // Bob still pins the old key: sending is refused, naming both keys.
    for attempt in 1..=2 {
        match bob_session.send(ALICE, "to the new key?").await {
            Err(e @ ClientError::KeyChanged { .. }) => {
                let ClientError::KeyChanged {
                    pinned, current, ..
                } = &e
                else {
                    unreachable!()
                };
                assert_eq!(pinned.to_hex(), old_fp, "attempt {attempt}");
                assert_eq!(current.to_hex(), new_fp, "attempt {attempt}");
                let text = e.to_string();
                assert!(
                    text.contains(&old_fp) && text.contains(&new_fp),
                    "attempt {attempt}: {text}"
                );
            }
            other => panic!("attempt {attempt}: expected KeyChanged, got {other:?}"),
        }
    }
    assert_eq!(
        server.queued_for(ALICE).await,
        0,
        "a refused send queued something"
    );

    // A message from the new key to Bob is kept back (not lost) until he trusts it.
    {
        let s = alice2.client.login().await.unwrap();
        s.send(BOB, "from my new phone")
            .await
            .expect("Alice's new key can send");
        s.close().await;
    }
    bob_session.close().await;
    let mut bob_session = bob.client.login().await.unwrap();
    let (got, refused) = bob_session.fetch().await.unwrap();
    assert!(
        got.is_empty(),
        "a message under a changed key was accepted: {got:?}"
    );
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(
        refused[0].reason.contains(&old_fp) && refused[0].reason.contains(&new_fp),
        "{}",
        refused[0].reason
    );
    assert_eq!(
        server.queued_for(BOB).await,
        1,
        "the kept-back message must stay on the server"
    );

    let trusted = bob_session.trust(&phone(ALICE)).await.expect("trust");
    assert_eq!(trusted.to_hex(), new_fp);
    let (got, refused) = bob_session.fetch().await.unwrap();
    assert!(refused.is_empty(), "{refused:?}");
    assert_eq!(
        got.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(),
        ["from my new phone"]
    );
    bob_session
        .send(ALICE, "welcome back")
        .await
        .expect("sending works after trust");
    bob_session.close().await;

    let mut s = alice2.client.login().await.unwrap();
    let (got, refused) = s.fetch().await.unwrap();
    assert!(refused.is_empty(), "{refused:?}");
    assert_eq!(
        got.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(),
        ["welcome back"]
    );
    s.close().await;
    server.stop().await;
}

/// The message and `tries_left` of a `wrong_code` answer; panics naming
/// `case` otherwise.
fn wrong_code_answer(response: Response, case: &str) -> (String, Option<u32>) {
    match response {
        Response::Error {
            code: ErrorCode::WrongCode,
            message,
            tries_left,
            ..
        } => (message, tries_left),
        other => panic!("{case}: expected wrong_code, got {other:?}"),
    }
}

/// The message and `retry_after_ms` of an error with `code`; panics naming
/// `case` otherwise.
fn error_and_wait(response: Response, code: ErrorCode, case: &str) -> (String, Option<u64>) {
    match response {
        Response::Error {
            code: got,
            message,
            retry_after_ms,
            ..
        } if got == code => (message, retry_after_ms),
        other => panic!("{case}: expected error {code:?}, got {other:?}"),
    }
}

/// What a wrong code is told with `remaining` tries left, when `register`
/// would give a new code in `retry_in_s` seconds.
fn told(remaining: u32, retry_in_s: i64) -> String {
    match remaining {
        0 => format!("wrong code; no tries left; register again in {retry_in_s} seconds"),
        1 => "wrong code; 1 try left".to_owned(),
        n => format!("wrong code; {n} tries left"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_codes_count_down_then_the_code_is_dead() {
    let mut server = spawn_server().await;
    let policy = server.config.otp_policy;
    let max = policy.max_tries;
    let id = Identity::generate(KeyType::P256);
    let mut w = Wire::connect(&server).await;
    assert!(matches!(
        w.register(CAROL, &id).await,
        Response::CodeSent { .. }
    ));
    let code = server.code_for(CAROL);
    let wrong = wrong_code(&code);
    // Some time into the window, so the wait named after the last try is
    // the rest of it, not its whole length.
    let waited_ms = 100_000;
    server.clock.advance_ms(waited_ms);
    let retry_in_s = (policy.window_ms - waited_ms) / 1000 + 1;

    // A code that is not 6 digits spends no try and says nothing of them.
    let (message, tries_left) =
        wrong_code_answer(w.verify(CAROL, &id, &code[..5]).await, "a 5-digit code");
    assert_eq!(message, "a code is 6 digits");
    assert_eq!(tries_left, None, "a 5-digit code: {message}");

    // `max_tries` wrong codes are allowed, each told how many remain; only
    // the last is told, in `retry_after_ms`, when `register` works again.
    let wait_ms = Some(retry_in_s as u64 * 1000);
    for attempt in 1..=max {
        let case = format!("wrong code {attempt} of {max}");
        let Response::Error {
            code: ErrorCode::WrongCode,
            message,
            tries_left,
            retry_after_ms,
            ..
        } = w.verify(CAROL, &id, &wrong).await
        else {
            panic!("{case}: expected wrong_code");
        };
        let remaining = max - attempt;
        assert_eq!(message, told(remaining, retry_in_s), "{case}");
        assert_eq!(tries_left, Some(remaining), "{case}: {message}");
        let expected_wait = if remaining == 0 { wait_ms } else { None };
        assert_eq!(retry_after_ms, expected_wait, "{case}: {message}");
        assert!(
            server.user_row(CAROL).await.is_none(),
            "{case}: a user row appeared"
        );
    }
    // Someone else asking for a code for the phone drops the codes that
    // have expired; the dead code stays until its window ends, so its
    // owner is still told `code_dead`, not that the proof matches no key.
    let stranger = Identity::generate(KeyType::P256);
    let mut s = Wire::connect(&server).await;
    assert!(matches!(
        s.register(CAROL, &stranger).await,
        Response::CodeSent { .. }
    ));
    let case = format!("wrong code {}", max + 1);
    let (_, retry_after_ms) = error_and_wait(
        w.verify(CAROL, &id, &wrong).await,
        ErrorCode::CodeDead,
        &case,
    );
    assert_eq!(retry_after_ms, wait_ms, "{case}");
    // The wait the last wrong code named is the one `register` names.
    let (refused, retry_after_ms) = error_and_wait(
        w.register(CAROL, &id).await,
        ErrorCode::CodeDead,
        "asking for a new code after the last try",
    );
    assert!(
        refused.ends_with(&format!("try again in {retry_in_s} seconds")),
        "{refused}"
    );
    assert_eq!(retry_after_ms, wait_ms, "register after the last try");
    let (_, retry_after_ms) = error_and_wait(
        w.verify(CAROL, &id, &code).await,
        ErrorCode::CodeDead,
        "the right code after the code died",
    );
    assert_eq!(
        retry_after_ms, wait_ms,
        "the right code after the code died"
    );
    assert!(
        server.user_row(CAROL).await.is_none(),
        "a dead code registered the user"
    );
    server.stop().await;
}

/// A code may outlive the window its tries are counted in; once its last
/// try is spent it has ended, so a passed window gives it no fresh tries:
/// the right code is `code_dead` inside the window and `code_expired` after
/// it, until `register` sends a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_whose_tries_are_spent_gets_none_afresh_after_the_window() {
    let mut server = spawn_server_with(|c| c.otp_policy.ttl_ms = 3 * c.otp_policy.window_ms).await;
    let policy = server.config.otp_policy;
    let id = Identity::generate(KeyType::P256);
    let mut w = Wire::connect(&server).await;
    assert!(matches!(
        w.register(CAROL, &id).await,
        Response::CodeSent { .. }
    ));
    let code = server.code_for(CAROL);
    let wrong = wrong_code(&code);
    for attempt in 1..=policy.max_tries {
        expect_error(
            w.verify(CAROL, &id, &wrong).await,
            ErrorCode::WrongCode,
            &format!("wrong code {attempt}"),
        );
    }
    let (_, retry_after_ms) = error_and_wait(
        w.verify(CAROL, &id, &code).await,
        ErrorCode::CodeDead,
        "the right code inside the window",
    );
    let wait_ms = retry_after_ms.expect("code_dead says when to register again");
    server.clock.advance_ms(wait_ms as i64);
    expect_error(
        w.verify(CAROL, &id, &code).await,
        ErrorCode::CodeExpired,
        "the right code after the window",
    );
    assert!(
        server.user_row(CAROL).await.is_none(),
        "a spent code registered the user"
    );
    // `register` works again once the wait it was told has passed.
    assert!(matches!(
        w.register(CAROL, &id).await,
        Response::CodeSent { .. }
    ));
    let code = server.code_for(CAROL);
    let registered = w.verify(CAROL, &id, &code).await;
    assert!(
        matches!(registered, Response::Registered { .. }),
        "{registered:?}"
    );
    server.stop().await;
}

/// Guesses racing for the last try: one is told it spent it, the others
/// `code_dead`, and all of them the same wait, the rest of the window (a
/// loser is not told the window's whole length, nor that the code expired).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guesses_racing_for_the_last_try_are_all_told_the_rest_of_the_window() {
    let mut server = spawn_server().await;
    let policy = server.config.otp_policy;
    let id = Identity::generate(KeyType::P256);
    let mut w = Wire::connect(&server).await;
    assert!(matches!(
        w.register(CAROL, &id).await,
        Response::CodeSent { .. }
    ));
    let wrong = wrong_code(&server.code_for(CAROL));
    let waited_ms = 100_000;
    server.clock.advance_ms(waited_ms);
    let wait_ms = Some(((policy.window_ms - waited_ms) / 1000 + 1) as u64 * 1000);
    for attempt in 1..policy.max_tries {
        expect_error(
            w.verify(CAROL, &id, &wrong).await,
            ErrorCode::WrongCode,
            &format!("wrong code {attempt}"),
        );
    }
    let mut racers = Vec::new();
    for _ in 0..8 {
        racers.push(Wire::connect(&server).await);
    }
    let answers =
        futures::future::join_all(racers.iter_mut().map(|r| r.verify(CAROL, &id, &wrong))).await;
    let mut spent = 0;
    for (n, answer) in answers.into_iter().enumerate() {
        let case = format!("racing guess {n}");
        match answer {
            Response::Error {
                code: ErrorCode::WrongCode,
                tries_left: Some(0),
                retry_after_ms,
                ..
            } => {
                spent += 1;
                assert_eq!(retry_after_ms, wait_ms, "{case}");
            }
            Response::Error {
                code: ErrorCode::CodeDead,
                retry_after_ms,
                ..
            } => assert_eq!(retry_after_ms, wait_ms, "{case}"),
            other => panic!("{case}: {other:?}"),
        }
    }
    assert_eq!(spent, 1, "one guess spent the last try");
    server.stop().await;
}

/// Anyone may ask for a code for any phone, so a stranger's `register`
/// for the owner's phone, and its wrong guesses until its key is dead,
/// must leave the owner's pending code and tries alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strangers_codes_and_guesses_leave_the_owners_registration_alone() {
    let mut server = spawn_server().await;
    let max = server.config.otp_policy.max_tries;
    let owner = Identity::generate(KeyType::P256);
    let stranger = Identity::generate(KeyType::P256);
    let mut o = Wire::connect(&server).await;
    let mut s = Wire::connect(&server).await;
    assert!(matches!(
        o.register(CAROL, &owner).await,
        Response::CodeSent { .. }
    ));
    let code = server.code_for(CAROL);
    assert!(matches!(
        s.register(CAROL, &stranger).await,
        Response::CodeSent { .. }
    ));
    let strangers = server.code_for(CAROL);
    for attempt in 1..=max {
        expect_error(
            s.verify(CAROL, &stranger, &wrong_code(&strangers)).await,
            ErrorCode::WrongCode,
            &format!("the stranger's wrong code {attempt}"),
        );
    }
    expect_error(
        s.register(CAROL, &stranger).await,
        ErrorCode::CodeDead,
        "the stranger's key is spent",
    );
    expect_error(
        s.verify(CAROL, &stranger, &code).await,
        ErrorCode::CodeDead,
        "the owner's code does not register the stranger's key",
    );
    let registered = o.verify(CAROL, &owner, &code).await;
    assert!(
        matches!(registered, Response::Registered { .. }),
        "the owner's code still registers the owner's key: {registered:?}"
    );
    let row = server.user_row(CAROL).await.expect("a users row");
    assert_eq!(row.public_key, owner.public_key().to_spki_der());
    server.stop().await;
}

/// A stranger that asks for codes for someone's phone from one address,
/// with one throwaway key after another, takes only that address's share
/// of the phone's codes: the owner, asking from another address, still
/// gets a code and registers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_at_one_address_cannot_use_up_a_phones_codes() {
    let mut server = spawn_server().await;
    let policy = server.config.otp_policy;
    let stranger_at: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    let mut s = Wire::connect_from(&server, stranger_at).await;
    let mut sent = 0;
    'keys: for _ in 0..=policy.max_codes_per_phone / policy.max_codes {
        let throwaway = Identity::generate(KeyType::P256);
        for _ in 0..policy.max_codes {
            match s.register(CAROL, &throwaway).await {
                Response::CodeSent { .. } => sent += 1,
                Response::Error {
                    code: ErrorCode::RateLimited,
                    message,
                    ..
                } => {
                    assert!(message.contains("your address"), "{message}");
                    break 'keys;
                }
                other => panic!("the stranger's code {}: {other:?}", sent + 1),
            }
        }
    }
    assert_eq!(
        sent, policy.max_codes_per_address,
        "the stranger got its address's share, no more"
    );
    assert_eq!(server.codes_for(CAROL).len(), sent as usize);

    let owner = Identity::generate(KeyType::P256);
    let mut o = Wire::connect(&server).await;
    let asked = o.register(CAROL, &owner).await;
    assert!(
        matches!(asked, Response::CodeSent { .. }),
        "the owner, at another address, still gets a code: {asked:?}"
    );
    let code = server.code_for(CAROL);
    let registered = o.verify(CAROL, &owner, &code).await;
    assert!(
        matches!(registered, Response::Registered { .. }),
        "{registered:?}"
    );
    let row = server.user_row(CAROL).await.expect("a users row");
    assert_eq!(row.public_key, owner.public_key().to_spki_der());
    server.stop().await;
}

/// Codes per phone stay bounded in all (what its owner can be made to
/// receive): strangers at several addresses together reach that bound,
/// after which nobody gets a new code until the window ends, but a code
/// already pending still registers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phones_codes_are_bounded_whatever_the_addresses() {
    let mut server = spawn_server_with(|c| {
        c.otp_policy.max_codes_per_address = 2;
        c.otp_policy.max_codes_per_phone = 5;
    })
    .await;
    let owner = Identity::generate(KeyType::P256);
    let mut o = Wire::connect(&server).await;
    assert!(matches!(
        o.register(CAROL, &owner).await,
        Response::CodeSent { .. }
    ));
    let code = server.code_for(CAROL);
    for host in [2, 3] {
        let at = std::net::IpAddr::from([127, 0, 0, host]);
        let mut s = Wire::connect_from(&server, at).await;
        for n in 1..=2 {
            let throwaway = Identity::generate(KeyType::P256);
            assert!(
                matches!(
                    s.register(CAROL, &throwaway).await,
                    Response::CodeSent { .. }
                ),
                "127.0.0.{host}, code {n}"
            );
        }
    }
    let mut s = Wire::connect_from(&server, [127, 0, 0, 4].into()).await;
    let message = expect_error(
        s.register(CAROL, &Identity::generate(KeyType::P256)).await,
        ErrorCode::RateLimited,
        "a third address, past the phone's bound",
    );
    assert!(message.contains("this phone"), "{message}");
    expect_error(
        o.register(CAROL, &owner).await,
        ErrorCode::RateLimited,
        "the owner too, until the window ends",
    );
    assert_eq!(server.codes_for(CAROL).len(), 5);
    let registered = o.verify(CAROL, &owner, &code).await;
    assert!(
        matches!(registered, Response::Registered { .. }),
        "the owner's pending code still registers: {registered:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_code_does_not_reset_the_wrong_tries() {
    let mut server = spawn_server_with(|c| c.otp_policy.max_codes = 20).await;
    let max = server.config.otp_policy.max_tries;
    let id = Identity::generate(KeyType::P256);
    let mut w = Wire::connect(&server).await;
    // One wrong try per code, each on a newly issued code: the count of
    // tries left keeps going down.
    for tries in 1..max {
        assert!(
            matches!(w.register(DAVE, &id).await, Response::CodeSent { .. }),
            "code {tries}"
        );
        let wrong = wrong_code(&server.code_for(DAVE));
        let case = format!("wrong try {tries}, on code {tries}");
        let (message, tries_left) = wrong_code_answer(w.verify(DAVE, &id, &wrong).await, &case);
        assert_eq!(message, told(max - tries, 0), "{case}");
        assert_eq!(tries_left, Some(max - tries), "{case}: {message}");
    }
    // Wrong codes on the last code: the code dies within the tries left
    // (a reset would allow `max` more).
    assert!(matches!(
        w.register(DAVE, &id).await,
        Response::CodeSent { .. }
    ));
    let last = server.code_for(DAVE);
    let mut extra = 0;
    loop {
        extra += 1;
        assert!(
            extra <= 2,
            "still not dead after {} wrong tries in all (max_tries = {max})",
            max - 1 + extra
        );
        match w.verify(DAVE, &id, &wrong_code(&last)).await {
            Response::Error {
                code: ErrorCode::CodeDead,
                ..
            } => break,
            Response::Error {
                code: ErrorCode::WrongCode,
                tries_left,
                message,
                ..
            } => assert_eq!(tries_left, Some(0), "the last try: {message}"),
            other => panic!("wrong try {}: {other:?}", max - 1 + extra),
        }
    }
    let codes_before = server.codes_for(DAVE).len();
    expect_error(
        w.verify(DAVE, &id, &last).await,
        ErrorCode::CodeDead,
        "the right code",
    );
    expect_error(
        w.register(DAVE, &id).await,
        ErrorCode::CodeDead,
        "asking for another code",
    );
    assert_eq!(
        server.codes_for(DAVE).len(),
        codes_before,
        "a code was sent to a dead phone"
    );
    assert!(server.user_row(DAVE).await.is_none());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_code_is_refused() {
    let mut server = spawn_server().await;
    let ttl = server.config.otp_policy.ttl_ms;
    let id = Identity::generate(KeyType::P256);
    let mut w = Wire::connect(&server).await;

    assert!(matches!(
        w.register(CAROL, &id).await,
        Response::CodeSent { .. }
    ));
    let code = server.code_for(CAROL);
    server.clock.advance_ms(ttl + 1);
    expect_error(
        w.verify(CAROL, &id, &code).await,
        ErrorCode::CodeExpired,
        "code past its ttl",
    );
    assert!(
        server.user_row(CAROL).await.is_none(),
        "an expired code registered the user"
    );

    // A code used just before its expiry still works.
    assert!(matches!(
        w.register(CAROL, &id).await,
        Response::CodeSent { .. }
    ));
    let code = server.code_for(CAROL);
    server.clock.advance_ms(ttl - 1);
    match w.verify(CAROL, &id, &code).await {
        Response::Registered {
            phone,
            fingerprint,
            replaced_key,
        } => {
            assert_eq!(phone, CAROL);
            assert_eq!(fingerprint, id.fingerprint().to_hex());
            assert!(!replaced_key);
        }
        other => panic!("a code within its ttl was refused: {other:?}"),
    }
    assert!(server.user_row(CAROL).await.is_some());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_phone_numbers_are_refused() {
    let mut server = spawn_server().await;
    let id = Identity::generate(KeyType::P256);
    let cases = [
        ("empty", ""),
        ("no plus", "12025550101"),
        ("too short", "+1555123456"),
        ("not in the numbering plan", "+15551234567"),
        ("words", "hello"),
        ("plus only", "+"),
        ("zeros", "+0000"),
        ("punctuation only", "+()-"),
        ("far too long", "+1202555010112345678901234567890123456789"),
    ];
    // One connection per case: a connection not logged in has a budget of
    // requests (PROTOCOL §7.6), which all the cases together would pass.
    for (case, bad) in cases {
        let mut w = Wire::connect(&server).await;
        expect_error(
            w.register(bad, &id).await,
            ErrorCode::InvalidPhone,
            &format!("register: {case}"),
        );
        expect_error(
            w.verify(bad, &id, "123456").await,
            ErrorCode::InvalidPhone,
            &format!("verify: {case}"),
        );
        expect_error(
            w.login(bad, &id).await,
            ErrorCode::InvalidPhone,
            &format!("login: {case}"),
        );
        assert!(
            w.ping().await,
            "{case}: the connection survives bad numbers"
        );
    }
    assert!(
        !server.otp_file.exists(),
        "a code was sent for an invalid number"
    );
    let pool = server.db().await;
    for table in ["users", "otp_codes", "otp_limits"] {
        let n: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(n, 0, "rows in {table} after invalid numbers");
    }
    pool.close().await;

    // The client refuses them before asking the server.
    let (_home, client) = new_client(&server.addr(), Some(server.fingerprint)).await;
    for (case, bad) in cases {
        match register_client(&server, &client, bad, KeyType::P256).await {
            Err(ClientError::Input(_)) => {}
            other => panic!("client register: {case}: expected an input error, got {other:?}"),
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_codes_are_rate_limited() {
    let mut server = spawn_server().await;
    let policy = server.config.otp_policy;
    let id = Identity::generate(KeyType::P256);
    let mut w = Wire::connect(&server).await;
    for n in 1..=policy.max_codes {
        assert!(
            matches!(w.register(CAROL, &id).await, Response::CodeSent { .. }),
            "code {n}"
        );
    }
    expect_error(
        w.register(CAROL, &id).await,
        ErrorCode::RateLimited,
        "one code over the limit",
    );
    assert_eq!(
        server.codes_for(CAROL).len(),
        policy.max_codes as usize,
        "a rate-limited code was sent"
    );
    let mut w2 = Wire::connect(&server).await;
    expect_error(
        w2.register(CAROL, &id).await,
        ErrorCode::RateLimited,
        "the limit is per phone, not per connection",
    );
    assert!(server.user_row(CAROL).await.is_none());
    // Other phones are not limited.
    assert!(
        matches!(w2.register(DAVE, &id).await, Response::CodeSent { .. }),
        "another phone"
    );

    // A new window allows a new code, which registers.
    server.clock.advance_ms(policy.window_ms);
    assert!(
        matches!(w2.register(CAROL, &id).await, Response::CodeSent { .. }),
        "a new window"
    );
    let code = server.code_for(CAROL);
    assert!(matches!(
        w2.verify(CAROL, &id, &code).await,
        Response::Registered { .. }
    ));
    server.stop().await;
}

/// Letters are not digits: "+1202555010a" is a typo, not +12025550102 (the
/// phone-keypad reading of "a"). A typo must not send a code to somebody else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn letters_in_a_phone_number_are_refused() {
    let mut server = spawn_server().await;
    let id = Identity::generate(KeyType::P256);
    let mut w = Wire::connect(&server).await;
    for (case, bad) in [
        ("trailing letter", "+1202555010a"),
        ("vanity letters", "+1202555CALL"),
    ] {
        let answer = w.register(bad, &id).await;
        expect_error(answer, ErrorCode::InvalidPhone, case);
    }
    assert!(
        !server.otp_file.exists(),
        "a code was sent for a number typed with letters"
    );
    server.stop().await;
}
