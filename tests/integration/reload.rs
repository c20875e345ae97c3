//! SIGHUP reloads the configuration: a changed limit takes effect while
//! sessions stay up, and a broken file is refused with the running
//! configuration kept.

use std::process::Command;
use std::time::{Duration, Instant};

use carrier::protocol::{ErrorCode, KeyType};

use crate::common::{ALICE, BOB, PATIENCE, register, server_code};
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
    assert!(files.log_text().contains("limits changed"));
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
    let err = alice.client.login().await.err().expect("still two at most");
    assert_eq!(server_code(&err), Some(ErrorCode::RateLimited), "{err}");
    second
        .send(BOB, "and so did this one")
        .await
        .expect("sessions survive");
}
