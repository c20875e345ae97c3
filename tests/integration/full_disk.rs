//! A full disk, for real: the test binary runs itself again inside a
//! private mount namespace (`unshare --mount`, which needs root, as CI has)
//! where a 4 MiB tmpfs holds the database. There it fills the disk, checks
//! what fails and what keeps working, frees the space and checks that
//! every kind of write comes back by itself, nothing acknowledged is lost
//! and the database is intact. Without root the test says it was skipped.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use carrier::db::enqueue::{Destination, Enqueue, EnqueueOutcome};
use carrier::db::otp::{OtpLimits, PendingCode};
use carrier::db::queue::{NewMessage, QueueRef};
use carrier::db::quota::{Quota, Quotas};
use carrier::db::{DbError, Location, Store};
use carrier::domain::{MessageId, PhoneNumber};
use carrier::protocol::ErrorCode;
use sqlx::Connection;

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

#[tokio::test]
#[ignore = "run by a_full_disk_refuses_writes_then_recovers_by_itself in a mount namespace"]
async fn inside_a_small_tmpfs() {
    assert!(
        std::env::var_os(INSIDE).is_some(),
        "run only inside a private mount namespace"
    );
    let dir = tempfile::tempdir().unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "carrier-full-disk"])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(mounted.success(), "mounting the tmpfs failed");
    let db_path = dir.path().join("carrier.db");
    let quota = Quota {
        max_messages: 1 << 20,
        max_bytes: 1 << 30,
    };
    let quotas = Quotas {
        per_recipient: quota,
        per_neighbour: quota,
    };
    let (store, _committed) = Store::open(&Location::Sqlite(db_path.clone()), quotas)
        .await
        .unwrap();

    let mut stored = Vec::new();
    for n in 0..20 {
        assert_eq!(enqueue(&store, n).await.unwrap(), EnqueueOutcome::Stored);
        stored.push(id(n));
    }
    let filler = dir.path().join("filler");
    fill(&filler);
    let full = send_until_full(&store, &mut stored).await;
    assert_eq!(full.code(), ErrorCode::StorageFull, "{full}");

    // Every kind of write is refused with the same code; reads go on.
    let ack = store
        .delete(QueueRef::Recipient(bob()), vec![stored[0]])
        .await;
    assert!(
        matches!(ack, Err(DbError::Full(_))),
        "ack while full: {ack:?}"
    );
    let code = store.otp_issue(&pending_code(), otp_limits()).await;
    assert!(
        matches!(code, Err(DbError::Full(_))),
        "registration while full: {code:?}"
    );
    let fetched = store
        .fetch(&bob(), 0, 0, 10)
        .await
        .expect("reads work while full");
    assert_eq!(fetched.len(), 10);

    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + RECOVERY;
    let after = loop {
        match enqueue(&store, 60_000).await {
            Ok(outcome) => break outcome,
            Err(e) if Instant::now() < deadline => assert_eq!(e.code(), ErrorCode::StorageFull),
            Err(e) => panic!("writes did not come back within {RECOVERY:?}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(after, EnqueueOutcome::Stored);
    stored.push(id(60_000));
    assert_eq!(
        store
            .delete(QueueRef::Recipient(bob()), vec![stored.remove(0)])
            .await
            .unwrap(),
        1
    );
    assert!(
        store
            .otp_issue(&pending_code(), otp_limits())
            .await
            .unwrap()
            .is_ok()
    );

    // Nothing acknowledged was lost, and the file is sound.
    let queued = store.fetch(&bob(), 0, 0, 100_000).await.unwrap();
    let queued: Vec<MessageId> = queued.iter().map(|r| r.id).collect();
    assert_eq!(queued, stored, "acknowledged messages went missing");
    store.close().await;
    assert_eq!(integrity_check(&db_path).await, "ok");
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

/// Sends messages until the store refuses one, keeping the ids of those
/// acknowledged; returns the refusal.
async fn send_until_full(store: &Store, stored: &mut Vec<MessageId>) -> DbError {
    for n in 20..50_000 {
        match enqueue(store, n).await {
            Ok(outcome) => {
                assert_eq!(outcome, EnqueueOutcome::Stored);
                stored.push(id(n));
            }
            Err(e) => return e,
        }
    }
    panic!("50,000 messages fitted on a full disk");
}

async fn enqueue(store: &Store, n: u32) -> Result<EnqueueOutcome, DbError> {
    let message = NewMessage {
        id: id(n),
        recipient: bob(),
        sender: PhoneNumber::from_canonical("+12025550101").unwrap(),
        envelope: vec![7; 2048],
        received_at: 0,
        expires_at: i64::MAX,
    };
    let e = Enqueue {
        message,
        destination: Destination::Local,
        relayed: false,
    };
    store
        .submit_enqueue(e)
        .await?
        .await
        .map_err(|_| DbError::WriterGone)?
}

fn id(n: u32) -> MessageId {
    let mut bytes = [0; 16];
    bytes[..4].copy_from_slice(&n.to_be_bytes());
    MessageId::from_bytes(bytes)
}

fn bob() -> PhoneNumber {
    PhoneNumber::from_canonical("+12025550102").unwrap()
}

fn pending_code() -> PendingCode {
    PendingCode {
        phone: "+12025550103".into(),
        code_hash: "hash".into(),
        key_type: "p256".into(),
        public_key: vec![1; 65],
        issued_at: 0,
        expires_at: 1,
    }
}

fn otp_limits() -> OtpLimits {
    OtpLimits {
        now: 0,
        window_ms: 1,
        max_codes: 1000,
        max_tries: 1000,
    }
}

async fn integrity_check(path: &Path) -> String {
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite:{}", path.display()))
        .await
        .unwrap();
    sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut conn)
        .await
        .unwrap()
}
