//! The command-line contracts of `carrier-server` and `carrier`, driven as
//! a user would drive them.

use std::io::Write;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use carrier::domain::Fingerprint;

use crate::common::{ALICE, BOB, NOBODY, Reachable, codes_in};
use crate::process::{ServerFiles, carrier, run, stderr_of, stdout_of, wait_within};

/// `carrier register PHONE`, typing the code once the server has written it.
fn register(server: &str, home: &Path, otp_file: &Path, phone: &str) -> Output {
    let codes_before = codes_in(otp_file, phone).len();
    let mut child = carrier(server, home)
        .args(["register", phone])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("carrier starts");
    // The command asks the server for a code, then blocks reading standard
    // input; the code line appears in the file meanwhile (written by another
    // process, so it is polled, with a bound).
    let mut code = None;
    for _ in 0..400 {
        if let Some(c) = codes_in(otp_file, phone).get(codes_before) {
            code = Some(c.clone());
            break;
        }
        if child.try_wait().expect("try_wait").is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    if let Some(code) = code {
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin
            .write_all(format!("{code}\n").as_bytes())
            .expect("the code is typed");
    }
    wait_within(child, &format!("carrier register {phone}"))
}

/// Asserts the command failed with one `error:` line on standard error, and
/// returns that line.
fn expect_failure(o: &Output, case: &str) -> String {
    let stderr = stderr_of(o);
    assert!(
        !o.status.success(),
        "{case}: succeeded; stdout: {}",
        stdout_of(o)
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "{case}: expected one line on standard error, got {stderr:?}"
    );
    assert!(lines[0].starts_with("error:"), "{case}: {stderr:?}");
    lines[0].to_owned()
}

fn expect_success(o: &Output, case: &str) -> String {
    assert!(
        o.status.success(),
        "{case}: failed ({}): {}",
        o.status,
        stderr_of(o)
    );
    stdout_of(o)
}

#[test]
fn the_binaries_register_send_fetch_and_stop() {
    let files = ServerFiles::new();
    let mut server = files.start();
    let addr = server.addr();
    let homes = tempfile::tempdir().unwrap();
    let (alice_home, bob_home) = (homes.path().join("alice"), homes.path().join("bob"));

    // Registration prints the account's fingerprint.
    let mut fingerprints = Vec::new();
    for (phone, home) in [(ALICE, &alice_home), (BOB, &bob_home)] {
        let out = expect_success(
            &register(&addr, home, &files.otp_file, phone),
            &format!("register {phone}"),
        );
        let line = out
            .lines()
            .find(|l| l.starts_with("Registered "))
            .unwrap_or_else(|| panic!("{out}"));
        let prefix = format!("Registered {phone} with key ");
        let fp = line
            .strip_prefix(&prefix)
            .unwrap_or_else(|| panic!("{line}"));
        assert!(Fingerprint::parse(fp).is_some(), "not a fingerprint: {fp}");
        fingerprints.push(fp.to_owned());
    }

    // whoami: phone, fingerprint, then this home's device.
    let out = expect_success(
        &run(carrier(&addr, &alice_home).arg("whoami"), "whoami"),
        "whoami",
    );
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [ALICE, fingerprints[0].as_str(), "device 1"]
    );

    let out = run(
        carrier(&addr, &alice_home).args(["send", BOB, "hello"]),
        "send",
    );
    let out = expect_success(&out, "send");
    assert!(out.lines().any(|l| l.contains("Sent")), "{out}");

    let out = expect_success(
        &run(
            carrier(&addr, &bob_home).args(["fetch", "--json"]),
            "fetch --json",
        ),
        "fetch",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON object per message: {out}");
    let m: serde_json::Value = serde_json::from_str(lines[0]).expect("a JSON object");
    assert_eq!(m["from"], ALICE);
    assert_eq!(m["text"], "hello");
    assert!(m["id"].as_str().is_some_and(|id| id.len() == 32), "{m}");
    assert!(m["sent_at"].as_i64().is_some_and(|t| t > 0), "{m}");
    let out = expect_success(
        &run(
            carrier(&addr, &bob_home).args(["fetch", "--json"]),
            "fetch again",
        ),
        "fetch",
    );
    assert_eq!(out, "", "the fetched message came again");

    // Errors: one line on standard error, non-zero exit.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let cases: [(&str, Output, &str); 4] = [
        (
            "unknown recipient",
            run(
                carrier(&addr, &alice_home).args(["send", NOBODY, "hi"]),
                "send",
            ),
            NOBODY,
        ),
        (
            "invalid phone",
            run(
                carrier(&addr, &alice_home).args(["send", "+15551234567", "hi"]),
                "send",
            ),
            "+15551234567",
        ),
        (
            "invalid phone at registration",
            run(
                carrier(&addr, &homes.path().join("carol")).args(["register", "12345"]),
                "register",
            ),
            "12345",
        ),
        (
            "server unreachable",
            run(carrier(&closed, &alice_home).arg("fetch"), "fetch"),
            &closed,
        ),
    ];
    for (case, out, named) in &cases {
        let line = expect_failure(out, case);
        assert!(
            line.contains(named),
            "{case}: the error does not name {named}: {line}"
        );
    }

    // A wrong --server-fingerprint: refused, naming both keys.
    let wrong = &fingerprints[1];
    let out = run(
        carrier(&addr, &alice_home).args(["--server-fingerprint", wrong, "fetch"]),
        "fetch",
    );
    let line = expect_failure(&out, "wrong --server-fingerprint");
    assert!(
        line.contains(wrong.as_str()) && line.contains(&server.fingerprint().to_hex()),
        "{line}"
    );

    // SIGTERM: a graceful stop, exit status 0.
    let status = server.terminate();
    assert!(
        status.success(),
        "carrier-server exited with {status}; log:\n{}",
        files.log_text()
    );
}
