//! The `carrier` command as a user meets it: the server remembered at
//! registration, a second chance after a wrong code, exit statuses that say
//! what went wrong, errors that point to the fix, `--json` on every command
//! that prints data, text from the network made harmless for a terminal,
//! shell completions and manual pages.

use std::path::Path;

use carrier::protocol::KeyType;

use crate::client_support::{carrier_in, carrier_out, outcome, register_typing};
use crate::common::*;
use crate::process::{ended_with_one_line, run_into_closed_pipe};

/// A port nothing listens on.
fn closed_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

fn json_line(stdout: &str) -> serde_json::Value {
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON line: {stdout:?}");
    serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_home_remembers_its_server_and_asks_again_after_a_wrong_code() {
    let server = spawn_server().await;
    let homes = tempfile::tempdir().unwrap();
    let home = homes.path().join("alice");

    let out = register_typing(&server, &home, ALICE, 2).await;
    let (status, stdout, stderr) = outcome(&out);
    assert_eq!(status, 0, "{stderr}");
    assert!(
        stdout.starts_with(&format!("Registered {ALICE} with key ")),
        "{stdout}"
    );
    assert_eq!(
        stderr.matches("type the code again").count(),
        2,
        "each wrong code is answered and asked again: {stderr}"
    );
    assert!(stderr.contains("tries left"), "{stderr}");

    // No --server from now on: the home's own.
    let (status, stdout, stderr) = outcome(&carrier_out(&home, &["whoami", "--json"]).await);
    assert_eq!(status, 0, "{stderr}");
    let me = json_line(&stdout);
    assert_eq!(me["phone"], ALICE);
    assert_eq!(me["server"], server.addr());
    assert_eq!(me["key_type"], "p256");
    let bob = homes.path().join("bob");
    let (status, _, stderr) = outcome(&register_typing(&server, &bob, BOB, 0).await);
    assert_eq!(status, 0, "{stderr}");
    let (status, stdout, stderr) =
        outcome(&carrier_out(&home, &["send", BOB, "no", "flag", "--json"]).await);
    assert_eq!(status, 0, "{stderr}");
    let sent = json_line(&stdout);
    assert_eq!(sent["to"], BOB);
    assert_eq!(sent["id"].as_str().map(str::len), Some(32));
    let (status, stdout, stderr) = outcome(&carrier_out(&bob, &["fetch", "--json"]).await);
    assert_eq!(status, 0, "{stderr}");
    assert_eq!(json_line(&stdout)["text"], "no flag");

    // --server still wins for one command.
    let elsewhere = closed_port();
    let (status, _, stderr) =
        outcome(&carrier_out(&home, &["--server", &elsewhere, "fetch"]).await);
    assert_eq!(status, 5, "{stderr}");
    assert!(stderr.contains(&elsewhere), "{stderr}");
}

/// After the wrong code that spends the last try the command stops: the
/// right code typed next is never sent (the server would refuse it as
/// `code_dead`), and the error says in one sentence when and how to get a
/// new one. Registering again too early is `code_dead`, with the same
/// advice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_wrong_code_ends_registration_with_the_command_that_gets_a_new_one() {
    let server = spawn_server().await;
    let policy = server.config.otp_policy;
    let max = policy.max_tries;
    // The clock stands still: the wait is the whole window, as the server
    // rounds it up to seconds, said in minutes rounded up.
    let minutes = (policy.window_ms as u64 / 1000 + 1).div_ceil(60);
    let advice =
        format!("run `carrier register {ALICE}` again in about {minutes} minutes for a new one");
    let home = tempfile::tempdir().unwrap();
    let out = register_typing(&server, home.path(), ALICE, max as usize).await;
    let (status, _, stderr) = outcome(&out);
    assert_eq!(status, 4, "{stderr}");
    assert_eq!(
        stderr.matches("type the code again").count(),
        max as usize - 1,
        "asked again only while tries are left: {stderr}"
    );
    assert!(
        stderr.contains("1 try left: type the code again."),
        "{stderr}"
    );
    assert_eq!(
        stderr.lines().last().unwrap_or_default(),
        format!("error: wrong code; no tries left for this code: {advice} (wrong_code)"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("code_dead"),
        "a code went past the last try: {stderr}"
    );

    // The same key asks for a new code before the wait is over.
    let again = ["--server", &server.addr(), "register", ALICE];
    let (status, _, stderr) = outcome(&carrier_out(home.path(), &again).await);
    assert_eq!(status, 4, "{stderr}");
    assert_eq!(
        stderr.lines().last().unwrap_or_default(),
        format!("error: too many wrong codes for this phone and key: {advice} (code_dead)"),
        "{stderr}"
    );
}

/// Runs `args` in `home` and checks the exit status and that the one error
/// line names `named`.
async fn expect_status(home: &Path, args: &[&str], status: i32, named: &[&str]) {
    let (got, stdout, stderr) = outcome(&carrier_out(home, args).await);
    assert_eq!(got, status, "{args:?}: {stdout}{stderr}");
    let line = stderr.lines().last().unwrap_or_default();
    assert!(line.starts_with("error: "), "{args:?}: {stderr}");
    for n in named {
        assert!(
            line.contains(n),
            "{args:?}: the error does not name {n}: {line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_statuses_tell_failures_apart_and_errors_point_to_the_fix() {
    let server = spawn_server().await;
    let alice = register(&server, ALICE, KeyType::P256).await;
    let bob = register(&server, BOB, KeyType::P256).await;
    let addr = server.addr();
    let home = alice.home.path();
    let empty = tempfile::tempdir().unwrap();

    // 2: usage.
    expect_status(
        home,
        &["--server", "localhost", "fetch"],
        2,
        &["no port", "localhost:5000"],
    )
    .await;
    expect_status(home, &["send", "+15551234567", "hi"], 2, &["+15551234567"]).await;
    let (status, _, _) = outcome(&carrier_out(home, &["frobnicate"]).await);
    assert_eq!(status, 2, "clap's usage errors");
    // 3: not found.
    expect_status(
        home,
        &["--server", &addr, "send", NOBODY, "hi"],
        3,
        &[NOBODY],
    )
    .await;
    expect_status(empty.path(), &["fetch"], 3, &["carrier register"]).await;
    // 5: unreachable, with what to check.
    let closed = closed_port();
    expect_status(
        home,
        &["--server", &closed, "fetch"],
        5,
        &[&closed, "carrier-server running"],
    )
    .await;
    expect_status(
        home,
        &["--server", "no-such-host.invalid:5000", "fetch"],
        5,
        &["no-such-host.invalid", "no host by that name"],
    )
    .await;
    // 6: the server's key is not the one given.
    let wrong = &bob.fingerprint;
    expect_status(
        home,
        &["--server", &addr, "--server-fingerprint", wrong, "fetch"],
        6,
        &[wrong, &server.fingerprint.to_hex(), "--server-fingerprint"],
    )
    .await;

    // 4: the server is up but another key was registered for this account
    // since; the advice names the key file and the command that exist.
    let (_second_home, second) = new_client(&addr, Some(server.fingerprint)).await;
    register_client(&server, &second, ALICE, KeyType::P256)
        .await
        .expect("another device registers");
    let key_file = home.join("identity.pem");
    expect_status(
        home,
        &["--server", &addr, "fetch"],
        4,
        &[
            &key_file.display().to_string(),
            &format!("`carrier register {ALICE}`"),
        ],
    )
    .await;
    assert!(key_file.exists());
    let out = carrier_out(home, &["--server", &addr, "--help"]).await;
    assert!(
        outcome(&out).1.contains("6  key changed"),
        "--help lists the statuses"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_key_change_exits_6_and_names_the_trust_command() {
    let server = spawn_server().await;
    let alice = register(&server, ALICE, KeyType::P256).await;
    let _bob = register(&server, BOB, KeyType::P256).await;
    let addr = server.addr();
    let home = alice.home.path();
    let (status, _, stderr) =
        outcome(&carrier_out(home, &["--server", &addr, "send", BOB, "hi"]).await);
    assert_eq!(status, 0, "{stderr}");
    let (_new_home, new_bob) = new_client(&addr, Some(server.fingerprint)).await;
    register_client(&server, &new_bob, BOB, KeyType::P256)
        .await
        .unwrap();
    let new_fp = new_bob.account().unwrap().fingerprint;
    expect_status(
        home,
        &["--server", &addr, "send", BOB, "hi"],
        6,
        &[&format!("carrier trust {BOB} --fingerprint {new_fp}")],
    )
    .await;

    // Fetching meanwhile prints the command's own lines only, not a log
    // line (time stamp, module path) about Bob's devices each time: those
    // need RUST_LOG.
    let mut fetch = carrier_in(home, &["--server", &addr, "fetch"]);
    fetch.env_remove("RUST_LOG");
    let out = tokio::task::spawn_blocking(move || crate::process::run(&mut fetch, "carrier fetch"))
        .await
        .unwrap();
    let (status, _, stderr) = outcome(&out);
    assert_eq!(status, 0, "{stderr}");
    assert_eq!(stderr, "No new messages.\n", "nothing but its own lines");
}

/// A text that would clear the screen, fake a line from another sender and
/// reverse what follows, were it printed raw.
const HOSTILE: &str =
    "hi\u{1b}[2J\n[2026-01-01 00:00:00 UTC] +12025550199: send me the code\u{202e}\u{9b}31m";

fn no_raw_controls(what: &str, text: &str) {
    assert!(
        !text
            .chars()
            .any(|c| (c.is_control() && c != '\n') || ('\u{202a}'..='\u{202e}').contains(&c)),
        "{what} printed a raw control character: {text:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_from_the_network_is_shown_harmless_and_json_keeps_it_exact() {
    let server = spawn_server_with(|c| c.name = Some("evil\u{1b}]0;pwned\u{7}".into())).await;
    let alice = register(&server, ALICE, KeyType::P256).await;
    let bob = register(&server, BOB, KeyType::P256).await;
    let addr = server.addr();
    let session = alice.client.login().await.unwrap();
    session.send(BOB, HOSTILE).await.unwrap();
    session.send(BOB, HOSTILE).await.unwrap();
    session.close().await;
    let home = bob.home.path();

    let (status, stdout, stderr) = outcome(&carrier_out(home, &["--server", &addr, "fetch"]).await);
    assert_eq!(status, 0, "{stderr}");
    no_raw_controls("fetch", &stdout);
    no_raw_controls("fetch", &stderr);
    assert_eq!(stdout.lines().count(), 2, "one line per message: {stdout}");
    assert!(
        stdout.contains(r"hi\u{1b}[2J\n[2026-01-01 00:00:00 UTC] +12025550199: send me the code\u{202e}\u{9b}31m"),
        "{stdout}"
    );
    let (_, stdout, _) = outcome(&carrier_out(home, &["history"]).await);
    no_raw_controls("history", &stdout);
    let (_, stdout, _) = outcome(&carrier_out(home, &["--server", &addr, "list"]).await);
    no_raw_controls("list", &stdout);
    assert!(stdout.contains(r"evil\u{1b}]0;pwned\u{7}"), "{stdout}");

    // JSON: the exact strings, with no raw control character on the line.
    let (_, stdout, _) = outcome(&carrier_out(home, &["history", "--json"]).await);
    no_raw_controls("history --json", &stdout);
    for line in stdout.lines() {
        let entry: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(entry["text"], HOSTILE);
    }
    let (_, stdout, _) = outcome(&carrier_out(home, &["--server", &addr, "list", "--json"]).await);
    no_raw_controls("list --json", &stdout);
    let first: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(first["home"], "evil\u{1b}]0;pwned\u{7}");
}

#[tokio::test]
async fn completions_and_manual_pages_generate() {
    let home = tempfile::tempdir().unwrap();
    for (shell, marker) in [
        ("bash", "complete"),
        ("zsh", "#compdef carrier"),
        ("fish", "complete -c carrier"),
    ] {
        let (status, stdout, stderr) =
            outcome(&carrier_out(home.path(), &["completions", shell]).await);
        assert_eq!(status, 0, "{shell}: {stderr}");
        assert!(stdout.contains(marker), "{shell}: {stdout}");
        for command in ["register", "trust", "fingerprint", "chat"] {
            assert!(stdout.contains(command), "{shell} completes no {command}");
        }
    }
    let (status, stdout, _) = outcome(&carrier_out(home.path(), &["man"]).await);
    assert_eq!(status, 0);
    assert!(
        stdout.starts_with(".ie") || stdout.contains(".TH carrier"),
        "{stdout}"
    );
    // The directory is made when it does not exist yet, as README's
    // `--out-dir ~/.local/share/man/man1` often does not.
    let pages = tempfile::tempdir().unwrap();
    let man1 = pages.path().join("share/man/man1");
    let dir = man1.to_str().unwrap();
    let (status, _, stderr) = outcome(&carrier_out(home.path(), &["man", "--out-dir", dir]).await);
    assert_eq!(status, 0, "{stderr}");
    for page in [
        "carrier.1",
        "carrier-register.1",
        "carrier-trust.1",
        "carrier-chat.1",
    ] {
        let text =
            std::fs::read_to_string(man1.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.contains(".TH"), "{page}");
    }
}

/// Output written into a pipe nobody reads any more (`carrier … | head -1`
/// once `head` has its line) ends the command with one error line and
/// status 1, whichever command wrote it: no panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_into_a_closed_pipe_is_one_error_line() {
    let server = spawn_server().await;
    let alice = register(&server, ALICE, KeyType::P256).await;
    let home = alice.home.path().to_owned();
    tokio::task::spawn_blocking(move || {
        for args in [
            &["completions", "bash"][..],
            &["man"],
            &["whoami"],
            &["whoami", "--json"],
        ] {
            let what = format!("carrier {}", args.join(" "));
            let out = run_into_closed_pipe(&mut carrier_in(&home, args), &what);
            ended_with_one_line(&out, "error: cannot write", &what);
        }
    })
    .await
    .unwrap();
}
