//! The `carrier` command on protocol v2 across a neighbourhood of real
//! `carrier-server` processes linked in a line: each client asks only its
//! own home server, which serves remote users' device lists, forwards
//! claims to their home server and relays each device's envelope. Two
//! servers (both ways through the ratchet, a remote user without devices),
//! three (a message over two links, pushed to a chat, answered from it), a
//! device linked and then removed on the far side.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use carrier::crypto::v2::DeviceList;
use carrier::domain::{Fingerprint, PhoneNumber};
use carrier::protocol::KeyType;
use serde_json::Value;

use super::{cli_user, json_lines, link, ok, texts};
use crate::client_support::{carrier_in, carrier_out, outcome};
use crate::common::{ALICE, BOB, CAROL, DAVE, TestUser, register, within};
use crate::neighbourhood::{eventually, link_addr_of, linked_files};
use crate::process::{ServerFiles, ServerProcess, wait_within};

/// Servers in a line, each linked to the one before and the one after it
/// with their keys pinned. Every server first runs alone to learn its link
/// port and key, then all start again, linked, on the same link ports.
struct Line {
    _files: Vec<ServerFiles>,
    servers: Vec<ServerProcess>,
}

fn line_of(n: usize) -> Line {
    let mut files: Vec<ServerFiles> = (0..n).map(|_| linked_files(&[])).collect();
    let alone: Vec<ServerProcess> = files.iter().map(ServerFiles::start).collect();
    let links: Vec<(SocketAddr, Fingerprint)> = alone
        .iter()
        .map(|s| (link_addr_of(s), s.fingerprint))
        .collect();
    for mut s in alone {
        assert!(s.terminate().success(), "a server stops to be linked");
    }
    for (i, f) in files.iter_mut().enumerate() {
        let neighbours: Vec<(SocketAddr, Option<Fingerprint>)> = [i.checked_sub(1), Some(i + 1)]
            .into_iter()
            .flatten()
            .filter(|&j| j < n)
            .map(|j| (links[j].0, Some(links[j].1)))
            .collect();
        f.set_links(links[i].0.port(), &neighbours);
    }
    let servers = files.iter().map(ServerFiles::start).collect();
    Line {
        _files: files,
        servers,
    }
}

/// `carrier send TO TEXT` from `home`, tried again as a person would while
/// the recipient has not reached the sender's server: an early try ends at
/// once with `unknown_user` (exit 3, no directory entry yet) or with the
/// retryable "no device list" (exit 5, the entry came but the devices not
/// yet), and sends nothing.
async fn send_when_reachable(home: &Path, to: &str, text: &str) {
    within("the recipient's devices reach the sender's server", async {
        loop {
            let (status, _, stderr) = outcome(&carrier_out(home, &["send", to, text]).await);
            match status {
                0 => return,
                3 => assert!(stderr.contains("unknown_user"), "{stderr}"),
                5 => assert!(
                    stderr.contains("has no device list on this server yet"),
                    "{stderr}"
                ),
                _ => panic!("carrier send {to}: status {status}: {stderr}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

/// Fetches in `home` until `n` messages have come (they cross servers, with
/// nothing a client could await); the messages and everything `fetch`
/// printed on standard error.
async fn arrived(home: &Path, n: usize) -> (Vec<Value>, String) {
    let (mut got, mut told) = (Vec::new(), String::new());
    within("messages to cross the neighbourhood", async {
        while got.len() < n {
            let (stdout, stderr) = ok(home, &["fetch", "--json"]).await;
            got.extend(json_lines(&stdout));
            told.push_str(&stderr);
            if got.len() < n {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    })
    .await;
    assert_eq!(got.len(), n, "no more than expected: {got:?}");
    (got, told)
}

/// Waits until the server of `observer` serves version `version` of
/// `phone`'s device list with `bundles` bundles.
async fn lookup_shows(observer: &TestUser, phone: &str, version: u64, bundles: usize) {
    let phone = PhoneNumber::parse(phone).unwrap();
    eventually("the device list crosses the neighbourhood", || async {
        let session = observer.client.login().await.expect("the observer logs in");
        let info = session.lookup(&phone).await.expect("lookup");
        session.close().await;
        info.devices.is_some_and(|d| {
            DeviceList::parse(&d.device_list.0).unwrap().version == version
                && d.bundles.len() == bundles
        })
    })
    .await
}

/// From `home`'s store: the devices of `phone` it has checked, and the last
/// time it used a session with device `device` of theirs.
async fn store_of(home: &Path, phone: &str, device: u32) -> (Vec<i64>, Option<i64>) {
    let url = format!("sqlite://{}?mode=ro", home.join("client.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let devices = sqlx::query_scalar(
        "SELECT device_id FROM peer_devices WHERE phone = $1 ORDER BY device_id",
    )
    .bind(phone)
    .fetch_all(&pool)
    .await
    .unwrap();
    let used = sqlx::query_scalar(
        "SELECT MAX(used_at) FROM sessions WHERE peer = $1 AND peer_device = $2",
    )
    .bind(phone)
    .bind(device as i64)
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    (devices, used)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_talk_both_ways_through_the_ratchet() {
    let line = line_of(2);
    let homes = tempfile::tempdir().unwrap();
    let alice = cli_user(&line.servers[0], homes.path(), "alice", ALICE).await;
    let bob = cli_user(&line.servers[1], homes.path(), "bob", BOB).await;

    // The first message sets a session up with a claim forwarded to Bob's
    // home server; the second goes on in it.
    send_when_reachable(&alice, BOB, "one").await;
    ok(&alice, &["send", BOB, "two"]).await;
    let (got, _) = arrived(&bob, 2).await;
    assert_eq!(texts(&got), ["one", "two"]);
    assert!(got.iter().all(|m| m["from"] == ALICE));

    // Bob answers (his server needs Alice's devices in turn), then Alice
    // writes after the DH step his answer brought.
    send_when_reachable(&bob, ALICE, "back").await;
    assert_eq!(texts(&arrived(&alice, 1).await.0), ["back"]);
    ok(&alice, &["send", BOB, "after a DH step"]).await;
    assert_eq!(texts(&arrived(&bob, 1).await.0), ["after a DH step"]);
    let history = json_lines(&ok(&bob, &["history", "--json"]).await.0);
    let directions: Vec<&str> = history
        .iter()
        .map(|e| e["direction"].as_str().unwrap())
        .collect();
    assert_eq!(directions, ["in", "in", "out", "in"]);

    // Dave's account on Bob's server has no device list (no v2 client):
    // once his entry reaches Alice's server, a send to him ends at once
    // with the retryable error, and says why.
    let _dave = crate::common::register_account(&line.servers[1], DAVE, KeyType::P256).await;
    let stderr = within("Dave's entry reaches server 1", async {
        loop {
            let (status, _, stderr) = outcome(&carrier_out(&alice, &["send", DAVE, "hi"]).await);
            if status == 3 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            assert_eq!(status, 5, "{stderr}");
            break stderr;
        }
    })
    .await;
    assert!(
        stderr.contains("their home is another server") && stderr.contains("try again in a moment"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_of_three_carries_messages_and_a_chat_both_ways() {
    let line = line_of(3);
    let homes = tempfile::tempdir().unwrap();
    let alice = cli_user(&line.servers[0], homes.path(), "alice", ALICE).await;
    let carol = cli_user(&line.servers[2], homes.path(), "carol", CAROL).await;
    send_when_reachable(&alice, CAROL, "over two links").await;
    assert_eq!(texts(&arrived(&carol, 1).await.0), ["over two links"]);

    // Carol chats on server 3: Alice's next message is pushed to her, and
    // her answer from the chat goes back over both links.
    let mut child = carrier_in(&carol, &["chat"])
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
    ok(&alice, &["send", CAROL, "pushed across"]).await;
    let shown = within("the pushed message", lines.recv()).await.unwrap();
    assert!(
        shown.ends_with(&format!("{ALICE}: pushed across")),
        "{shown}"
    );
    writeln!(stdin, "send {ALICE} answered from chat").unwrap();
    let sent = within("the chat's send", lines.recv()).await.unwrap();
    assert!(sent.starts_with("Sent message"), "{sent}");
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
    assert_eq!(texts(&arrived(&alice, 1).await.0), ["answered from chat"]);
    ok(&alice, &["send", CAROL, "and once more"]).await;
    assert_eq!(texts(&arrived(&carol, 1).await.0), ["and once more"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_linked_then_removed_on_the_far_server() {
    let line = line_of(2);
    let homes = tempfile::tempdir().unwrap();
    let alice = cli_user(&line.servers[0], homes.path(), "alice", ALICE).await;
    let bob = cli_user(&line.servers[1], homes.path(), "bob", BOB).await;
    // Someone on Alice's server, to see what that server holds of Bob.
    let observer = register(&line.servers[0], DAVE, KeyType::P256).await;
    send_when_reachable(&alice, BOB, "hello").await;
    assert_eq!(texts(&arrived(&bob, 1).await.0), ["hello"]);

    // Bob links a tablet on his server; once the new list has reached
    // Alice's, her next message goes to both of his devices (the tablet's
    // session set up with a claim forwarded to Bob's server).
    let tablet = link(&line.servers[1], &bob, homes.path(), "tablet", BOB, 2).await;
    lookup_shows(&observer, BOB, 2, 2).await;
    ok(&alice, &["send", BOB, "to both devices"]).await;
    assert_eq!(texts(&arrived(&bob, 1).await.0), ["to both devices"]);
    assert_eq!(texts(&arrived(&tablet, 1).await.0), ["to both devices"]);

    // The tablet answers: Alice hears of the new device once, Bob's phone
    // gets the sync copy.
    ok(&tablet, &["send", ALICE, "from the tablet"]).await;
    let (got, told) = arrived(&alice, 1).await;
    assert_eq!(texts(&got), ["from the tablet"]);
    assert_eq!(
        told.matches(&format!("{BOB} added a device: tablet"))
            .count(),
        1,
        "{told}"
    );
    let (copy, _) = arrived(&bob, 1).await;
    assert_eq!(
        (copy[0]["to"].as_str(), copy[0]["text"].as_str()),
        (Some(ALICE), Some("from the tablet"))
    );
    let (devices, used) = store_of(&alice, BOB, 2).await;
    assert_eq!(devices, [1, 2]);
    assert!(used.is_some(), "a session with the tablet");

    // Bob removes the tablet from his phone: once Alice's server has the
    // new list, her client seals for the phone only.
    let (stdout, _) = ok(&bob, &["devices", "remove", "2"]).await;
    assert_eq!(stdout.trim(), "Removed device 2 (tablet)");
    lookup_shows(&observer, BOB, 3, 1).await;
    ok(&alice, &["send", BOB, "after removal"]).await;
    assert_eq!(texts(&arrived(&bob, 1).await.0), ["after removal"]);
    let (devices, used_after) = store_of(&alice, BOB, 2).await;
    assert_eq!(devices, [1], "the removed device is forgotten");
    assert_eq!(
        used_after, None,
        "the sessions with the tablet are deleted, and none was set up again to seal for it"
    );
    let (status, _, stderr) = outcome(&carrier_out(&tablet, &["fetch"]).await);
    assert_ne!(status, 0, "a removed device cannot log in: {stderr}");
    assert!(stderr.contains("unknown_device"), "{stderr}");
}
