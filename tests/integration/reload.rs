//! SIGHUP reloads the configuration: a changed limit, code delivery or
//! set of neighbours takes effect while sessions stay up, and a broken file
//! is refused with the running configuration kept.

use std::process::Command;
use std::time::{Duration, Instant};

use carrier::domain::Fingerprint;
use carrier::protocol::{ErrorCode, KeyType};

use crate::common::{
    ALICE, BOB, CAROL, PATIENCE, Reachable, new_client, register, register_client, server_code,
};
use crate::process::{ServerFiles, ServerProcess};

/// Sends SIGHUP, then waits until the log has `needle` one more time.
fn hang_up(files: &ServerFiles, server: &ServerProcess, needle: &str) {
    let before = files.log_text().matches(needle).count();
    let sent = Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .expect("kill runs");
    assert!(sent.success());
    let deadline = Instant::now() + PATIENCE;
    while files.log_text().matches(needle).count() == before {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in:\n{}",
            files.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_a_new_limit_and_refuses_a_broken_file() {
    let files = ServerFiles::new();
    let one_session = "[limits]\nmax_sessions_per_user = 1\n";
    files.set_extra_config("", one_session);
    let server = files.start();
    let alice = register(&server, ALICE, KeyType::P256).await;
    let _bob = register(&server, BOB, KeyType::P256).await;
    let first = alice.client.login().await.expect("a first session");
    let err = alice.client.login().await.err().expect("one session only");
    assert_eq!(server_code(&err), Some(ErrorCode::RateLimited), "{err}");

    files.set_extra_config("", "[limits]\nmax_sessions_per_user = 2\n");
    hang_up(&files, &server, "configuration reloaded");
    // Named by its key, one line for each limit that changed.
    let log = files.log_text();
    let changed: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("limit changed"))
        .collect();
    assert_eq!(changed.len(), 1, "{log}");
    assert!(
        changed[0].ends_with(r#"limit changed key="limits.max_sessions_per_user" from=1 to=2"#),
        "{log}"
    );
    let second = alice
        .client
        .login()
        .await
        .expect("the new limit allows two");
    first
        .send(BOB, "still here")
        .await
        .expect("the first session survived");

    files.set_extra_config("", "[limits]\nmax_sessions_per_user = 0\n");
    hang_up(&files, &server, "configuration reload refused");
    // A number past its maximum is refused on reload as it is at start.
    let huge = "[limits]\nmax_sessions_per_user = 9223372036854775807\n";
    files.set_extra_config("", huge);
    hang_up(&files, &server, "configuration reload refused");
    let config = std::fs::read_to_string(&files.config).unwrap();
    let line = 1 + config
        .lines()
        .position(|l| l.starts_with("max_sessions_per_user"))
        .unwrap();
    let said = format!(
        "{}:{line}: key 'limits.max_sessions_per_user': must be at most 1000000",
        files.config.display()
    );
    assert!(files.log_text().contains(&said), "{}", files.log_text());
    let err = alice.client.login().await.err().expect("still two at most");
    assert_eq!(server_code(&err), Some(ErrorCode::RateLimited), "{err}");
    second
        .send(BOB, "and so did this one")
        .await
        .expect("sessions survive");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_changes_where_codes_go_for_the_next_registration() {
    let files = ServerFiles::new();
    files.set_otp_section("[otp]\ndelivery = \"console\"\n");
    let server = files.start();
    let (_home, client) = new_client(&server.addr(), Some(server.fingerprint())).await;
    let err = register_client(&server, &client, ALICE, KeyType::P256)
        .await
        .expect_err("codes go to the console, not the file");
    assert!(err.to_string().contains("no code"), "{err}");
    assert!(server.codes_for(ALICE).is_empty());

    files.set_otp_section("[otp]\ndelivery = \"file\"\nfile = \"otp.txt\"\n");
    hang_up(&files, &server, "configuration reloaded");
    let log = files.log_text();
    let otp_file = &files.otp_file;
    assert!(
        log.contains(&format!(
            r#"one-time code delivery changed delivery="file" file={otp_file:?}"#
        )),
        "{log}"
    );
    let alice = register(&server, ALICE, KeyType::P256).await;
    assert_eq!(
        server.codes_for(ALICE).len(),
        1,
        "the next code went to the file"
    );
    alice.client.login().await.expect("the registration holds");

    // A delivery command is not logged: it may carry a gateway's secret.
    let secret = "token-4a7c91e2";
    files.set_otp_section(&format!(
        "[otp]\ndelivery = \"command\"\ncommand = \"SMS_TOKEN={secret} cat >> '{}'\"\n",
        otp_file.display()
    ));
    hang_up(&files, &server, "configuration reloaded");
    let log = files.log_text();
    assert!(
        log.contains(r#"one-time code delivery changed delivery="command""#),
        "{log}"
    );
    assert!(
        !log.contains(secret),
        "the command leaked into the log:\n{log}"
    );
    register(&server, BOB, KeyType::P256).await;
    assert_eq!(server.codes_for(BOB).len(), 1, "the command delivered it");
}

/// What `carrier-server admin links --json` on `files`'s running server
/// says of the neighbour `peer`, if it lists it.
fn link_state(files: &ServerFiles, peer: &Fingerprint) -> Option<serde_json::Value> {
    let mut cmd = files.command();
    cmd.args(["admin", "links", "--json"]);
    let out = crate::process::run(&mut cmd, "admin links");
    assert!(out.status.success(), "{}", crate::process::stderr_of(&out));
    let links: serde_json::Value =
        serde_json::from_str(&crate::process::stdout_of(&out)).expect("admin links --json");
    links
        .as_array()
        .expect("a list")
        .iter()
        .find(|l| l["fingerprint"].as_str() == Some(&peer.to_hex()))
        .cloned()
}

/// Whether the link to `peer` is up, as `admin links` says.
fn link_up(files: &ServerFiles, peer: &Fingerprint) -> bool {
    link_state(files, peer).is_some_and(|l| l["up"].as_bool() == Some(true))
}

/// Waits until `check` holds, asking again every few milliseconds.
fn wait_for(what: &str, files: &ServerFiles, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen; log:\n{}",
            files.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The log's line saying a reload's change waits for a restart.
fn restart_warning(files: &ServerFiles) -> String {
    let log = files.log_text();
    log.lines()
        .find(|l| l.contains("takes effect at the next restart"))
        .unwrap_or_else(|| panic!("no restart warning in:\n{log}"))
        .to_owned()
}

/// The runtime's threads are started once: a reload that changes their
/// number says it takes effect at the next restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_says_worker_threads_wait_for_a_restart() {
    let files = ServerFiles::new();
    files.set_extra_config("worker_threads = 1", "");
    let server = files.start();
    files.set_extra_config("worker_threads = 2", "");
    hang_up(&files, &server, "configuration reloaded");
    let warning = restart_warning(&files);
    assert!(warning.contains("server.worker_threads"), "{warning}");
}

/// A sender's share of a queue is read at start, like the queue: a reload
/// that changes only the share says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_says_a_senders_share_waits_for_a_restart() {
    let files = ServerFiles::new();
    let server = files.start();
    files.set_extra_config("", "[queue]\nmax_messages_per_sender = 7\n");
    hang_up(&files, &server, "configuration reloaded");
    let warning = restart_warning(&files);
    assert!(warning.contains("queue"), "{warning}");
}

/// A server that started alone gains a neighbour on SIGHUP, relays to it,
/// and loses it on the next SIGHUP, while its own sessions stay up and the
/// neighbour, which still lists it, is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_adds_and_removes_a_neighbour() {
    let mut files_a = ServerFiles::new();
    files_a.set_links(0, &[]);
    let a = files_a.start();
    let a_link = a.link_addr.expect("a listens for links");
    let mut files_b = ServerFiles::new();
    files_b.set_links(0, &[(a_link, Some(a.fingerprint))]);
    let b = files_b.start();
    let b_link = b.link_addr.expect("b listens for links");
    assert!(!link_up(&files_a, &b.fingerprint), "a does not know b yet");

    files_a.set_links(0, &[(b_link, Some(b.fingerprint))]);
    hang_up(&files_a, &a, "configuration reloaded");
    assert!(
        files_a.log_text().contains(&format!(
            "neighbour added neighbour={b_link} fingerprint={}",
            b.fingerprint
        )),
        "{}",
        files_a.log_text()
    );
    assert!(
        !files_a
            .log_text()
            .contains("takes effect at the next restart"),
        "neighbours change without a restart"
    );
    wait_for("the link to b", &files_a, || {
        link_up(&files_a, &b.fingerprint)
    });

    let alice = register(&a, ALICE, KeyType::P256).await;
    let _carol = register(&a, CAROL, KeyType::P256).await;
    let bob = register(&b, BOB, KeyType::P256).await;
    crate::neighbourhood::eventually("a learns bob", || {
        crate::neighbourhood::sees(&alice.client, BOB)
    })
    .await;
    let session = alice.client.login().await.expect("alice logs in");
    session
        .send(BOB, "across the new link")
        .await
        .expect("relayed to b");
    assert_eq!(
        crate::neighbourhood::fetch_n(&bob, 1).await,
        ["across the new link"]
    );

    files_a.set_links(0, &[]);
    let refusals = || files_a.log_text().matches("refused a server link").count();
    hang_up(&files_a, &a, "configuration reloaded");
    assert!(files_a.log_text().contains("neighbour removed"));
    // b lists a, so b's admin links shows the link whatever its state.
    wait_for("the link to go down", &files_b, || {
        link_state(&files_b, &a.fingerprint).expect("b lists a")["up"] == false
    });
    // b dials again: a refuses it, and the link stays down.
    let before = refusals();
    wait_for("b to knock again", &files_a, || refusals() > before);
    assert!(!link_up(&files_b, &a.fingerprint), "the link came back");
    session
        .send(CAROL, "still connected")
        .await
        .expect("alice's session survived both reloads");
    session
        .send(BOB, "waits for b")
        .await
        .expect("queued for the removed neighbour");
    let b_seen_by_a = link_state(&files_a, &b.fingerprint).expect("a lists b's queue");
    assert_eq!(b_seen_by_a["up"], false, "{b_seen_by_a}");
    assert_eq!(b_seen_by_a["outbound_messages"], 1, "{b_seen_by_a}");
}
