//! `carrier send` cut short after the message went out: a later device of
//! the recipient refused, or the copy for the sender's other device
//! refused, by a real server whose queues are nearly full. The message is
//! in the history, the error says which devices got it and which did not
//! and that sending it again would deliver it twice, the exit status is
//! 7, and nothing sends it again by itself.

use super::{cli_user, fetched, json_lines, link, ok, texts};
use crate::client_support::{carrier_out, outcome};
use crate::common::{ALICE, BOB, spawn_server_with};

/// What the error of a send cut short ends with.
fn not_again(to: &str) -> String {
    format!("It is in your history; do not send it again: {to} would get it twice")
}

/// Room for `n` messages in each recipient's queue, all of it for one
/// sender.
async fn queues_of(n: u64) -> crate::common::TestServer {
    spawn_server_with(|c| {
        c.quota.max_messages = n;
        c.sender_quota.max_messages = n;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_a_later_device_refuses_is_recorded_and_says_which_devices_have_it() {
    let server = queues_of(3).await;
    let homes = tempfile::tempdir().unwrap();
    let alice = cli_user(&server, homes.path(), "alice", ALICE).await;
    let phone = cli_user(&server, homes.path(), "bob", BOB).await;
    let tablet = link(&server, &phone, homes.path(), "tablet", BOB, 2).await;
    ok(&alice, &["send", BOB, "one"]).await;

    // Bob's queue has room for one more copy: the phone's.
    let (status, stdout, stderr) = outcome(&carrier_out(&alice, &["send", BOB, "two"]).await);
    assert_eq!(status, 7, "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    let line = stderr.lines().last().unwrap();
    assert!(
        line.starts_with("error: message ")
            && line.contains(&format!(" reached device 1 of {BOB} but not device 2: "))
            && line.contains("(quota_exceeded)")
            && line.ends_with(&not_again(BOB)),
        "{stderr}"
    );
    let (history, _) = ok(&alice, &["history"]).await;
    assert!(
        history
            .lines()
            .any(|l| l.ends_with(&format!("to {BOB}: two"))),
        "what went out is recorded: {history}"
    );

    // Nothing sends it again: the phone has it once, the tablet not.
    ok(&alice, &["fetch"]).await;
    assert_eq!(texts(&fetched(&phone).await), ["one", "two"]);
    assert_eq!(texts(&fetched(&tablet).await), ["one"]);
    assert!(fetched(&phone).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_copy_refused_after_delivery_says_the_message_went_out() {
    let server = queues_of(1).await;
    let homes = tempfile::tempdir().unwrap();
    let phone = cli_user(&server, homes.path(), "phone", ALICE).await;
    let bob = cli_user(&server, homes.path(), "bob", BOB).await;
    let tablet = link(&server, &phone, homes.path(), "tablet", ALICE, 2).await;
    ok(&phone, &["send", BOB, "one"]).await;
    assert_eq!(texts(&fetched(&bob).await), ["one"]);

    // Bob's queue is empty again; the tablet's copy of "one" fills
    // Alice's: "two" reaches Bob, its copy for the tablet is refused.
    let (status, stdout, stderr) = outcome(&carrier_out(&phone, &["send", BOB, "two"]).await);
    assert_eq!(status, 7, "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    let line = stderr.lines().last().unwrap();
    assert!(
        line.starts_with("error: message ")
            && line.contains(&format!(
                " reached device 1 of {BOB}; of your other devices, device 2 did not get its \
                 copy: "
            ))
            && line.contains("(quota_exceeded)")
            && line.ends_with(&not_again(BOB)),
        "{stderr}"
    );
    let (history, _) = ok(&phone, &["history"]).await;
    assert!(
        history
            .lines()
            .any(|l| l.ends_with(&format!("to {BOB}: two"))),
        "{history}"
    );
    assert_eq!(texts(&fetched(&bob).await), ["two"], "once");
    let copies = fetched(&tablet).await;
    assert_eq!(texts(&copies), ["one"], "the copy of two never came");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_json_cut_short_prints_the_id_and_says_it_was_cut_short() {
    let server = queues_of(3).await;
    let homes = tempfile::tempdir().unwrap();
    let alice = cli_user(&server, homes.path(), "alice", ALICE).await;
    let phone = cli_user(&server, homes.path(), "bob", BOB).await;
    link(&server, &phone, homes.path(), "tablet", BOB, 2).await;
    // A send that goes through says nothing of being cut short.
    let (stdout, _) = ok(&alice, &["send", BOB, "one", "--json"]).await;
    assert!(
        json_lines(&stdout)[0].get("cut_short").is_none(),
        "{stdout}"
    );

    let (status, stdout, stderr) =
        outcome(&carrier_out(&alice, &["send", BOB, "two", "--json"]).await);
    assert_eq!(status, 7, "{stderr}");
    let printed = json_lines(&stdout);
    assert_eq!(printed.len(), 1, "{stdout}");
    let id = printed[0]["id"].as_str().unwrap();
    assert_eq!(id.len(), 32, "{stdout}");
    assert_eq!(printed[0]["to"], BOB);
    assert_eq!(printed[0]["cut_short"], true);
    assert!(
        stderr.contains(&format!("error: message {id} reached device 1 of {BOB}")),
        "the id the error names: {stderr}"
    );
    let history = json_lines(&ok(&alice, &["history", "--json"]).await.0);
    assert_eq!(history.last().unwrap()["id"], id, "the id in the history");
}
