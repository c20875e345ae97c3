//! SIGHUP reloads the configuration: a changed limit or code delivery
//! takes effect while sessions stay up, and a broken file is refused with
//! the running configuration kept.

use std::process::Command;
use std::time::{Duration, Instant};

use carrier::protocol::{ErrorCode, KeyType};

use crate::common::{
    ALICE, BOB, PATIENCE, Reachable, new_client, register, register_client, server_code,
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
    // A number past its maximum is refused on reload as it is at start.
    let huge = "[limits]\nmax_sessions_per_user = 9223372036854775807\n";
    files.set_extra_config("", huge);
    hang_up(&files, &server, "configuration reload refused");
    assert!(
        files.log_text().contains("must be at most 1000000"),
        "{}",
        files.log_text()
    );
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
    assert!(files.log_text().contains("one-time code delivery changed"));
    let alice = register(&server, ALICE, KeyType::P256).await;
    assert_eq!(
        server.codes_for(ALICE).len(),
        1,
        "the next code went to the file"
    );
    alice.client.login().await.expect("the registration holds");
}
