//! `carrier send` to an account whose signed list names a device that has
//! published no prekeys yet, played by a real server and devices driven by
//! hand: `lookup` brings no bundle for it, so it gets nothing, and the send
//! names it once on standard error (docs/PROTOCOL.md §7.9) instead of
//! leaving it out silently.

use carrier::client::Connection;
use carrier::protocol::{Request, Response};

use super::{cli_user, ok};
use crate::client_support::{carrier_out, outcome};
use crate::common::{ALICE, BOB, CAROL, Reachable, spawn_server};
use crate::devices::client::{Ask, Device};
use crate::devices::with_list;

/// Registers `who` with devices 1 ..= `listed` in its signed list; the
/// devices of `publishing` publish their prekeys, the others none.
async fn account_with(
    server: &impl Reachable,
    who: &str,
    listed: u32,
    publishing: &[u32],
) -> Vec<Device> {
    let (_, account) = with_list(server, who, listed).await;
    let mut devices = Vec::new();
    for id in 1..=listed {
        let mut device = account.device(id);
        if publishing.contains(&id) {
            let conn = device.connect(server).await;
            let answer = device.publish_prekeys(&conn).await;
            assert!(
                matches!(answer, Response::PrekeysPublished { .. }),
                "device {id} of {who} publishes its prekeys: {answer:?}"
            );
            conn.close().await;
        }
        devices.push(device);
    }
    devices
}

/// How many messages wait for `device`.
async fn waiting(server: &impl Reachable, device: &Device) -> usize {
    let conn: Connection = device.connect(server).await;
    let answer = conn
        .ask(Request::Fetch {
            limit: None,
            after: None,
        })
        .await
        .unwrap();
    conn.close().await;
    match answer {
        Response::Messages { messages, .. } => messages.len(),
        other => panic!("fetch: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_device_without_keys_is_named_once_and_the_others_get_the_message() {
    let server = spawn_server().await;
    let homes = tempfile::tempdir().unwrap();
    let alice = cli_user(&server, homes.path(), "alice", ALICE).await;
    let bob = account_with(&server, BOB, 2, &[1]).await;

    let (_, stderr) = ok(&alice, &["send", BOB, "hello"]).await;
    let warning = format!(
        "warning: device 2 of {BOB} gets nothing from this send: it has published no keys yet"
    );
    assert_eq!(
        stderr.lines().filter(|l| *l == warning).count(),
        1,
        "{stderr}"
    );
    assert_eq!(stderr.matches("gets nothing").count(), 1, "{stderr}");
    assert_eq!(waiting(&server, &bob[0]).await, 1, "device 1 has it");
    assert_eq!(waiting(&server, &bob[1]).await, 0, "device 2 has nothing");

    // Carol's only device has no keys: nothing goes out, and the error
    // says why after the device is named.
    account_with(&server, CAROL, 1, &[]).await;
    let (status, _, stderr) = outcome(&carrier_out(&alice, &["send", CAROL, "hi"]).await);
    assert_eq!(status, 5, "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines[lines.len() - 2..],
        [
            format!(
                "warning: device 1 of {CAROL} gets nothing from this send: it has published no \
                 keys yet"
            ),
            format!(
                "error: {CAROL} has no device that can receive yet (none has published its \
                 prekeys); try again later"
            ),
        ],
        "{stderr}"
    );
}
