//! The `carrier` command against a server that tampers with the devices
//! it serves (played by editing the real server's database, as someone
//! with its disk could): a device offered twice is written to once; who a
//! device is does not hang on its prekeys, so a refused bundle neither
//! drops that device's messages nor makes it "new" again; and a device
//! list rolled back part-way through a send is told with what went out
//! (exit status 7).

use std::path::{Path, PathBuf};

use super::{cli_user, fetched, link, ok, texts};
use crate::client_support::{carrier_out, outcome};
use crate::common::{ALICE, BOB, TestServer, spawn_server};

/// Alice, and Bob with two devices: his phone (1) and a tablet (2).
async fn alice_and_bob_with_a_tablet(server: &TestServer, homes: &Path) -> [PathBuf; 3] {
    let alice = cli_user(server, homes, "alice", ALICE).await;
    let phone = cli_user(server, homes, "bob", BOB).await;
    let tablet = link(server, &phone, homes, "tablet", BOB, 2).await;
    [alice, phone, tablet]
}

/// The signed prekey the server holds for Bob's `device`.
async fn signed_prekey(server: &TestServer, device: i64) -> Vec<u8> {
    let pool = server.db().await;
    let prekey = sqlx::query_scalar(
        "SELECT prekey FROM prekeys WHERE phone = $1 AND device = $2 AND kind = 1",
    )
    .bind(BOB)
    .bind(device)
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    prekey
}

/// Puts `prekey` in place of the signed prekey of Bob's `device`.
async fn set_signed_prekey(server: &TestServer, device: i64, prekey: &[u8]) {
    let pool = server.db().await;
    let updated =
        sqlx::query("UPDATE prekeys SET prekey = $1 WHERE phone = $2 AND device = $3 AND kind = 1")
            .bind(prekey)
            .bind(BOB)
            .bind(device)
            .execute(&pool)
            .await
            .unwrap();
    assert_eq!(updated.rows_affected(), 1);
    pool.close().await;
}

/// Flips the last byte (in its signature) of the signed prekey of Bob's
/// `device`; the genuine bytes, to put back.
async fn forge_signed_prekey(server: &TestServer, device: i64) -> Vec<u8> {
    let genuine = signed_prekey(server, device).await;
    let mut forged = genuine.clone();
    *forged.last_mut().unwrap() ^= 0x01;
    set_signed_prekey(server, device, &forged).await;
    genuine
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_offered_twice_is_sent_the_message_once() {
    let server = spawn_server().await;
    let homes = tempfile::tempdir().unwrap();
    let [alice, phone, tablet] = alice_and_bob_with_a_tablet(&server, homes.path()).await;
    // The server offers the phone's genuine bundle in the tablet's place
    // too: two bundles for device 1, both checking out.
    let pool = server.db().await;
    for statement in [
        "UPDATE devices SET certificate =
             (SELECT certificate FROM devices WHERE phone = $1 AND device = 1)
         WHERE phone = $1 AND device = 2",
        "DELETE FROM prekeys WHERE phone = $1 AND device = 2 AND kind IN (1, 3)",
        "INSERT INTO prekeys (phone, device, kind, prekey_id, prekey, stored_at)
         SELECT phone, 2, kind, prekey_id, prekey, stored_at FROM prekeys
         WHERE phone = $1 AND device = 1 AND kind IN (1, 3)",
    ] {
        sqlx::query(statement)
            .bind(BOB)
            .execute(&pool)
            .await
            .unwrap();
    }
    pool.close().await;

    ok(&alice, &["send", BOB, "once"]).await;
    assert_eq!(server.queued_for(BOB).await, 1, "one copy, for the phone");
    assert_eq!(texts(&fetched(&phone).await), ["once"]);
    assert!(fetched(&tablet).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_bundle_neither_forgets_a_device_nor_makes_it_new() {
    let server = spawn_server().await;
    let homes = tempfile::tempdir().unwrap();
    let [alice, phone, tablet] = alice_and_bob_with_a_tablet(&server, homes.path()).await;
    ok(&alice, &["send", BOB, "to both"]).await;
    assert_eq!(texts(&fetched(&phone).await), ["to both"]);
    assert_eq!(texts(&fetched(&tablet).await), ["to both"]);

    // The tablet's bundle is forged for one send, then genuine again: the
    // tablet is left out of that send, and said so, but it is no new
    // device when its bundle comes back, however often that is played.
    for round in 0..2 {
        let genuine = forge_signed_prekey(&server, 2).await;
        let (_, stderr) = ok(&alice, &["send", BOB, "the phone only"]).await;
        assert!(
            stderr.contains(&format!("warning: device 2 of {BOB} gets nothing")),
            "{stderr}"
        );
        set_signed_prekey(&server, 2, &genuine).await;
        let (_, stderr) = ok(&alice, &["fetch"]).await;
        assert!(
            !stderr.contains("added a device"),
            "round {round}: {stderr}"
        );
    }
    assert_eq!(
        texts(&fetched(&phone).await),
        ["the phone only", "the phone only"]
    );
    ok(&alice, &["send", BOB, "to both again"]).await;
    assert_eq!(texts(&fetched(&tablet).await), ["to both again"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_from_a_listed_device_is_opened_though_its_bundle_is_refused() {
    let server = spawn_server().await;
    let homes = tempfile::tempdir().unwrap();
    let [alice, phone, _tablet] = alice_and_bob_with_a_tablet(&server, homes.path()).await;
    ok(&phone, &["send", ALICE, "from the phone"]).await;
    // Before Alice first looks Bob up, the phone's bundle is forged: its
    // certificate and the list still say who device 1 is.
    forge_signed_prekey(&server, 1).await;
    let (stdout, stderr) = ok(&alice, &["fetch", "--json"]).await;
    let got = super::json_lines(&stdout);
    assert_eq!(texts(&got), ["from the phone"], "{stderr}");
    assert_eq!(got[0]["from"], BOB);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_device_nothing_names_is_told_by_its_number_before_its_messages() {
    let server = spawn_server().await;
    let homes = tempfile::tempdir().unwrap();
    let alice = cli_user(&server, homes.path(), "alice", ALICE).await;
    let phone = cli_user(&server, homes.path(), "bob", BOB).await;
    ok(&alice, &["send", BOB, "hello"]).await;
    let tablet = link(&server, &phone, homes.path(), "tablet", BOB, 2).await;
    // The server spoils the new tablet's certificate: the signed list
    // still says device 2 is Bob's, but nothing names it.
    let pool = server.db().await;
    let mut certificate: Vec<u8> =
        sqlx::query_scalar("SELECT certificate FROM devices WHERE phone = $1 AND device = 2")
            .bind(BOB)
            .fetch_one(&pool)
            .await
            .unwrap();
    *certificate.last_mut().unwrap() ^= 0x01;
    sqlx::query("UPDATE devices SET certificate = $1 WHERE phone = $2 AND device = 2")
        .bind(&certificate)
        .bind(BOB)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    ok(&tablet, &["send", ALICE, "from the tablet"]).await;

    let (stdout, stderr) = ok(&alice, &["fetch"]).await;
    assert!(stdout.contains("from the tablet"), "{stdout}");
    assert_eq!(
        stderr
            .matches(&format!("{BOB} added device 2; its name is not known yet"))
            .count(),
        1,
        "{stderr}"
    );
    let (_, stderr) = ok(&alice, &["fetch"]).await;
    assert!(!stderr.contains("added"), "told once: {stderr}");
}

/// The version and bytes of the device list the server holds for `phone`.
async fn device_list(server: &TestServer, phone: &str) -> (i64, Vec<u8>) {
    let pool = server.db().await;
    let row = sqlx::query_as("SELECT version, list FROM device_lists WHERE phone = $1")
        .bind(phone)
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    row
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_rolled_back_after_the_message_went_out_says_so_and_it_is_recorded() {
    let mut server = spawn_server().await;
    let homes = tempfile::tempdir().unwrap();
    let phone = cli_user(&server, homes.path(), "phone", ALICE).await;
    let bob = cli_user(&server, homes.path(), "bob", BOB).await;
    link(&server, &phone, homes.path(), "tablet", ALICE, 2).await;
    let (old, old_list) = device_list(&server, ALICE).await;
    link(&server, &phone, homes.path(), "laptop", ALICE, 3).await;
    let (seen, _) = device_list(&server, ALICE).await;
    ok(&phone, &["send", BOB, "one"]).await;

    // The server goes back to the list without the laptop. The phone
    // sends its copies under the list it remembers; the answer,
    // stale_devices with the older list, is refused, after Bob has the
    // message.
    server.stop().await;
    let pool = server.db().await;
    sqlx::query("UPDATE device_lists SET version = $1, list = $2 WHERE phone = $3")
        .bind(old)
        .bind(&old_list)
        .bind(ALICE)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    server.restart().await;
    let (status, _, stderr) = outcome(&carrier_out(&phone, &["send", BOB, "two"]).await);
    assert_eq!(status, 7, "{stderr}");
    assert!(
        stderr.contains(&format!(
            " reached device 1 of {BOB}; of your other devices, devices 2 and 3 did not get \
             their copy: the server gave version {old} of the device list of {ALICE}, older \
             than version {seen}"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("nothing was sent"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "It is in your history; do not send it again: {BOB} would get it twice"
        )),
        "{stderr}"
    );
    assert_eq!(texts(&fetched(&bob).await), ["one", "two"]);
    let (history, _) = ok(&phone, &["history"]).await;
    assert!(
        history.contains("two"),
        "what was sent is recorded: {history}"
    );
    server.stop().await;
}
