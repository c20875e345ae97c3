//! Which keys the client pins. `trust` pins only the key the user named or
//! was shown, so a server that swaps in a key of its own between a real key
//! change and `trust` is caught; a broadcast from an author whose key is not
//! pinned is shown unverified and pins nothing, so whoever claimed a phone
//! cannot make the client refuse its real owner later.

use carrier::client::{Authorship, ClientError};
use carrier::domain::Fingerprint;
use carrier::protocol::KeyType;

use crate::client_support::{carrier_out, outcome};
use crate::common::*;

/// `carrier trust PHONE --fingerprint FP` in `user`'s home: exit status,
/// standard output and standard error.
async fn trust_as(
    server: &TestServer,
    user: &TestUser,
    phone: &str,
    fp: &str,
) -> (i32, String, String) {
    let args = [
        "--server",
        &server.addr(),
        "trust",
        phone,
        "--fingerprint",
        fp,
    ];
    outcome(&carrier_out(user.home.path(), &args).await)
}

fn fp(hex: &str) -> Fingerprint {
    Fingerprint::parse(hex).expect("a fingerprint")
}

async fn pinned(user: &TestUser, phone: &str) -> Option<String> {
    user.client
        .home
        .contact(phone)
        .await
        .unwrap()
        .map(|c| c.fingerprint)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_with_a_fingerprint_refuses_a_key_swapped_in_after_a_real_change() {
    let server = spawn_server().await;
    let alice = register(&server, ALICE, KeyType::P256).await;
    let bob = register(&server, BOB, KeyType::P256).await;
    let session = bob.client.login().await.unwrap();
    session.send(ALICE, "hello").await.expect("Bob pins Alice");
    session.close().await;

    // Alice changes device and reads Bob her new fingerprint; before Bob
    // trusts it, the server answers with a key of its own choosing.
    let alice_new = another_device(&server, ALICE).await;
    let mallory = another_device(&server, ALICE).await;
    assert_ne!(mallory.fingerprint, alice_new.fingerprint);

    let session = bob.client.login().await.unwrap();
    let refused = session
        .trust_expecting(&phone(ALICE), fp(&alice_new.fingerprint))
        .await
        .expect_err("the swapped key is refused");
    match &refused {
        ClientError::NotTheExpectedKey {
            expected, current, ..
        } => {
            assert_eq!(expected.to_hex(), alice_new.fingerprint);
            assert_eq!(current.to_hex(), mallory.fingerprint);
        }
        other => panic!("expected NotTheExpectedKey, got {other:?}"),
    }
    assert_eq!(
        pinned(&bob, ALICE).await.as_deref(),
        Some(alice.fingerprint.as_str()),
        "nothing was pinned"
    );
    session.close().await;

    // The command says both keys, pins nothing, and exits "key changed".
    let (status, stdout, stderr) = trust_as(&server, &bob, ALICE, &alice_new.fingerprint).await;
    assert_eq!(status, 6, "{stderr}");
    assert_eq!(stdout, "");
    assert!(
        stderr.contains(&alice_new.fingerprint) && stderr.contains(&mallory.fingerprint),
        "{stderr}"
    );
    assert_eq!(
        pinned(&bob, ALICE).await.as_deref(),
        Some(alice.fingerprint.as_str())
    );

    // With the fingerprint the server really reports, the key is pinned.
    let (status, stdout, stderr) = trust_as(&server, &bob, ALICE, &mallory.fingerprint).await;
    assert_eq!(status, 0, "{stderr}");
    assert_eq!(
        stdout.trim(),
        format!("Now trusting {ALICE} with key {}", mallory.fingerprint)
    );
    assert_eq!(
        pinned(&bob, ALICE).await.as_deref(),
        Some(mallory.fingerprint.as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_trust_off_a_terminal_pins_and_prints_the_fingerprint_and_fingerprint_shows_both() {
    let server = spawn_server().await;
    let alice = register(&server, ALICE, KeyType::P256).await;
    let bob = register(&server, BOB, KeyType::P256).await;
    let addr = server.addr();
    let out = carrier_out(bob.home.path(), &["--server", &addr, "fingerprint", ALICE]).await;
    let (status, stdout, stderr) = outcome(&out);
    assert_eq!((status, stdout.trim()), (0, alice.fingerprint.as_str()));
    assert!(stderr.contains("Pinned the key of"), "{stderr}");

    let alice_new = another_device(&server, ALICE).await;
    let args = ["--server", addr.as_str(), "fingerprint", ALICE, "--json"];
    let (status, stdout, stderr) = outcome(&carrier_out(bob.home.path(), &args).await);
    assert_eq!(status, 0, "{stderr}");
    let shown: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(shown["pinned"], alice.fingerprint.as_str());
    assert_eq!(shown["current"], alice_new.fingerprint.as_str());
    assert_eq!(shown["changed"], true);

    let args = ["--server", addr.as_str(), "fingerprint", ALICE];
    let (status, stdout, stderr) = outcome(&carrier_out(bob.home.path(), &args).await);
    assert_eq!(status, 0, "{stderr}");
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            format!("pinned   {}", alice.fingerprint),
            format!("current  {}", alice_new.fingerprint)
        ]
    );
    assert!(
        stderr.contains(&format!(
            "carrier trust {ALICE} --fingerprint {}",
            alice_new.fingerprint
        )),
        "{stderr}"
    );

    let args = ["--server", addr.as_str(), "trust", ALICE];
    let (status, stdout, stderr) = outcome(&carrier_out(bob.home.path(), &args).await);
    assert_eq!(status, 0, "{stderr}");
    assert_eq!(
        stdout.trim(),
        format!("Now trusting {ALICE} with key {}", alice_new.fingerprint)
    );
    assert_eq!(
        pinned(&bob, ALICE).await.as_deref(),
        Some(alice_new.fingerprint.as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_from_an_unpinned_author_pins_nothing_and_is_unverified() {
    let server = spawn_server().await;
    let bob = register(&server, BOB, KeyType::P256).await;
    // Someone claims Alice's phone first (here, a server that lets them)
    // and broadcasts as her.
    let mallory = register(&server, ALICE, KeyType::P256).await;
    let mut listener = bob.client.login().await.unwrap();
    let author = mallory.client.login().await.unwrap();
    author.broadcast("it's me, Alice").await.unwrap();
    let heard = loop {
        match within("the broadcast", listener.conn.next_event()).await {
            Some(carrier::client::Event::Broadcast(b)) => break b,
            Some(_) => continue,
            None => panic!("the connection closed"),
        }
    };
    assert_eq!(
        listener.verify_broadcast(&heard).await.unwrap(),
        Authorship::Unverified
    );
    assert_eq!(
        pinned(&bob, ALICE).await,
        None,
        "the broadcast pinned a key"
    );
    author.close().await;

    // The real Alice registers her phone: Bob's client takes her key on
    // first contact instead of refusing it as a changed key.
    let alice = another_device(&server, ALICE).await;
    let (_, key) = listener
        .contact_key(&phone(ALICE))
        .await
        .expect("the real owner's key is accepted");
    assert_eq!(key.to_hex(), alice.fingerprint);

    // Now pinned: Alice's broadcasts verify, one signed by another key
    // under her name does not.
    let real = broadcast_by(&alice.identity(), ALICE, "hello");
    assert_eq!(
        listener.verify_broadcast(&real).await.unwrap(),
        Authorship::Verified
    );
    let forged = broadcast_by(&mallory.identity(), ALICE, "hello again");
    let err = listener.verify_broadcast(&forged).await.unwrap_err();
    assert!(matches!(err, ClientError::Forged(_)), "{err:?}");
    listener.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_on_a_terminal_shows_both_keys_and_asks() {
    use crate::client_support::{carrier_in, expect, on_pty, start_pty};
    use expectrl::{Eof, Expect};

    let server = spawn_server().await;
    let alice = register(&server, ALICE, KeyType::P256).await;
    let bob = register(&server, BOB, KeyType::P256).await;
    let session = bob.client.login().await.unwrap();
    session.send(ALICE, "hello").await.unwrap();
    session.close().await;
    let alice_new = another_device(&server, ALICE).await;

    for (answer, status, pin) in [
        ("n", "4", &alice.fingerprint),
        ("y", "0", &alice_new.fingerprint),
    ] {
        let cmd = carrier_in(
            bob.home.path(),
            &["--server", &server.addr(), "trust", ALICE],
        );
        let shown = (alice.fingerprint.clone(), alice_new.fingerprint.clone());
        let (_, exit) = on_pty(start_pty(cmd), move |pty| {
            expect(pty, &format!("Pinned key of \\+12025550101: +{}", shown.0));
            expect(pty, &format!("Key the server reports now: {}", shown.1));
            expect(pty, r"Trust it \[y/N\]: ");
            pty.send(format!("{answer}\r")).unwrap();
            pty.expect(Eof).expect("trust ends");
            format!("{:?}", pty.get_process().wait().expect("trust exits"))
        })
        .await;
        assert!(
            exit.ends_with(&format!(", {status})")),
            "answer {answer}: {exit}"
        );
        assert_eq!(
            pinned(&bob, ALICE).await.as_deref(),
            Some(pin.as_str()),
            "answer {answer}"
        );
    }
}
