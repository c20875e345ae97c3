//! What the server's log looks like to an operator: plain text (no colour
//! codes) when standard error is a file, JSON lines on request, and the
//! open-file warning only for a limit the operator chose.

use crate::process::ServerFiles;

const ULIMIT_WARNING: &str = "server.max_connections is above what the open-file limit";

#[test]
fn the_log_is_plain_text_and_warns_only_about_a_chosen_connection_limit() {
    let files = ServerFiles::new();
    let mut server = files.start_with_open_file_limit(1024);
    assert!(server.terminate().success());
    let log = files.log_text();
    assert!(log.contains("server stopped"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a log file: {log:?}"
    );
    assert!(!log.contains(ULIMIT_WARNING), "{log}");

    files.set_extra_config("max_connections = 20000", "");
    let mut server = files.start_with_open_file_limit(1024);
    assert!(server.terminate().success());
    assert!(
        files.log_text().contains(ULIMIT_WARNING),
        "{}",
        files.log_text()
    );
}

#[test]
fn log_format_json_writes_one_object_per_line() {
    let files = ServerFiles::new();
    files.set_extra_config("", "[log]\nformat = \"json\"\n");
    let mut server = files.start();
    assert!(server.terminate().success());
    let log = files.log_text();
    let mut messages = Vec::new();
    for line in log.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        messages.push(
            v["fields"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    assert!(messages.iter().any(|m| m == "server stopped"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_nearly_full_is_logged_once_on_the_way_up() {
    use carrier::protocol::KeyType;

    use crate::common::{ALICE, BOB, register};
    const WARNING: &str = "a queue is nearly full";
    let files = ServerFiles::new();
    files.set_extra_config(
        "",
        "[queue]\nmax_messages_per_recipient = 10\nmax_messages_per_sender = 10\n",
    );
    let server = files.start();
    let alice = register(&server, ALICE, KeyType::P256).await;
    let _bob = register(&server, BOB, KeyType::P256).await;
    let session = alice.client.login().await.expect("alice logs in");
    for i in 0..8 {
        session.send(BOB, &format!("{i}")).await.expect("room left");
    }
    assert!(!files.log_text().contains(WARNING), "{}", files.log_text());
    for i in 8..10 {
        session.send(BOB, &format!("{i}")).await.expect("room left");
    }
    assert!(
        session.send(BOB, "one too many").await.is_err(),
        "the queue is full"
    );
    assert_eq!(
        files.log_text().matches(WARNING).count(),
        1,
        "{}",
        files.log_text()
    );
}

#[test]
fn a_refused_link_is_not_logged_as_up_and_the_dialer_is_told() {
    use std::time::{Duration, Instant};

    use crate::common::PATIENCE;
    const TOLD: &str = "the neighbour closed the link without accepting it";
    let mut refusing = ServerFiles::new();
    refusing.set_links(0, &[]);
    let refuser = refusing.start();
    let mut dialing = ServerFiles::new();
    dialing.set_links(0, &[(refuser.link_addr.expect("a link port"), None)]);
    let _dialer = dialing.start();
    let deadline = Instant::now() + PATIENCE;
    while !dialing.log_text().contains(TOLD) {
        assert!(Instant::now() < deadline, "{}", dialing.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(refusing.log_text().contains("refused a server link"));
    assert!(
        !dialing.log_text().contains("link up"),
        "{}",
        dialing.log_text()
    );
}
