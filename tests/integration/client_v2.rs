//! The `carrier` command on protocol v2, end to end against a real server:
//! devices made at registration, sessions in both directions (in order and
//! out of order), linking a second device with a code, sync copies of what
//! the other device sent, removal, a contact's new device told once,
//! safety numbers, prekeys drained and replenished, and a v1 envelope
//! refused. `across_servers`: the same across a neighbourhood of real
//! servers. `tampered`: a server that doubles, forges or rolls back what
//! it serves. `cut_short`: sends stopped after the message went out.
//! `receiving`: messages under one id from two accounts, and messages kept
//! back. `link_without_key`: a link answered without the account key.
//! `keyless`: a listed device that has published no keys.

mod across_servers;
mod cut_short;
mod keyless;
mod link_without_key;
mod receiving;
mod tampered;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use carrier::client::{Client, Home};
use carrier::crypto::v2::ClaimedPrekeys;
use carrier::protocol::{KeyType, Request, Response};
use serde_json::Value;

use crate::client_support::{carrier_in, carrier_out, outcome, register_typing};
use crate::common::*;
use crate::process::wait_within;

/// `carrier register PHONE` into `homes/NAME`; the home.
async fn cli_user(server: &impl Reachable, homes: &Path, name: &str, phone: &str) -> PathBuf {
    let home = homes.join(name);
    let (status, _, stderr) = outcome(&register_typing(server, &home, phone, 0).await);
    assert_eq!(status, 0, "register {phone}: {stderr}");
    home
}

/// Runs `carrier ARGS…` in `home`, which must succeed; its stdout and stderr.
async fn ok(home: &Path, args: &[&str]) -> (String, String) {
    let (status, stdout, stderr) = outcome(&carrier_out(home, args).await);
    assert_eq!(status, 0, "carrier {}: {stderr}", args.join(" "));
    (stdout, stderr)
}

fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The texts of `fetch --json` in `home`, in order.
async fn fetched(home: &Path) -> Vec<Value> {
    json_lines(&ok(home, &["fetch", "--json"]).await.0)
}

fn texts(messages: &[Value]) -> Vec<&str> {
    messages
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect()
}

/// A library client on a home the command made.
async fn client_on(server: &TestServer, home: &Path) -> Client {
    let home = Home::open(home).await.unwrap();
    Client::new(
        home,
        server.addr(),
        Some(server.fingerprint()),
        None,
        quiet(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_talk_both_ways_through_sessions_of_their_devices() {
    let server = spawn_server().await;
    let homes = tempfile::tempdir().unwrap();
    let alice = cli_user(&server, homes.path(), "alice", ALICE).await;
    let bob = cli_user(&server, homes.path(), "bob", BOB).await;

    let me = json_lines(&ok(&alice, &["whoami", "--json"]).await.0);
    assert_eq!(me[0]["device"], 1);
    let (whoami, _) = ok(&alice, &["whoami"]).await;
    assert_eq!(whoami.lines().last(), Some("device 1"), "{whoami}");

    for text in ["one", "two", "three"] {
        ok(&alice, &["send", BOB, text]).await;
    }
    let got = fetched(&bob).await;
    assert_eq!(texts(&got), ["one", "two", "three"]);
    assert!(
        got.iter()
            .all(|m| m["from"] == ALICE && m.get("to").is_none())
    );
    assert!(fetched(&bob).await.is_empty(), "acknowledged once opened");

    for text in ["back", "again"] {
        ok(&bob, &["send", ALICE, text]).await;
    }
    assert_eq!(texts(&fetched(&alice).await), ["back", "again"]);
    ok(&alice, &["send", BOB, "after a DH step"]).await;
    assert_eq!(texts(&fetched(&bob).await), ["after a DH step"]);

    let history = json_lines(&ok(&bob, &["history", "--json"]).await.0);
    let directions: Vec<&str> = history
        .iter()
        .map(|e| e["direction"].as_str().unwrap())
        .collect();
    assert_eq!(directions, ["in", "in", "in", "out", "out", "in"]);

    // What the server holds is a v2 envelope, not the text.
    ok(&alice, &["send", BOB, "plain words"]).await;
    let bob_client = client_on(&server, &bob).await;
    let session = bob_client.login().await.unwrap();
    let messages = fetch_by_hand(&session).await;
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].envelope.0[0], 2, "version 2");
    assert_eq!(messages[0].device, Some(1));
    assert!(
        !messages[0]
            .envelope
            .0
            .windows(11)
            .any(|w| w == b"plain words")
    );
    session.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_opened_out_of_order_all_open_once() {
    let server = spawn_server().await;
    let homes = tempfile::tempdir().unwrap();
    let alice = cli_user(&server, homes.path(), "alice", ALICE).await;
    let bob = cli_user(&server, homes.path(), "bob", BOB).await;
    ok(&alice, &["send", BOB, "hello"]).await;
    assert_eq!(texts(&fetched(&bob).await), ["hello"]);
    ok(&bob, &["send", ALICE, "hi"]).await;
    for text in ["first", "second", "third", "fourth"] {
        ok(&alice, &["send", BOB, text]).await;
    }
    // Alice's first message is still a prekey message, so also take one
    // before Bob's answer reached her; then a new chain after it.
    let bob_client = client_on(&server, &bob).await;
    let mut session = bob_client.login().await.unwrap();
    let messages = fetch_by_hand(&session).await;
    assert_eq!(messages.len(), 4);
    let mut opened = Vec::new();
    for i in [3, 1, 0, 2] {
        let got = session.take_pushed(messages[i].clone()).await.unwrap();
        opened.push(got.expect("opened").expect("stored").text);
    }
    assert_eq!(opened, ["fourth", "second", "first", "third"]);
    let again = session.take_pushed(messages[1].clone()).await.unwrap();
    assert!(
        matches!(again, Ok(None)),
        "a redelivery is taken once: {again:?}"
    );
    session.close().await;
    assert!(fetched(&bob).await.is_empty());
}

/// `carrier devices add` in `home`, running until a device links; gives
/// the code and a handle that returns its output.
fn devices_add(home: &Path) -> (String, std::thread::JoinHandle<std::process::Output>) {
    let mut child = carrier_in(home, &["devices", "add"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("carrier starts");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).expect("the code line");
    let code = line
        .trim()
        .strip_prefix("Link code: ")
        .unwrap_or_else(|| panic!("a link code line: {line:?}"))
        .to_owned();
    let waiter = std::thread::spawn(move || {
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
        let mut out = wait_within(child, "carrier devices add");
        out.stdout = rest.into_bytes();
        out
    });
    (code, waiter)
}

/// Links `homes/NAME` to `phone`'s account through `existing` as device
/// `id`; the new home.
async fn link(
    server: &impl Reachable,
    existing: &Path,
    homes: &Path,
    name: &str,
    phone: &str,
    id: u32,
) -> PathBuf {
    let existing = existing.to_owned();
    let (code, adding) = tokio::task::spawn_blocking(move || devices_add(&existing))
        .await
        .unwrap();
    let home = homes.join(name);
    let (stdout, _) = ok(
        &home,
        &[
            "--server",
            &server.addr(),
            "link",
            phone,
            &code,
            "--name",
            name,
        ],
    )
    .await;
    assert_eq!(stdout.trim(), format!("Linked to {phone} as device {id}"));
    let added = tokio::task::spawn_blocking(move || adding.join().unwrap())
        .await
        .unwrap();
    let (status, stdout, stderr) = outcome(&added);
    assert_eq!(status, 0, "{stderr}");
    assert_eq!(stdout.trim(), format!("Linked device {id} ({name})"));
    home
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linked_device_receives_sees_sync_copies_and_can_be_removed() {
    let server = spawn_server().await;
    let homes = tempfile::tempdir().unwrap();
    let alice = cli_user(&server, homes.path(), "alice", ALICE).await;
    let bob = cli_user(&server, homes.path(), "bob", BOB).await;
    ok(&bob, &["send", ALICE, "before the tablet"]).await;
    assert_eq!(texts(&fetched(&alice).await), ["before the tablet"]);

    let tablet = link(&server, &alice, homes.path(), "tablet", ALICE, 2).await;
    let (me, _) = ok(&tablet, &["whoami", "--json"]).await;
    let me = &json_lines(&me)[0];
    assert_eq!(
        (me["phone"].as_str(), me["device"].as_u64()),
        (Some(ALICE), Some(2))
    );
    let alice_fp = json_lines(&ok(&alice, &["whoami", "--json"]).await.0)[0]["fingerprint"].clone();
    assert_eq!(me["fingerprint"], alice_fp, "one account key");

    let listed = json_lines(&ok(&tablet, &["devices", "--json"]).await.0);
    let ids: Vec<(u64, bool)> = listed
        .iter()
        .map(|d| {
            (
                d["id"].as_u64().unwrap(),
                d["this_device"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(ids, [(1, false), (2, true)]);
    assert_eq!(listed[1]["name"], "tablet");

    // Alice's phone writes; Bob gets it, and is told once that Alice added
    // a device; the tablet gets a copy.
    ok(&alice, &["send", BOB, "from the phone"]).await;
    let (stdout, stderr) = ok(&bob, &["fetch", "--json"]).await;
    let got = json_lines(&stdout);
    assert_eq!(texts(&got), ["from the phone"]);
    assert_eq!(
        stderr
            .matches(&format!("{ALICE} added a device: tablet"))
            .count(),
        1,
        "{stderr}"
    );
    ok(&alice, &["send", BOB, "again"]).await;
    let (_, stderr) = ok(&bob, &["fetch"]).await;
    assert!(!stderr.contains("added a device"), "told once: {stderr}");
    let copy = fetched(&tablet).await;
    assert_eq!(texts(&copy), ["from the phone", "again"]);
    assert_eq!(
        (copy[0]["from"].as_str(), copy[0]["to"].as_str()),
        (Some(ALICE), Some(BOB))
    );
    assert_eq!(copy[0]["id"], got[0]["id"], "one message id");
    let (human, _) = ok(&tablet, &["history"]).await;
    assert!(human.contains("from the phone"), "{human}");

    // Bob's next message reaches both of Alice's devices, and the phone
    // sees what the tablet sent.
    ok(&bob, &["send", ALICE, "to both"]).await;
    assert_eq!(texts(&fetched(&alice).await), ["to both"]);
    assert_eq!(texts(&fetched(&tablet).await), ["to both"]);
    ok(&tablet, &["send", BOB, "from the tablet"]).await;
    assert_eq!(texts(&fetched(&bob).await), ["from the tablet"]);
    let copy = fetched(&alice).await;
    assert_eq!(
        (copy[0]["to"].as_str(), copy[0]["text"].as_str()),
        (Some(BOB), Some("from the tablet"))
    );

    // Removed from the phone: the tablet is out, the phone still receives.
    let (stdout, _) = ok(&alice, &["devices", "remove", "2"]).await;
    assert_eq!(stdout.trim(), "Removed device 2 (tablet)");
    ok(&bob, &["send", ALICE, "after removal"]).await;
    assert_eq!(texts(&fetched(&alice).await), ["after removal"]);
    let (status, _, stderr) = outcome(&carrier_out(&tablet, &["fetch"]).await);
    assert_ne!(status, 0, "a removed device cannot log in: {stderr}");
    assert!(stderr.contains("unknown_device"), "{stderr}");
    let listed = json_lines(&ok(&alice, &["devices", "--json"]).await.0);
    assert_eq!(listed.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn safety_numbers_match_on_both_sides_and_a_new_key_changes_them() {
    let server = spawn_server().await;
    let homes = tempfile::tempdir().unwrap();
    let alice = cli_user(&server, homes.path(), "alice", ALICE).await;
    let bob = cli_user(&server, homes.path(), "bob", BOB).await;
    let (a, _) = ok(&alice, &["safety-number", BOB]).await;
    let (b, _) = ok(&bob, &["safety-number", ALICE]).await;
    assert_eq!(a, b);
    let groups: Vec<&str> = a.split_whitespace().collect();
    assert_eq!(groups.len(), 12, "{a}");
    assert!(
        groups
            .iter()
            .all(|g| g.len() == 5 && g.bytes().all(|c| c.is_ascii_digit()))
    );
    let json = json_lines(&ok(&alice, &["safety-number", BOB, "--json"]).await.0);
    assert_eq!(json[0]["safety_number"].as_str(), Some(a.trim()));

    // Sessions both ways with Bob's device 1.
    ok(&alice, &["send", BOB, "to the old key"]).await;
    assert_eq!(texts(&fetched(&bob).await), ["to the old key"]);

    // Bob registers anew (a new account key, and a device 1 again): what he
    // sends is kept back and Alice is refused until she trusts the key.
    let bob2 = cli_user(&server, homes.path(), "bob2", BOB).await;
    ok(&bob2, &["send", ALICE, "from the new key"]).await;
    let (stdout, stderr) = ok(&alice, &["fetch"]).await;
    assert!(stdout.is_empty() && stderr.contains("changed"), "{stderr}");
    let (status, _, stderr) = outcome(&carrier_out(&alice, &["safety-number", BOB]).await);
    assert_eq!(status, 6, "{stderr}");
    let (status, _, stderr) = outcome(&carrier_out(&alice, &["send", BOB, "hi"]).await);
    assert_eq!(status, 6, "{stderr}");
    ok(
        &alice,
        &["trust", BOB, "--fingerprint", &fingerprint_of(&bob2).await],
    )
    .await;
    let (a2, _) = ok(&alice, &["safety-number", BOB]).await;
    let (b2, _) = ok(&bob2, &["safety-number", ALICE]).await;
    assert_eq!(a2, b2);
    assert_ne!(a2, a);
    assert_eq!(texts(&fetched(&alice).await), ["from the new key"]);
    ok(&alice, &["send", BOB, "to the new key"]).await;
    assert_eq!(
        texts(&fetched(&bob2).await),
        ["to the new key"],
        "not sealed in the old device 1's session"
    );
}

async fn fingerprint_of(home: &Path) -> String {
    json_lines(&ok(home, &["whoami", "--json"]).await.0)[0]["fingerprint"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Claims `n` of `phone`'s device 1's one-time prekeys as `by`; the last
/// result.
async fn drain(server: &TestServer, by: &TestUser, phone: &str, n: usize) -> ClaimedPrekeys {
    let client = by.client_for(server).await;
    let session = client.login().await.unwrap();
    let mut last = None;
    for _ in 0..n {
        let Response::Claimed { claims } = session
            .conn
            .call(Request::Claim {
                phone: phone.into(),
                devices: vec![1],
            })
            .await
            .unwrap()
        else {
            panic!("claimed")
        };
        last = Some(ClaimedPrekeys::parse(&claims[0].0).unwrap());
    }
    session.close().await;
    last.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drained_prekeys_fall_back_to_last_resort_and_are_replenished() {
    let server = spawn_server().await;
    let homes = tempfile::tempdir().unwrap();
    let alice = cli_user(&server, homes.path(), "alice", ALICE).await;
    let bob = cli_user(&server, homes.path(), "bob", BOB).await;
    // The claim rate allows 60 devices a minute per account: two drainers.
    let carol = register(&server, CAROL, KeyType::P256).await;
    let dave = register(&server, DAVE, KeyType::P256).await;
    drain(&server, &carol, BOB, 50).await;
    let last = drain(&server, &dave, BOB, 51).await;
    assert!(
        last.one_time.is_none() && last.kem_one_time.is_none(),
        "drained: {:?} {:?}",
        last.one_time.map(|p| p.id),
        last.kem_one_time.map(|p| p.id)
    );

    ok(&alice, &["send", BOB, "on last-resort keys"]).await;
    assert_eq!(texts(&fetched(&bob).await), ["on last-resort keys"]);
    ok(&bob, &["send", ALICE, "and back"]).await;
    assert_eq!(texts(&fetched(&alice).await), ["and back"]);

    // Bob's logins saw the empty pools and published new keys.
    let again = drain(&server, &dave, BOB, 1).await;
    assert!(again.one_time.is_some() && again.kem_one_time.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v1_envelope_is_refused_with_a_clear_reason() {
    let server = spawn_server().await;
    let homes = tempfile::tempdir().unwrap();
    let bob = cli_user(&server, homes.path(), "bob", BOB).await;
    // A v1 client cannot even queue one: its `send` is retired, with a
    // message naming v1 and what replaced it.
    let old = register_account(&server, ALICE, KeyType::P256).await;
    let conn = logged_in_connection(&server, ALICE, &old.identity()).await;
    let err = conn
        .call(carrier::protocol::Request::Send {
            id: carrier::domain::MessageId::random(),
            to: BOB.into(),
            envelope: carrier::protocol::B64(vec![1; 200]),
        })
        .await
        .unwrap_err();
    assert_eq!(
        server_code(&err),
        Some(carrier::protocol::ErrorCode::VersionRetired),
        "{err}"
    );
    assert!(err.to_string().contains("v1"), "{err}");
    // A home without a device cannot send through the library either.
    let session = old.client.login().await.unwrap();
    let err = session.send(BOB, "v1 text").await.unwrap_err();
    assert!(err.to_string().contains("no device"), "{err}");
    session.close().await;
    conn.close().await;
    let (_, stderr) = ok(&bob, &["fetch"]).await;
    assert!(stderr.contains("No new messages"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_added_elsewhere_is_learnt_from_stale_devices_and_gets_its_copy() {
    let server = spawn_server().await;
    let homes = tempfile::tempdir().unwrap();
    let phone = cli_user(&server, homes.path(), "phone", ALICE).await;
    let bob = cli_user(&server, homes.path(), "bob", BOB).await;
    let tablet = link(&server, &phone, homes.path(), "tablet", ALICE, 2).await;
    ok(&phone, &["send", BOB, "one"]).await;
    assert_eq!(texts(&fetched(&tablet).await), ["one"]);

    // The tablet adds a laptop; the phone still remembers the list of two
    // and sends its copies under it: the server answers stale_devices with
    // the list of three, and the laptop gets its copy too.
    let laptop = link(&server, &tablet, homes.path(), "laptop", ALICE, 3).await;
    ok(&phone, &["send", BOB, "two"]).await;
    assert_eq!(texts(&fetched(&bob).await), ["one", "two"]);
    assert_eq!(texts(&fetched(&tablet).await), ["two"]);
    let copy = fetched(&laptop).await;
    assert_eq!(texts(&copy), ["two"]);
    assert_eq!(copy[0]["to"], BOB);

    // Removed by the laptop: the phone's next copies leave the tablet out.
    ok(&laptop, &["devices", "remove", "2"]).await;
    ok(&phone, &["send", BOB, "three"]).await;
    assert_eq!(texts(&fetched(&laptop).await), ["three"]);
    assert_eq!(texts(&fetched(&bob).await), ["three"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_killed_between_opening_and_acknowledging_loses_nothing() {
    let server = spawn_server().await;
    let homes = tempfile::tempdir().unwrap();
    let alice = cli_user(&server, homes.path(), "alice", ALICE).await;
    let bob = cli_user(&server, homes.path(), "bob", BOB).await;
    const N: usize = 20;
    for i in 0..N {
        ok(&alice, &["send", BOB, &format!("message {i}")]).await;
    }
    // `fetch` commits each message as it opens it and acknowledges the
    // batch after: killed once the first is stored, it has acknowledged
    // nothing, and sessions have moved on.
    let mut child = carrier_in(&bob, &["fetch"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let watcher = Home::open(&bob).await.unwrap();
    within("the first message stored", async {
        while watcher.history().await.unwrap().is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    })
    .await;
    child.kill().expect("SIGKILL");
    child.wait().unwrap();
    let stored_before = watcher.history().await.unwrap().len();
    assert!(stored_before < N, "killed before the end of the batch");
    watcher.close().await;

    let (stdout, stderr) = ok(&bob, &["fetch", "--json"]).await;
    assert!(!stderr.contains("refused"), "{stderr}");
    let again = json_lines(&stdout);
    assert_eq!(again.len(), N - stored_before, "the rest, once");
    let history = json_lines(&ok(&bob, &["history", "--json"]).await.0);
    let mut texts: Vec<&str> = history
        .iter()
        .map(|e| e["text"].as_str().unwrap())
        .collect();
    texts.sort();
    let mut want: Vec<String> = (0..N).map(|i| format!("message {i}")).collect();
    want.sort();
    assert_eq!(texts, want, "every message stored exactly once");
    assert!(fetched(&bob).await.is_empty(), "and all acknowledged");
    ok(&bob, &["send", ALICE, "still in step"]).await;
    let back = fetched(&alice).await;
    assert_eq!(back[0]["text"], "still in step");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_passphrase_the_sessions_are_sealed_at_rest_like_the_key() {
    let server = spawn_server().await;
    let homes = tempfile::tempdir().unwrap();
    let alice = cli_user(&server, homes.path(), "alice", ALICE).await;
    // Bob registers as `carrier register` does, with a passphrase.
    let bob = homes.path().join("bob");
    let client = Client::new(
        Home::open(&bob).await.unwrap(),
        server.addr(),
        Some(server.fingerprint()),
        Some("correct horse".to_owned().into()),
        quiet(),
    );
    let (session, _) = client
        .register(BOB, KeyType::P256, |p| {
            server
                .try_code_for(p.as_str())
                .ok_or_else(|| carrier::client::ClientError::Input("no code".into()))
        })
        .await
        .unwrap();
    session.close().await;
    let state = std::fs::read_to_string(bob.join("state.pem")).unwrap();
    assert!(state.contains("ENCRYPTED PRIVATE KEY"), "{state}");

    ok(&alice, &["send", BOB, "sealed at rest"]).await;
    let (status, _, stderr) = outcome(&carrier_out(&bob, &["fetch"]).await);
    assert_eq!(status, 2, "no passphrase, no state: {stderr}");
    assert!(
        stderr.contains("is encrypted with a passphrase: set CARRIER_PASSPHRASE"),
        "the error says where the passphrase goes: {stderr}"
    );
    let (stdout, _) = ok(&bob, &["--passphrase", "correct horse", "fetch", "--json"]).await;
    assert_eq!(texts(&json_lines(&stdout)), ["sealed at rest"]);
    let mut db = std::fs::read(bob.join("client.db")).unwrap();
    db.extend(std::fs::read(bob.join("client.db-wal")).unwrap_or_default());
    let device_encoding = [&[1u8, 12][..], BOB.as_bytes()].concat();
    assert!(
        !db.windows(device_encoding.len())
            .any(|w| w == device_encoding),
        "the device key is not stored in the clear"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_opens_pushed_messages_and_sends_through_the_same_sessions() {
    use std::io::Write;

    let server = spawn_server().await;
    let homes = tempfile::tempdir().unwrap();
    let alice = cli_user(&server, homes.path(), "alice", ALICE).await;
    let bob = cli_user(&server, homes.path(), "bob", BOB).await;
    let mut child = carrier_in(&bob, &["chat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let first = within("chat starts", lines.recv()).await.unwrap();
    assert!(first.starts_with("Logged in as"), "{first}");

    ok(&alice, &["send", BOB, "pushed live"]).await;
    let shown = within("the pushed message", lines.recv()).await.unwrap();
    assert!(shown.ends_with(&format!("{ALICE}: pushed live")), "{shown}");

    writeln!(stdin, "send {ALICE} answered from chat").unwrap();
    writeln!(stdin, "quit").unwrap();
    drop(stdin);
    let out = tokio::task::spawn_blocking(move || wait_within(child, "carrier chat"))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(texts(&fetched(&alice).await), ["answered from chat"]);
    assert!(fetched(&bob).await.is_empty(), "acknowledged by chat");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_the_account_has_no_room_for_is_refused_at_once() {
    let server = spawn_server_with(|c| c.limits.devices_per_account = 1).await;
    let homes = tempfile::tempdir().unwrap();
    let alice = cli_user(&server, homes.path(), "alice", ALICE).await;
    let existing = alice.clone();
    let (code, adding) = tokio::task::spawn_blocking(move || devices_add(&existing))
        .await
        .unwrap();
    // The new device is answered as soon as the existing one gives up, not
    // when the code expires in 10 minutes (`carrier_out` fails a command
    // that takes longer than the test's patience).
    let tablet = homes.path().join("tablet");
    let addr = server.addr();
    let linking = carrier_out(&tablet, &["--server", &addr, "link", ALICE, &code]).await;
    let (status, stdout, stderr) = outcome(&linking);
    assert_eq!(status, 4, "refused, not a usage error: {stdout}{stderr}");
    assert!(
        stderr.contains("could not complete the link and refused it"),
        "{stderr}"
    );
    // The same code again is well formed but dead: refused too. A code
    // that is not one at all is the user's input, status 2.
    let (status, _, stderr) =
        outcome(&carrier_out(&tablet, &["--server", &addr, "link", ALICE, &code]).await);
    assert_eq!(status, 4, "{stderr}");
    assert!(stderr.contains("no device of"), "{stderr}");
    let (status, _, stderr) =
        outcome(&carrier_out(&tablet, &["--server", &addr, "link", ALICE, "nonsense"]).await);
    assert_eq!(status, 2, "{stderr}");
    assert!(stderr.contains("not a link code"), "{stderr}");
    let added = tokio::task::spawn_blocking(move || adding.join().unwrap())
        .await
        .unwrap();
    let (status, _, stderr) = outcome(&added);
    assert_ne!(status, 0);
    assert!(stderr.contains("too_many_devices"), "{stderr}");
    let (status, _, _) = outcome(&carrier_out(&tablet, &["whoami"]).await);
    assert_ne!(status, 0, "the tablet's home holds no account");
    let listed = json_lines(&ok(&alice, &["devices", "--json"]).await.0);
    assert_eq!(listed.len(), 1);
}

/// What waits for the session's device, fetched without the client taking
/// it, so a test can hand the messages to it in an order of its own.
pub(super) async fn fetch_by_hand(
    session: &carrier::client::Session<'_>,
) -> Vec<carrier::protocol::Delivered> {
    let fetch = Request::Fetch {
        limit: None,
        after: None,
    };
    match session.conn.call(fetch).await.unwrap() {
        Response::Messages { messages, .. } => messages,
        other => panic!("a fetch answered {other:?}"),
    }
}
