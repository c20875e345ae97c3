//! Link codes across members: the device showing the code is connected to
//! one member, the new device to the other. The rendezvous is shared
//! through the database, so the link works, once, as on a lone server.

use carrier::crypto::v2::LinkCode;
use carrier::protocol::{B64, ErrorCode, KeyType, Request, Response};

use super::{first_member, second_member};
use crate::common::*;
use crate::devices::client::*;
use crate::wire::Wire;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_on_one_member_links_a_new_device_on_the_other() {
    let Some(mut a) = first_member().await else {
        return;
    };
    let mut b = second_member(&a).await;
    let bob = register_account(&a, BOB, KeyType::P256).await;
    let mut account = Account::new(&bob);
    account.add_device("phone");
    let mut opener = Wire::connect(&a).await;
    opener.login(BOB, &account.identity).await;
    let answer = opener.call(account.next_list()).await;
    assert!(
        matches!(answer, Response::DevicesPublished { version: 1 }),
        "{answer:?}"
    );
    let code = LinkCode::generate();
    let rendezvous = B64(code.rendezvous().to_vec());
    let answer = opener
        .call(Request::LinkOpen {
            rendezvous: rendezvous.clone(),
        })
        .await;
    assert!(
        matches!(answer, Response::LinkOpened { expires_in_s: 600 }),
        "{answer:?}"
    );

    // The new device asks through B; A pushes the request to the opener.
    let tablet = account.add_device("tablet");
    let new_device = account.device(tablet);
    let sealed = code
        .seal_request(&phone(BOB), "tablet", new_device.local.key())
        .unwrap();
    let ask = Request::LinkRequest {
        phone: BOB.into(),
        rendezvous: rendezvous.clone(),
        request: B64(sealed),
    };
    // A shares the rendezvous with a write it makes after answering
    // `link_open`; B can find it once that write is in.
    within("the rendezvous is shared", async {
        while open_rendezvous(&a).await == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    let mut newcomer = Wire::connect(&b).await;
    let asked = newcomer.send(ask).await;
    let pushed = opener.read().await.expect("the request is pushed");
    let Response::LinkRequested { request, .. } = &pushed.response else {
        panic!("expected link_requested, got {:?}", pushed.response);
    };
    let (name, key) = code.open_request(&phone(BOB), &request.0).unwrap();
    assert_eq!(
        (name.as_str(), &key),
        ("tablet", &new_device.local.key().public())
    );

    // The opener certifies the device and answers through A; B passes
    // the answer to the new device, which logs in through B.
    let answer = opener.call(account.next_list()).await;
    assert!(
        matches!(answer, Response::DevicesPublished { version: 2 }),
        "{answer:?}"
    );
    let (list, certificates) = account.issue(2);
    let response = code.seal_response(&phone(BOB), &certificates[1], &list, None);
    let answer = opener
        .call(Request::LinkAccept {
            rendezvous: rendezvous.clone(),
            response: B64(response),
        })
        .await;
    assert!(matches!(answer, Response::LinkAccepted), "{answer:?}");
    let Response::Linked { response } = within("linked", newcomer.answer(Some(asked))).await else {
        panic!("expected linked");
    };
    let linked = code.open_response(&phone(BOB), &response.0).unwrap();
    let verified = linked
        .list
        .verify(&account.identity.public_key(), &phone(BOB))
        .unwrap();
    assert_eq!(
        verified
            .certify(&linked.certificate)
            .unwrap()
            .device_id
            .get(),
        tablet
    );
    new_device.connect(&b).await;

    // Used once: asking again through either member is refused.
    for member in [&a, &b] {
        let mut again = Wire::connect(member).await;
        let answer = again
            .call(Request::LinkRequest {
                phone: BOB.into(),
                rendezvous: rendezvous.clone(),
                request: B64(vec![0; 64]),
            })
            .await;
        expect_error(answer, ErrorCode::NoLink, "a used rendezvous");
    }
    b.stop().await;
    a.stop().await;
}

/// Rendezvous rows in the cluster's database.
async fn open_rendezvous(member: &TestServer) -> i64 {
    let pool = member.db().await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM link_rendezvous")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    n
}
