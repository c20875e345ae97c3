//! Link codes through the server (docs/PROTOCOL.md §16, §5.5): the
//! server passes sealed bytes between the device that opened a rendezvous
//! and a new device, once, within 10 minutes.

use carrier::crypto::v2::LinkCode;
use carrier::protocol::{B64, ErrorCode, KeyType, Request, Response};

use super::client::*;
use crate::common::*;
use crate::wire::Wire;

#[tokio::test]
async fn a_new_device_is_linked_through_a_rendezvous_once() {
    let server = spawn_server().await;
    let bob = register_account(&server, BOB, KeyType::P256).await;
    let mut account = Account::new(&bob);
    account.add_device("phone");
    let mut opener = Wire::connect(&server).await;
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

    // The new device sends its sealed request, not logged in.
    let tablet = account.add_device("tablet");
    let new_device = account.device(tablet);
    let sealed = code
        .seal_request(&phone(BOB), "tablet", new_device.local.key())
        .unwrap();
    let mut newcomer = Wire::connect(&server).await;
    let asked = newcomer
        .send(Request::LinkRequest {
            phone: BOB.into(),
            rendezvous: rendezvous.clone(),
            request: B64(sealed),
        })
        .await;

    // The opener is pushed the request, opens it, certifies the device,
    // publishes the new list and answers.
    let pushed = opener.read().await.expect("the request is pushed");
    let Response::LinkRequested { request, .. } = pushed.response else {
        panic!("expected link_requested, got {:?}", pushed.response);
    };
    assert_eq!(pushed.re, None);
    let (name, key) = code.open_request(&phone(BOB), &request.0).unwrap();
    assert_eq!(
        (name.as_str(), &key),
        ("tablet", &new_device.local.key().public())
    );
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

    // The new device gets the answer to its request and logs in with it.
    let Response::Linked { response } = newcomer.answer(Some(asked)).await else {
        panic!("expected linked");
    };
    let linked = code.open_response(&phone(BOB), &response.0).unwrap();
    let verified = linked
        .list
        .verify(&account.identity.public_key(), &phone(BOB))
        .unwrap();
    let device = verified.certify(&linked.certificate).unwrap();
    assert_eq!(device.device_id.get(), tablet);
    assert!(linked.account_pkcs8.is_none());
    new_device.connect(&server).await;

    // Once used, the rendezvous is gone.
    let again = newcomer
        .call(Request::LinkRequest {
            phone: BOB.into(),
            rendezvous: rendezvous.clone(),
            request: B64(vec![0; 64]),
        })
        .await;
    expect_error(again, ErrorCode::NoLink, "a used rendezvous");
    let again = opener
        .call(Request::LinkAccept {
            rendezvous,
            response: B64(vec![0; 64]),
        })
        .await;
    expect_error(again, ErrorCode::NoLink, "accepting twice");
}

#[tokio::test]
async fn a_rendezvous_refuses_other_phones_and_expires() {
    let server = spawn_server().await;
    let bob = register_account(&server, BOB, KeyType::P256).await;
    let mut opener = Wire::connect(&server).await;
    opener.login(BOB, &bob.identity()).await;
    let code = LinkCode::generate();
    let rendezvous = B64(code.rendezvous().to_vec());
    let answer = opener
        .call(Request::LinkOpen {
            rendezvous: rendezvous.clone(),
        })
        .await;
    assert!(matches!(answer, Response::LinkOpened { .. }), "{answer:?}");
    let request = |phone: &str, rendezvous: &B64| Request::LinkRequest {
        phone: phone.into(),
        rendezvous: rendezvous.clone(),
        request: B64(vec![1; 100]),
    };
    let mut newcomer = Wire::connect(&server).await;
    let cases = [
        (
            request(ALICE, &rendezvous),
            ErrorCode::NoLink,
            "another phone",
        ),
        (
            request(BOB, &B64(vec![9; 16])),
            ErrorCode::NoLink,
            "an unknown rendezvous",
        ),
        (
            request(BOB, &B64(vec![9; 15])),
            ErrorCode::BadRequest,
            "a short rendezvous",
        ),
        (
            Request::LinkRequest {
                phone: BOB.into(),
                rendezvous: rendezvous.clone(),
                request: B64(vec![1; 16 * 1024 + 1]),
            },
            ErrorCode::BadRequest,
            "an oversized request",
        ),
        (
            Request::LinkOpen {
                rendezvous: rendezvous.clone(),
            },
            ErrorCode::NotLoggedIn,
            "opening without logging in",
        ),
    ];
    for (request, code, case) in cases {
        let answer = newcomer.call(request).await;
        expect_error(answer, code, case);
    }
    server.clock.advance_ms(10 * 60_000 + 1);
    let answer = newcomer.call(request(BOB, &rendezvous)).await;
    expect_error(answer, ErrorCode::NoLink, "an expired rendezvous");
}
