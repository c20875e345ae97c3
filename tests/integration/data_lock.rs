//! One server per data directory: a second `carrier-server` on the same
//! directory exits at once, naming the first one's PID, even when the first
//! also holds the port it asks for; once the first has stopped (even by
//! SIGKILL) the directory is free again. A start that cannot bind a port
//! creates no data directory, and a start still opening its database
//! refuses connections on its ports.

use std::io::ErrorKind;
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::mpsc;

use crate::common::PATIENCE;
use crate::process::{ServerFiles, run, stderr_of, stdout_of, wait_within};

/// Runs `cmd`, a start that is to be refused, and asserts it was: exit code
/// 1 and one line on standard error, which it returns. Backtraces are asked
/// for, and must not be given; the log is kept to warnings, so the line is
/// alone whatever `RUST_LOG` the tests run with.
fn refusal(cmd: &mut Command, case: &str) -> String {
    cmd.env("RUST_BACKTRACE", "1").env("RUST_LOG", "warn");
    let out = run(cmd, case);
    assert_eq!(out.status.code(), Some(1), "{case}: {out:?}");
    let err = stderr_of(&out);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{case}: not one line: {err:?}");
    lines[0].to_owned()
}

#[test]
fn a_second_server_on_one_data_directory_is_refused() {
    let files = ServerFiles::new();
    let mut first = files.start();
    let held = format!(
        "carrier-server: another carrier-server (PID {})",
        first.pid()
    );
    let line = refusal(&mut files.command(), "a second carrier-server");
    assert!(line.starts_with(&held), "{line}");
    // Its port taken by the first, the second is still told of the lock.
    let port = first.addr.rsplit_once(':').expect("host:port").1.to_owned();
    let mut second = files.command();
    second.args(["--port", &port]);
    let line = refusal(&mut second, "a second carrier-server on its port");
    assert!(line.starts_with(&held), "{line}");
    first.kill_9();
    let mut again = files.start();
    assert!(again.terminate().success());
}

/// `carrier-server migrate` from `source` into an SQLite file at `target`.
fn migrate_command(source: &str, target: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_carrier-server"));
    cmd.args(["migrate", "--from", source, "--to"])
        .arg(format!("sqlite:{}", target.display()))
        .env_remove("CARRIER_DATABASE_URL");
    cmd
}

/// Runs a migrate that must now go ahead (its server is gone) and copy
/// an empty store.
fn copies(migrate: &mut Command) {
    let out = run(migrate, "a migrate once the server is killed");
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout_of(&out).contains("users: 0 rows"),
        "{}",
        stdout_of(&out)
    );
}

/// `migrate` copies a stopped server: from the database of a running one
/// it is refused, naming the server's PID, and creates nothing; once the
/// server is gone, even by SIGKILL with its lock file left behind, the
/// copy goes ahead.
#[test]
fn a_migrate_from_a_running_server_is_refused() {
    let files = ServerFiles::on_sqlite();
    let mut server = files.start();
    let source = format!("sqlite:{}", files.data_dir().join("carrier.db").display());
    let target_dir = tempfile::tempdir().expect("temporary directory");
    let target = target_dir.path().join("copy.db");
    let migrate = || migrate_command(&source, &target);
    let line = refusal(&mut migrate(), "a migrate from a running server");
    assert_eq!(
        line,
        format!(
            "carrier-server: another carrier-server (PID {}) is using the data directory {}; \
             stop it first, then migrate",
            server.pid(),
            files.data_dir().display()
        )
    );
    assert!(!target.exists(), "a refused migrate created {target:?}");
    server.kill_9();
    let lock_file = files.data_dir().join(carrier::data_lock::LOCK_FILE);
    assert!(lock_file.exists(), "the killed server's lock file is left");
    copies(&mut migrate());
}

/// A server on an SQLite database outside its data directory holds that
/// database too: `migrate` from it is refused, naming the server's PID, as
/// is a second server on the same file; a server on another file in the
/// same directory is not. Once the server is killed the copy goes ahead.
#[test]
fn a_migrate_from_a_database_outside_the_data_directory_is_refused() {
    let db_dir = tempfile::tempdir().expect("temporary directory");
    let db = db_dir.path().join("carrier.db");
    let on = |db: &std::path::Path| {
        let files = ServerFiles::on_sqlite();
        files.set_extra_config(
            "",
            &format!("[database]\nurl = \"sqlite:{}\"\n", db.display()),
        );
        files
    };
    let files = on(&db);
    let mut server = files.start();
    let source = format!("sqlite:{}", db.display());
    let target_dir = tempfile::tempdir().expect("temporary directory");
    let target = target_dir.path().join("copy.db");
    let migrate = || migrate_command(&source, &target);
    let line = refusal(&mut migrate(), "a migrate from a running server's database");
    assert_eq!(
        line,
        format!(
            "carrier-server: another carrier-server (PID {}) is using the database {}; \
             stop it first, then migrate",
            server.pid(),
            db.display()
        )
    );
    assert!(!target.exists(), "a refused migrate created {target:?}");
    let line = refusal(
        &mut on(&db).command(),
        "a second server on the same database",
    );
    assert!(
        line.starts_with(&format!(
            "carrier-server: another carrier-server (PID {}) is using the database {}",
            server.pid(),
            db.display()
        )),
        "{line}"
    );
    let mut neighbour = on(&db_dir.path().join("other.db")).start();
    assert!(neighbour.terminate().success());
    server.kill_9();
    copies(&mut migrate());
}

#[test]
fn a_start_that_cannot_bind_a_port_creates_no_data_directory() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let port = taken.local_addr().unwrap().port().to_string();
    let metrics = format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n");
    for (case, flag, sections) in [
        ("client", Some("--port"), ""),
        ("link", Some("--server_port"), ""),
        ("web", Some("--web-port"), ""),
        ("metrics", None, metrics.as_str()),
    ] {
        let files = ServerFiles::on_sqlite();
        files.set_extra_config("", sections);
        let mut cmd = files.command();
        if let Some(flag) = flag {
            cmd.args([flag, &port]);
        }
        let line = refusal(&mut cmd, case);
        assert!(line.starts_with("carrier-server: cannot listen"), "{line}");
        assert!(line.contains(&format!("127.0.0.1:{port}")), "{line}");
        assert!(
            !files.data_dir().exists(),
            "{case}: a refused start left {} behind",
            files.data_dir().display()
        );
    }
}

#[test]
fn a_server_waiting_for_its_database_refuses_connections() {
    // A "database" that takes the connection and never answers: the start
    // waits in it until the database's timeout.
    let database = TcpListener::bind("127.0.0.1:0").expect("a free port");
    let url = format!(
        "postgres://carrier@{}/carrier",
        database.local_addr().unwrap()
    );
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|free| free.local_addr())
        .expect("a free port")
        .port();
    let files = ServerFiles::on_sqlite();
    files.set_extra_config("", &format!("[database]\nurl = \"{url}\"\n"));
    let mut cmd = files.command();
    cmd.args(["--port", &port.to_string()])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut server = cmd.spawn().expect("carrier-server starts");
    let (tx, dialled) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(database.accept().map(|(conn, _)| conn));
    });
    let Ok(Ok(conn)) = dialled.recv_timeout(PATIENCE) else {
        let _ = server.kill();
        panic!("the server never dialled its database");
    };
    let refused = TcpStream::connect(("127.0.0.1", port)).expect_err("nothing serves yet");
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused, "{refused}");
    drop(conn);
    let out = wait_within(server, "a start whose database went away");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
}
