//! `carrier link` answered without the account key (docs/PROTOCOL.md §16:
//! "length 0 when the account key stays on E"), as another client may
//! answer: this carrier runs only devices that hold the account key, so it
//! saves nothing and says why, which device was listed and what to do,
//! without blaming the server.

use std::process::Stdio;

use carrier::crypto::v2::{DeviceCertificate, DeviceId, DeviceList, LinkCode};
use carrier::protocol::{B64, Request, Response};

use super::{cli_user, client_on};
use crate::client_support::{carrier_in, carrier_out, outcome};
use crate::common::{ALICE, Reachable, spawn_server, within};
use crate::process::wait_within;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_that_keeps_the_account_key_elsewhere_is_explained_and_saves_nothing() {
    let server = spawn_server().await;
    let homes = tempfile::tempdir().unwrap();
    let alice = cli_user(&server, homes.path(), "alice", ALICE).await;
    let client = client_on(&server, &alice).await;
    let session = client.login().await.unwrap();
    let me = session.me().clone();

    // Alice's device plays a client that keeps the account key to itself.
    let code = LinkCode::generate();
    let rendezvous = code.rendezvous().to_vec();
    let opened = session.conn.call(Request::LinkOpen {
        rendezvous: B64(rendezvous.clone()),
    });
    assert!(matches!(opened.await, Ok(Response::LinkOpened { .. })));
    let tablet = homes.path().join("tablet");
    let typed = code.to_display();
    let linking = carrier_in(
        &tablet,
        &["--server", &server.addr(), "link", ALICE, typed.as_str()],
    )
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let linking = std::thread::spawn(move || wait_within(linking, "carrier link"));

    let (to, request) = within("the link request", session.conn.next_link_request())
        .await
        .expect("a link request");
    assert_eq!(to, rendezvous);
    let (name, key) = code.open_request(&me, &request).unwrap();
    let identity = client.identity().unwrap();
    let id = DeviceId::new(2).unwrap();
    let certificate = DeviceCertificate::issue(&identity, &me, id, &key, &name, 1).unwrap();
    let Ok(Response::Devices { device_list, .. }) = session.conn.call(Request::Devices).await
    else {
        panic!("devices")
    };
    let list = DeviceList::parse(&device_list.0).unwrap();
    let response = code.seal_response(&me, &certificate, &list, None);
    let accepted = session.conn.call(Request::LinkAccept {
        rendezvous: B64(rendezvous),
        response: B64(response),
    });
    assert!(matches!(accepted.await, Ok(Response::LinkAccepted)));
    session.close().await;

    let linked = tokio::task::spawn_blocking(move || linking.join().unwrap())
        .await
        .unwrap();
    let (status, stdout, stderr) = outcome(&linked);
    assert_eq!(
        status, 4,
        "refused here, not a usage error: {stdout}{stderr}"
    );
    assert!(!stderr.contains("the server answered"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "the device that showed the code kept the account key of {ALICE}"
        )) && stderr.contains("`carrier devices remove 2`"),
        "{stderr}"
    );
    let (status, _, _) = outcome(&carrier_out(&tablet, &["whoami"]).await);
    assert_ne!(status, 0, "the tablet's home holds no account");
}
