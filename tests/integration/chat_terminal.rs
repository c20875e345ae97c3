//! `carrier chat` on a terminal, driven through a pseudo-terminal as a
//! person would: a prompt naming the user, a message arriving while a line
//! is half typed (the line stays intact and is sent whole), Tab completion
//! of a contact's number, a server restart the chat survives with a
//! notice, and the server's reason when it closes the chat's device.

use carrier::protocol::KeyType;
use expectrl::{Eof, Expect};

use crate::client_support::{carrier_in, expect, on_pty, start_pty};
use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_on_a_terminal_keeps_the_typed_line_completes_numbers_and_reconnects() {
    let mut server = spawn_server().await;
    let alice = register(&server, ALICE, KeyType::P256).await;
    let bob = register(&server, BOB, KeyType::P256).await;
    let bob_session = bob.client.login().await.unwrap();
    bob_session.send(ALICE, "before").await.unwrap();

    // As a user runs it: no RUST_LOG, so no log lines.
    let mut chat = carrier_in(alice.home.path(), &["--server", &server.addr(), "chat"]);
    chat.env_remove("RUST_LOG");
    let pty = start_pty(chat);
    let (pty, _) = on_pty(pty, |pty| {
        expect(pty, r"Logged in as \+12025550101\.");
        expect(pty, r"\+12025550102: before");
        expect(pty, r"\+12025550101> ");
        pty.send("send +12025550102 hello wor").unwrap();
        expect(pty, "hello wor");
    })
    .await;

    // A message arrives while the line is half typed: it is printed above,
    // and the line is drawn again as it was.
    bob_session.send(ALICE, "incoming").await.unwrap();
    let (pty, _) = on_pty(pty, |pty| {
        expect(
            pty,
            r"(?s)\+12025550102: incoming.*\+12025550101> send \+12025550102 hello wor",
        );
        pty.send("ld\r").unwrap();
        expect(pty, r"Sent message [0-9a-f]{32} to \+12025550102");
        // Tab completes Bob's number, pinned when his message arrived.
        pty.send("send +1202555010\t").unwrap();
        pty.send("tabbed\r").unwrap();
        expect(pty, r"Sent message [0-9a-f]{32} to \+12025550102");
        pty.send("/help\r").unwrap();
        expect(pty, "Tab completes");
    })
    .await;
    bob_session.close().await;
    let mut bob_session = bob.client.login().await.unwrap();
    let (got, _) = bob_session.fetch().await.unwrap();
    assert_eq!(
        got.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(),
        ["hello world", "tabbed"],
        "the typed line was sent whole"
    );
    bob_session.close().await;

    // The server restarts: the chat says so, and why, in its own line (no
    // log line breaking the one being typed), reconnects by itself, and
    // messages flow again.
    server.stop().await;
    let (pty, said) = on_pty(pty, |pty| {
        expect(
            pty,
            r"(?s).*Lost the connection to the server at \S+: it is shutting down; reconnecting",
        )
    })
    .await;
    assert!(
        !said.contains("WARN") && !said.contains("carrier::"),
        "a log line on the terminal: {said:?}"
    );
    server.restart().await;
    let (pty, _) = on_pty(pty, |pty| {
        expect(pty, "Reconnected to the server at");
    })
    .await;
    let bob_session = bob.client.login().await.unwrap();
    bob_session.send(ALICE, "after the restart").await.unwrap();
    let (pty, status) = on_pty(pty, |pty| {
        expect(pty, r"\+12025550102: after the restart");
        pty.send("quit\r").unwrap();
        pty.expect(Eof).expect("chat ends at quit");
        format!("{:?}", pty.get_process().wait().expect("chat exits"))
    })
    .await;
    drop(pty);
    assert!(
        status.starts_with("Exited(") && status.ends_with(", 0)"),
        "{status}"
    );
    bob_session.close().await;
    server.stop().await;
}

/// The account is registered again with another key while a chat runs on
/// its device: the server closes the device's session and says why, and
/// the chat passes that on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_says_why_the_server_closed_its_device() {
    let mut server = spawn_server().await;
    let alice = register(&server, ALICE, KeyType::P256).await;
    let mut chat = carrier_in(alice.home.path(), &["--server", &server.addr(), "chat"]);
    chat.env_remove("RUST_LOG");
    let pty = start_pty(chat);
    let (pty, _) = on_pty(pty, |pty| {
        expect(pty, r"Logged in as \+12025550101\.");
    })
    .await;

    let (_home, again) = new_client(&server.addr(), Some(server.fingerprint())).await;
    let replaced = register_client(&server, &again, ALICE, KeyType::P256)
        .await
        .expect("registering again succeeds");
    assert!(replaced, "the second registration replaced the first key");
    let (pty, _) = on_pty(pty, |pty| {
        // Told when the connection is lost, or as the answer to a request
        // it cut short (the chat's first fetch may still be under way).
        expect(
            pty,
            r"\+12025550101 was registered again with another key, which removed this device",
        );
        pty.send("quit\r").unwrap();
        pty.expect(Eof).expect("chat ends at quit");
    })
    .await;
    drop(pty);
    server.stop().await;
}
