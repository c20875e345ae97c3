//! Helpers for the client's command-line tests: the `carrier` binary run
//! against an in-process server (from a blocking thread, so the server keeps
//! serving), without `--server` when a test is about the remembered one;
//! and in a pseudo-terminal, as a person at a keyboard runs it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use expectrl::{Expect, Regex, Session};

use crate::common::{PATIENCE, Reachable, codes_in, within};
use crate::process::{run, stderr_of, stdout_of, wait_within};

/// `carrier --home HOME ARGS…` with a clean environment (no server unless
/// the arguments name one).
pub fn carrier_in(home: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_carrier"));
    cmd.arg("--home").arg(home).args(args);
    for var in [
        "CARRIER_SERVER",
        "CARRIER_SERVER_FINGERPRINT",
        "CARRIER_HOME",
        "CARRIER_PASSPHRASE",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("RUST_LOG", "warn");
    cmd
}

/// Runs `carrier --home HOME ARGS…` with no standard input, off the async
/// runtime.
pub async fn carrier_out(home: &Path, args: &[&str]) -> Output {
    let mut cmd = carrier_in(home, args);
    let what = format!("carrier {}", args.join(" "));
    tokio::task::spawn_blocking(move || run(&mut cmd, &what))
        .await
        .expect("the command thread does not panic")
}

/// The exit status, standard output and standard error of a command.
pub fn outcome(o: &Output) -> (i32, String, String) {
    (
        o.status.code().expect("exited, not killed"),
        stdout_of(o),
        stderr_of(o),
    )
}

/// `carrier register PHONE` on `server`, typing `wrong` codes first (each
/// the code the server sent, changed) and then the right one.
pub async fn register_typing(
    server: &impl Reachable,
    home: &Path,
    phone: &str,
    wrong: usize,
) -> Output {
    let otp_file: PathBuf = server.otp_file().to_owned();
    let mut cmd = carrier_in(home, &["--server", &server.addr(), "register", phone]);
    let phone = phone.to_owned();
    let codes_before = codes_in(&otp_file, &phone).len();
    let typing = tokio::task::spawn_blocking(move || {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("carrier starts");
        // The code line is written by the server before it answers; the
        // command then waits on standard input.
        let code = loop {
            if let Some(c) = codes_in(&otp_file, &phone).get(codes_before) {
                break c.clone();
            }
            assert!(
                child.try_wait().expect("try_wait").is_none(),
                "carrier register ended before a code was sent"
            );
            std::thread::sleep(std::time::Duration::from_millis(25));
        };
        let mut stdin = child.stdin.take().expect("piped stdin");
        let mut typed = String::new();
        for _ in 0..wrong {
            typed.push_str(&format!("{}\n", crate::common::wrong_code(&code)));
        }
        typed.push_str(&format!("{code}\n"));
        stdin
            .write_all(typed.as_bytes())
            .expect("the codes are typed");
        drop(stdin);
        wait_within(child, "carrier register")
    });
    within("carrier register", typing)
        .await
        .expect("the typing thread does not panic")
}

pub type Pty = expectrl::session::OsSession;

/// Runs `step` on the terminal off the async runtime (it blocks), so the
/// in-process server keeps serving meanwhile.
pub async fn on_pty<T: Send + 'static>(
    mut pty: Pty,
    step: impl FnOnce(&mut Pty) -> T + Send + 'static,
) -> (Pty, T) {
    tokio::task::spawn_blocking(move || {
        let out = step(&mut pty);
        (pty, out)
    })
    .await
    .expect("the terminal step does not panic")
}

/// Waits for `pattern` in what the chat printed, failing with what it
/// printed instead.
pub fn expect(pty: &mut Pty, pattern: &str) -> String {
    match pty.expect(Regex(pattern)) {
        Ok(found) => String::from_utf8_lossy(found.as_bytes()).into_owned(),
        Err(e) => panic!("chat never printed /{pattern}/: {e}"),
    }
}

/// Starts `cmd` in a pseudo-terminal of 120 × 40 characters.
pub fn start_pty(mut cmd: Command) -> Pty {
    cmd.env("TERM", "xterm");
    let mut pty = Session::spawn(cmd).expect("chat starts in a pseudo-terminal");
    pty.get_process_mut()
        .set_window_size(120, 40)
        .expect("the terminal has a size");
    pty.set_expect_timeout(Some(PATIENCE));
    pty
}
