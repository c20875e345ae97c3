//! A full disk, for real: the test binary runs itself again inside a
//! private mount namespace (`unshare --mount`, which needs root, as CI has)
//! where a 4 MiB tmpfs holds a real server's data directory. There it fills
//! the disk, checks as a client what fails (`storage_full`, for sends, acks
//! and registrations) and what keeps working (fetch, lookup, list), frees
//! the space and checks that every kind of write comes back by itself,
//! nothing acknowledged is lost and the database is intact. Without root
//! the test says it was skipped.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use carrier::client::{ClientError, Session};
use carrier::domain::MessageId;
use carrier::protocol::{ErrorCode, KeyType, Request, Response};

use crate::common::*;

/// Set in the child, which runs inside the namespace.
const INSIDE: &str = "CARRIER_TEST_INSIDE_MOUNT_NAMESPACE";
/// How long writes may take to come back once space is freed.
const RECOVERY: Duration = Duration::from_secs(5);

/// Runs [`inside_a_small_tmpfs`] in a mount namespace of its own, where the
/// tmpfs it mounts is seen by nothing else and goes away with it.
#[test]
fn a_full_disk_refuses_writes_then_recovers_by_itself() {
    let namespaces = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "true"])
        .status();
    if !namespaces.is_ok_and(|s| s.success()) {
        let _ = writeln!(
            std::io::stderr(),
            "note: the full-disk test was skipped: it needs root to mount a tmpfs in a private \
             mount namespace (`unshare --mount`)"
        );
        return;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--"])
        .arg(exe)
        .args([
            "--exact",
            "full_disk::inside_a_small_tmpfs",
            "--ignored",
            "--nocapture",
        ])
        .env(INSIDE, "1")
        .output()
        .expect("unshare runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "the run inside the namespace failed:\n{said}"
    );
    assert!(
        said.contains("1 passed"),
        "the inner test did not run:\n{said}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by a_full_disk_refuses_writes_then_recovers_by_itself in a mount namespace"]
async fn inside_a_small_tmpfs() {
    assert!(
        std::env::var_os(INSIDE).is_some(),
        "run only inside a private mount namespace"
    );
    let disk = tempfile::tempdir().unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "carrier-full-disk"])
        .arg(disk.path())
        .status()
        .unwrap();
    assert!(mounted.success(), "mounting the tmpfs failed");
    let mut server = spawn_server_with(|c| {
        c.data_dir = disk.path().join("data");
        c.database = None;
    })
    .await;
    let alice = register(&server, ALICE, KeyType::P256).await;
    let bob = register(&server, BOB, KeyType::P256).await;
    let a = alice.client.login().await.unwrap();
    let mut stored = Vec::new();
    for n in 0..5 {
        stored.push(a.send(BOB, &format!("before {n}")).await.unwrap());
    }

    // Bob's device logs in while there is room (a login publishes prekeys).
    let bob_session = bob.client.login().await.unwrap();
    let filler = disk.path().join("filler");
    fill(&filler);
    let refused = send_until_full(&a, &mut stored).await;
    assert_eq!(
        server_code(&refused),
        Some(ErrorCode::StorageFull),
        "{refused}"
    );

    // Reads go on; every kind of write is refused with the same code.
    let b = &bob_session.conn;
    let Response::Messages { messages, .. } = b
        .call(Request::Fetch {
            limit: Some(3),
            after: None,
        })
        .await
        .unwrap()
    else {
        panic!("fetch while full");
    };
    assert_eq!(messages.len(), 3);
    let looked_up = b
        .call(Request::Lookup {
            phone: ALICE.into(),
        })
        .await
        .unwrap();
    assert!(
        matches!(looked_up, Response::User(_)),
        "lookup while full: {looked_up:?}"
    );
    assert!(matches!(
        b.call(Request::List {
            after: None,
            limit: None
        })
        .await
        .unwrap(),
        Response::Users { .. }
    ));
    let ack = b
        .call(Request::Ack {
            ids: vec![messages[0].id],
        })
        .await;
    assert_eq!(
        ack.as_ref().err().and_then(server_code),
        Some(ErrorCode::StorageFull),
        "ack while full: {ack:?}"
    );
    let (_home, carol) = new_client(&server.addr(), Some(server.fingerprint)).await;
    let registration = register_client(&server, &carol, CAROL, KeyType::P256).await;
    assert_eq!(
        registration.as_ref().err().and_then(server_code),
        Some(ErrorCode::StorageFull),
        "registration while full: {registration:?}"
    );

    // Space comes back: every write works again by itself.
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + RECOVERY;
    loop {
        match a.send(BOB, "after").await {
            Ok(id) => break stored.push(id),
            Err(e) if Instant::now() < deadline => {
                assert_eq!(server_code(&e), Some(ErrorCode::StorageFull), "{e}")
            }
            Err(e) => panic!("writes did not come back within {RECOVERY:?}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ack = b
        .call(Request::Ack {
            ids: vec![messages[0].id],
        })
        .await
        .unwrap();
    assert!(matches!(ack, Response::Acked { .. }), "ack after: {ack:?}");
    stored.retain(|id| *id != messages[0].id);
    register(&server, CAROL, KeyType::P256).await;
    a.close().await;
    bob_session.close().await;

    // Nothing acknowledged was lost, and the file is sound.
    let pool = server.db().await;
    let check: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(check, "ok");
    let queued: Vec<Vec<u8>> = sqlx::query_scalar("SELECT id FROM message_queue ORDER BY seq")
        .fetch_all(&pool)
        .await
        .unwrap();
    let stored: Vec<Vec<u8>> = stored.iter().map(|id| id.as_bytes().to_vec()).collect();
    assert_eq!(queued, stored, "acknowledged messages went missing");
    pool.close().await;
    server.stop().await;
}

/// Writes a file until the disk is full.
fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).unwrap();
    let block = vec![0xa5u8; 64 << 10];
    loop {
        if let Err(e) = file.write_all(&block).and_then(|()| file.sync_all()) {
            assert_eq!(e.raw_os_error(), Some(28), "filling failed otherwise: {e}");
            break;
        }
    }
    // What is left of a block too large for the rest goes byte-wise.
    while file
        .write_all(&block[..512])
        .and_then(|()| file.sync_all())
        .is_ok()
    {}
}

/// Sends messages until the server refuses one, keeping the ids of those
/// acknowledged; returns the refusal.
async fn send_until_full(a: &Session<'_>, stored: &mut Vec<MessageId>) -> ClientError {
    let text = "x".repeat(2000);
    for _ in 0..20_000 {
        match a.send(BOB, &text).await {
            Ok(id) => stored.push(id),
            Err(e) => return e,
        }
    }
    panic!("20,000 messages fitted on a full disk");
}
