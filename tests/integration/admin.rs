//! `carrier-server admin` through the binary, on a running server (its
//! admin socket) and on a stopped one (its store), with real clients.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

use carrier::protocol::{ErrorCode, KeyType};
use serde_json::Value;

use crate::common::{ALICE, BOB, NOBODY, register, server_code};
use crate::process::{
    ServerFiles, ended_with_one_line, run, run_into_closed_pipe, stderr_of, stdout_of,
};

/// `carrier-server --config … admin ARGS`.
fn admin(files: &ServerFiles, args: &[&str]) -> Output {
    let mut cmd = files.command();
    cmd.arg("admin").args(args);
    run(&mut cmd, &format!("admin {}", args.join(" ")))
}

fn ok(files: &ServerFiles, args: &[&str]) -> String {
    let o = admin(files, args);
    assert!(
        o.status.success(),
        "admin {args:?} failed: {}",
        stderr_of(&o)
    );
    stdout_of(&o)
}

fn json(files: &ServerFiles, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    let out = ok(files, &args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

/// The one line an admin command prints when it fails.
fn refused(files: &ServerFiles, args: &[&str]) -> String {
    let o = admin(files, args);
    assert_eq!(
        o.status.code(),
        Some(1),
        "admin {args:?}: {}",
        stdout_of(&o)
    );
    let err = stderr_of(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("carrier-server admin: "), "{err}");
    err
}

fn phones(users: &Value) -> Vec<&str> {
    users
        .as_array()
        .expect("a list")
        .iter()
        .map(|u| u["phone"].as_str().expect("a phone"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_commands_on_a_running_and_a_stopped_server() {
    let files = ServerFiles::new();
    let mut server = files.start();
    let alice = register(&server, ALICE, KeyType::P256).await;
    let bob = register(&server, BOB, KeyType::P256).await;
    alice
        .client
        .login()
        .await
        .expect("alice logs in")
        .send(BOB, "hello")
        .await
        .expect("sent");

    let socket = files.config.parent().unwrap().join("data/admin.sock");
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the admin socket is the owner's only");

    let status = ok(&files, &["status"]);
    assert!(status.contains("running for"), "{status}");
    assert!(status.contains("users: 2 (0 disabled)"), "{status}");
    let users = json(&files, &["users", "list"]);
    assert_eq!(phones(&users), [ALICE, BOB]);
    assert_eq!(users[1]["queued_messages"], 1);
    let queues = json(&files, &["queue", "stats"]);
    assert_eq!(queues[0]["owner"], BOB);
    assert_eq!(queues[0]["messages"], 1);

    ok(&files, &["users", "disable", BOB]);
    let err = bob
        .client
        .login()
        .await
        .err()
        .expect("a disabled user is refused");
    assert_eq!(server_code(&err), Some(ErrorCode::AccountDisabled), "{err}");
    let shown = json(&files, &["users", "show", BOB]);
    assert_eq!(shown["disabled"], true);
    ok(&files, &["users", "enable", BOB]);
    drop(
        bob.client
            .login()
            .await
            .expect("enabled again, bob logs in"),
    );

    let out = ok(&files, &["queue", "purge", BOB]);
    assert_eq!(out.trim(), "Purged 1 messages waiting for +12025550102");
    assert_eq!(json(&files, &["queue", "stats"]), serde_json::json!([]));
    assert_eq!(ok(&files, &["queue", "stats"]), "no messages queued\n");
    assert_eq!(ok(&files, &["pins", "list"]), "no neighbour keys pinned\n");
    assert_eq!(
        ok(&files, &["links"]),
        "no neighbours configured or linked\n"
    );
    let shown = ok(&files, &["users", "show", ALICE]);
    let registered = shown
        .lines()
        .find_map(|l| l.strip_prefix("registered at: "))
        .unwrap_or_else(|| panic!("{shown}"));
    let at = json(&files, &["users", "show", ALICE])["registered_at"]
        .as_i64()
        .expect("registered_at in ms");
    assert_eq!(registered, carrier::clock::utc(at), "{shown}");
    assert!(registered.ends_with(" UTC"), "{shown}");
    let out = ok(&files, &["users", "delete", BOB]);
    assert!(out.contains("Deleted +12025550102"), "{out}");
    let err = bob
        .client
        .login()
        .await
        .err()
        .expect("a deleted user is gone");
    assert_eq!(server_code(&err), Some(ErrorCode::UnknownUser), "{err}");
    assert_eq!(phones(&json(&files, &["users", "list"])), [ALICE]);
    assert_eq!(json(&files, &["queue", "stats"]), serde_json::json!([]));
    let err = refused(&files, &["users", "show", NOBODY]);
    assert!(err.contains("not registered"), "{err}");

    assert!(server.terminate().success());
    assert!(!socket.exists(), "the socket is removed at shutdown");
    let status = ok(&files, &["status"]);
    assert!(status.contains("(stopped)"), "{status}");
    assert_eq!(phones(&json(&files, &["users", "list"])), [ALICE]);
    let backups = tempfile::tempdir().unwrap();
    let file = backups.path().join("carrier.db");
    let out = ok(&files, &["backup", file.to_str().unwrap()]);
    assert!(
        backups.path().join("carrier.db.server_key.pem").exists(),
        "{out}"
    );
    if !files.uses_sqlite() {
        assert!(out.contains("pg_dump"), "{out}");
        assert!(!file.exists(), "no empty database file is left: {out}");
        return;
    }
    let mode = std::fs::metadata(&file)
        .unwrap_or_else(|e| panic!("{e}: {out}"))
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the database copy is the owner's only");
    let err = refused(&files, &["backup", file.to_str().unwrap()]);
    assert!(err.contains("exists already"), "{err}");

    // The backup is a whole database: a server's store opened on it knows alice.
    let restored = ServerFiles::new();
    let data = restored.config.parent().unwrap().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::copy(&file, data.join("carrier.db")).unwrap();
    assert_eq!(phones(&json(&restored, &["users", "list"])), [ALICE]);
}

/// A backup that fails after copying the database (a key file cannot be
/// read, or a key's copy would overwrite a file) leaves nothing that
/// looks like a backup, and leaves a file it did not make as it was.
#[test]
fn a_failed_backup_leaves_no_backup_behind() {
    let files = ServerFiles::new();
    let mut server = files.start();
    assert!(server.terminate().success());
    let backups = tempfile::tempdir().unwrap();
    let file = backups.path().join("carrier.db");
    let copy_of = |name: &str| backups.path().join(format!("carrier.db.{name}"));
    let code_key = carrier::auth::code_key::CODE_KEY_FILE;

    // A key's copy would overwrite someone's file: refused, that file kept.
    std::fs::write(copy_of(code_key), "not ours").unwrap();
    let err = refused(&files, &["backup", file.to_str().unwrap()]);
    assert!(err.contains("exists already"), "{err}");
    assert_eq!(
        std::fs::read_to_string(copy_of(code_key)).unwrap(),
        "not ours"
    );
    std::fs::remove_file(copy_of(code_key)).unwrap();
    assert!(!file.exists(), "a database copy is left: {err}");
    assert!(!copy_of(carrier::server::KEY_FILE).exists(), "{err}");

    // The code key cannot be read.
    std::fs::remove_file(files.data_dir().join(code_key)).unwrap();
    let err = refused(&files, &["backup", file.to_str().unwrap()]);
    assert!(err.contains("cannot read"), "{err}");
    let left: Vec<_> = std::fs::read_dir(backups.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?} ({err})");
}

#[test]
fn check_config_names_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[server]\nport = 5000\n").unwrap();
    let files = ServerFiles::new();
    let out = ok(&files, &["check-config", good.to_str().unwrap()]);
    assert!(out.contains("valid"), "{out}");
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[server]\nport = 5000\n\n[queue]\nmax_messages_per_recipient = 0\n",
    )
    .unwrap();
    let err = refused(&files, &["check-config", bad.to_str().unwrap()]);
    assert!(
        err.contains("bad.toml:5: key 'queue.max_messages_per_recipient'"),
        "{err}"
    );
    // A start is refused with the same line.
    let mut start = Command::new(env!("CARGO_BIN_EXE_carrier-server"));
    let out = run(start.arg("--config").arg(&bad), "a start on bad.toml");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let said = stderr_of(&out);
    let problem = err.trim().trim_start_matches("carrier-server admin: ");
    assert!(said.contains(problem), "{said}");
    std::fs::write(&bad, "[queue]\nmax_mesages = 5\n").unwrap();
    let err = refused(&files, &["check-config", bad.to_str().unwrap()]);
    assert!(
        err.contains("bad.toml:2:1: unknown field `max_mesages`"),
        "{err}"
    );
}

/// A database an offline command makes belongs to the data directory's
/// owner, as the lock files do: a first command run as root (OPERATING's
/// advice under systemd's dynamic user) must not shut the server's user
/// out. As root the directory is first given to `nobody`; as anyone else
/// the owner is the one running the test, and the check still holds.
#[test]
fn a_database_an_offline_command_makes_belongs_to_the_directorys_owner() {
    use std::os::unix::fs::MetadataExt;
    let files = ServerFiles::on_sqlite();
    let dir = files.data_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let _ = std::os::unix::fs::chown(&dir, Some(65534), Some(65534));
    ok(&files, &["status"]);
    let owner = std::fs::metadata(&dir).unwrap();
    let made: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(made.contains(&dir.join("carrier.db")), "{made:?}");
    for file in made {
        let meta = std::fs::metadata(&file).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid()),
            (owner.uid(), owner.gid()),
            "{}",
            file.display()
        );
    }
}

/// Run as root on a directory another user owns, an offline command
/// follows no link that user planted in place of the database: neither to
/// a file that exists (which SQLite would write into) nor to one that does
/// not (which it would create). Only root is at risk, so only root checks.
#[test]
fn as_root_a_database_that_is_a_link_is_refused() {
    let files = ServerFiles::on_sqlite();
    let dir = files.data_dir();
    std::fs::create_dir_all(&dir).unwrap();
    if std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).is_err() {
        eprintln!("not root: a database that is a link is refused only to root; not checked");
        return;
    }
    let outside = files.config.with_file_name("outside");
    std::fs::create_dir(&outside).unwrap();
    let existing = outside.join("existing");
    std::fs::write(&existing, "").unwrap();
    let db = dir.join("carrier.db");
    for target in [existing.clone(), outside.join("not-yet")] {
        let _ = std::fs::remove_file(&db);
        std::os::unix::fs::symlink(&target, &db).unwrap();
        let err = refused(&files, &["status"]);
        assert!(err.contains("is not a plain file of its own"), "{err}");
    }
    std::fs::remove_file(&db).unwrap();
    std::fs::hard_link(&existing, &db).unwrap();
    let err = refused(&files, &["status"]);
    assert!(err.contains("is not a plain file of its own"), "{err}");
    // A database of its own, but a journal that is a link.
    std::fs::remove_file(&db).unwrap();
    ok(&files, &["status"]);
    let shm = dir.join("carrier.db-shm");
    let _ = std::fs::remove_file(&shm);
    std::fs::hard_link(&existing, &shm).unwrap();
    let err = refused(&files, &["status"]);
    assert!(err.contains("carrier.db-shm is not a plain file"), "{err}");
    let left: Vec<_> = std::fs::read_dir(&outside)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["existing"], "made beside the link's target");
    assert_eq!(
        std::fs::read(&existing).unwrap(),
        b"",
        "written through a link"
    );
}

/// An answer written into a pipe nobody reads any more (`… | head -3`
/// that has read its lines) ends the command with one line, not a panic.
#[test]
fn output_into_a_closed_pipe_is_one_error_line() {
    let files = ServerFiles::new();
    std::fs::create_dir_all(files.data_dir()).unwrap();
    let good = files.config.with_file_name("good.toml");
    std::fs::write(&good, "[server]\nport = 5000\n").unwrap();
    for args in [
        &["users", "list", "--json"][..],
        &["check-config", good.to_str().unwrap()],
    ] {
        let mut cmd = files.command();
        cmd.arg("admin").args(args);
        let what = format!("admin {}", args.join(" "));
        let out = run_into_closed_pipe(&mut cmd, &what);
        ended_with_one_line(
            &out,
            "carrier-server admin: cannot write to standard output",
            &what,
        );
    }
}

/// A connection to the admin socket that never sends its request must not
/// hold the server up when it is told to stop.
#[test]
fn a_silent_admin_connection_does_not_stall_shutdown() {
    let files = ServerFiles::new();
    let mut server = files.start();
    let socket = files.config.parent().unwrap().join("data/admin.sock");
    // The socket is bound while the server starts its listeners.
    let deadline = std::time::Instant::now() + crate::common::PATIENCE;
    let _silent = loop {
        match std::os::unix::net::UnixStream::connect(&socket) {
            Ok(stream) => break stream,
            Err(e) if std::time::Instant::now() > deadline => panic!("the socket answers: {e}"),
            Err(_) => std::thread::yield_now(),
        }
    };
    // The connection is accepted before the stop: a status call after it
    // is answered, so the silent one is already being served.
    ok(&files, &["status"]);

    let status = server.terminate();
    assert!(status.success(), "the server exits cleanly: {status:?}");
}

/// A request that is not UTF-8 (or not JSON) is answered with an error
/// line, not a closed connection.
#[test]
fn a_malformed_admin_request_gets_an_error_reply() {
    use std::io::{BufRead, Write};
    let files = ServerFiles::new();
    let _server = files.start();
    let socket = files.config.parent().unwrap().join("data/admin.sock");
    ok(&files, &["status"]);
    for (case, request) in [
        ("not UTF-8", &b"{\"op\": \"status\xff\"}\n"[..]),
        ("not JSON", &b"status\n"[..]),
    ] {
        let mut stream = std::os::unix::net::UnixStream::connect(&socket).expect("connect");
        stream.write_all(request).expect("the request is sent");
        let mut line = String::new();
        std::io::BufReader::new(stream)
            .read_line(&mut line)
            .expect("an answer");
        let answer: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("{case}: the answer is JSON ({e}): {line:?}"));
        let error = answer["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{case}: {answer}"));
        assert!(error.starts_with("not an admin request"), "{case}: {error}");
        if case == "not UTF-8" {
            assert!(error.contains("UTF-8"), "{error}");
        }
    }
}

/// Something on the admin socket of a locked data directory that answers
/// with a line that never ends: the command reads no further than its
/// bound on an answer's length and fails with one line saying so.
#[test]
fn an_endless_answer_on_the_admin_socket_is_refused() {
    use std::io::{BufRead, Write};
    let files = ServerFiles::new();
    let data = files.data_dir();
    std::fs::create_dir_all(&data).unwrap();
    let _lock = carrier::data_lock::DataDirLock::acquire(&data).expect("the lock");
    let socket = data.join("admin.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).expect("the socket");
    let endless = std::thread::spawn(move || {
        let (stream, _) = listener.accept().expect("the command connects");
        let mut request = String::new();
        std::io::BufReader::new(&stream)
            .read_line(&mut request)
            .expect("the request");
        let chunk = vec![b'x'; 1024 * 1024];
        let mut written = 0u64;
        while (&stream).write_all(&chunk).is_ok() {
            written += chunk.len() as u64;
        }
        (request, written)
    });
    let started = std::time::Instant::now();
    let err = refused(&files, &["status"]);
    let took = started.elapsed();
    let (request, written) = endless.join().expect("the writer ends");
    assert!(request.contains("\"status\""), "{request}");
    assert!(
        err.contains(&format!(
            "the answer on {} ran past 1024 MiB without ending",
            socket.display()
        )),
        "{err}"
    );
    assert!(
        written <= 1025 * 1024 * 1024 + 16 * 1024 * 1024,
        "the command read {written} bytes"
    );
    eprintln!("an endless answer was refused after {took:?}, {written} bytes written");
}
