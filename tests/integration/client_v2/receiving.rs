//! What `fetch` does with what it receives. A message is known by its
//! sender's account and its id (docs/PROTOCOL.md §14.4 step 0, §21.1): two
//! accounts writing under one id both reach the recipient, and a contact
//! who uses an id first does not keep the sender's sync copy under it off
//! the sender's other device.

use std::path::Path;

use carrier::domain::MessageId;

use super::{cli_user, client_on, fetch_by_hand, fetched, json_lines, link, ok, texts};
use crate::common::{ALICE, BOB, CAROL, TestServer, spawn_server};

/// Sends `text` from the account in `home` to every device of `to`, under
/// `id`, as a client that chose that id would.
async fn send_under(server: &TestServer, home: &Path, to: &str, id: MessageId, text: &str) {
    let client = client_on(server, home).await;
    let session = client.login().await.unwrap();
    let sealed = session.seal_for(to, id, text).await.unwrap();
    for request in sealed.requests() {
        session.conn.call(request).await.unwrap();
    }
    session.close().await;
}

/// The history in `home` as (direction, peer, text), sorted (messages
/// stored within one millisecond have no order).
async fn history(home: &Path) -> Vec<(String, String, String)> {
    let entries = json_lines(&ok(home, &["history", "--json"]).await.0);
    let mut entries: Vec<_> = entries
        .iter()
        .map(|e| {
            let field = |k: &str| e[k].as_str().unwrap().to_owned();
            (field("direction"), field("peer"), field("text"))
        })
        .collect();
    entries.sort();
    entries
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_accounts_writing_under_one_id_both_reach_the_recipient() {
    let server = spawn_server().await;
    let homes = tempfile::tempdir().unwrap();
    let alice = cli_user(&server, homes.path(), "alice", ALICE).await;
    let bob = cli_user(&server, homes.path(), "bob", BOB).await;
    let carol = cli_user(&server, homes.path(), "carol", CAROL).await;

    // One after the other: Carol's comes after Alice's was stored.
    let id = MessageId::random();
    send_under(&server, &alice, BOB, id, "from Alice").await;
    assert_eq!(texts(&fetched(&bob).await), ["from Alice"]);
    send_under(&server, &carol, BOB, id, "from Carol").await;
    let got = fetched(&bob).await;
    assert_eq!(texts(&got), ["from Carol"]);
    assert_eq!(
        (got[0]["from"].as_str(), got[0]["id"].as_str()),
        (Some(CAROL), Some(&*id.to_hex()))
    );

    // Both queued at once, in one batch.
    let shared = MessageId::random();
    send_under(&server, &alice, BOB, shared, "Alice again").await;
    send_under(&server, &carol, BOB, shared, "Carol again").await;
    assert_eq!(texts(&fetched(&bob).await), ["Alice again", "Carol again"]);
    assert!(fetched(&bob).await.is_empty(), "each acknowledged once");

    let inbound = |from: &str, text: &str| ("in".to_owned(), from.to_owned(), text.to_owned());
    assert_eq!(
        history(&bob).await,
        [
            inbound(ALICE, "Alice again"),
            inbound(ALICE, "from Alice"),
            inbound(CAROL, "Carol again"),
            inbound(CAROL, "from Carol"),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_using_an_id_first_does_not_keep_the_sync_copy_from_another_device() {
    let server = spawn_server().await;
    let homes = tempfile::tempdir().unwrap();
    let phone = cli_user(&server, homes.path(), "phone", ALICE).await;
    let carol = cli_user(&server, homes.path(), "carol", CAROL).await;
    let laptop = link(&server, &phone, homes.path(), "laptop", ALICE, 2).await;

    // Alice's phone writes to Carol, who learns the id at once and writes
    // back under it; the laptop opens Carol's message before the sync copy
    // (as a client may, in any order).
    ok(&phone, &["send", CAROL, "from the phone"]).await;
    let got = fetched(&carol).await;
    let id = MessageId::parse_hex(got[0]["id"].as_str().unwrap()).unwrap();
    send_under(&server, &carol, ALICE, id, "Carol under Alice's id").await;

    let client = client_on(&server, &laptop).await;
    let mut session = client.login().await.unwrap();
    let messages = fetch_by_hand(&session).await;
    assert_eq!(messages.len(), 2);
    let (from_carol, sync_copy): (Vec<_>, Vec<_>) =
        messages.into_iter().partition(|m| m.from == CAROL);
    for m in from_carol.into_iter().chain(sync_copy) {
        let taken = session.take_pushed(m).await.unwrap();
        assert!(matches!(taken, Ok(Some(_))), "stored: {taken:?}");
    }
    session.close().await;

    assert_eq!(
        history(&laptop).await,
        [
            ("in".into(), CAROL.into(), "Carol under Alice's id".into()),
            ("out".into(), CAROL.into(), "from the phone".into()),
        ]
    );
    assert!(fetched(&laptop).await.is_empty(), "both acknowledged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_kept_back_is_told_apart_from_a_refused_one() {
    let server = spawn_server().await;
    let homes = tempfile::tempdir().unwrap();
    let alice = cli_user(&server, homes.path(), "alice", ALICE).await;
    let bob = cli_user(&server, homes.path(), "bob", BOB).await;
    ok(&bob, &["send", ALICE, "from the old key"]).await;
    assert_eq!(texts(&fetched(&alice).await), ["from the old key"]);

    // Bob registers anew, with a new account key: what he sends waits on
    // the server until Alice trusts the key, and every fetch says so.
    let bob2 = cli_user(&server, homes.path(), "bob2", BOB).await;
    ok(&bob2, &["send", ALICE, "from the new key"]).await;
    for _ in 0..2 {
        let (stdout, stderr) = ok(&alice, &["fetch"]).await;
        assert!(stdout.is_empty(), "{stdout}");
        let warning = stderr
            .lines()
            .find(|l| l.starts_with("warning: message "))
            .unwrap_or_else(|| panic!("a warning: {stderr}"));
        assert!(
            warning.contains(&format!(
                " from {BOB} kept back (it stays on the server and is tried again at the next \
                 fetch): the key of {BOB} changed"
            )),
            "{warning}"
        );
        assert!(!warning.contains("refused"), "{warning}");
    }
}
