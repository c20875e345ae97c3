//! Link codes through the server (docs/PROTOCOL.md §16, §5.5): the
//! server passes sealed bytes between the device that opened a rendezvous
//! and a new device, once, within 10 minutes.

use carrier::crypto::v2::LinkCode;
use carrier::protocol::{B64, ErrorCode, KeyType, Request, Response};

use super::client::*;
use crate::common::*;
use crate::wire::Wire;

/// Bob's device that shows a link code: his account with one device
/// ("phone") in a published list, logged in with the account key, with a
/// rendezvous open for `code`.
pub(crate) struct Opener {
    pub account: Account,
    pub wire: Wire,
    pub code: LinkCode,
    pub rendezvous: B64,
}

impl Opener {
    /// Registers Bob on `server` and opens a rendezvous there.
    pub(crate) async fn open(server: &impl Reachable) -> Self {
        let bob = register_account(server, BOB, KeyType::P256).await;
        let mut account = Account::new(&bob);
        account.add_device("phone");
        let mut wire = Wire::connect(server).await;
        wire.login(BOB, &account.identity).await;
        let answer = wire.call(account.next_list()).await;
        assert!(
            matches!(answer, Response::DevicesPublished { version: 1 }),
            "{answer:?}"
        );
        let code = LinkCode::generate();
        let rendezvous = B64(code.rendezvous().to_vec());
        let answer = wire
            .call(Request::LinkOpen {
                rendezvous: rendezvous.clone(),
            })
            .await;
        assert!(
            matches!(answer, Response::LinkOpened { expires_in_s: 600 }),
            "{answer:?}"
        );
        Self {
            account,
            wire,
            code,
            rendezvous,
        }
    }

    /// A new device "tablet" of Bob's and its `link_request`, sealed
    /// under the code.
    pub(crate) fn new_device(&mut self) -> (Device, Request) {
        let tablet = self.account.add_device("tablet");
        let device = self.account.device(tablet);
        let sealed = self
            .code
            .seal_request(&phone(BOB), "tablet", device.local.key())
            .unwrap();
        let ask = Request::LinkRequest {
            phone: BOB.into(),
            rendezvous: self.rendezvous.clone(),
            request: B64(sealed),
        };
        (device, ask)
    }

    /// Takes the pushed request of `device`, certifies it, publishes the
    /// list naming it and answers through the rendezvous.
    pub(crate) async fn accept(&mut self, device: &Device) {
        let pushed = self.wire.read().await.expect("the request is pushed");
        let Response::LinkRequested { request, .. } = pushed.response else {
            panic!("expected link_requested, got {:?}", pushed.response);
        };
        assert_eq!(pushed.re, None);
        let (name, key) = self.code.open_request(&phone(BOB), &request.0).unwrap();
        assert_eq!(
            (name.as_str(), &key),
            ("tablet", &device.local.key().public())
        );
        let answer = self.wire.call(self.account.next_list()).await;
        assert!(
            matches!(answer, Response::DevicesPublished { version: 2 }),
            "{answer:?}"
        );
        let (list, certificates) = self.account.issue(2);
        let response = self
            .code
            .seal_response(&phone(BOB), &certificates[1], &list, None);
        let answer = self
            .wire
            .call(Request::LinkAccept {
                rendezvous: self.rendezvous.clone(),
                response: B64(response),
            })
            .await;
        assert!(matches!(answer, Response::LinkAccepted), "{answer:?}");
    }

    /// Checks the `linked` answer `device` got: the certificate in it is
    /// the device's, under the account's list, and no account key came.
    pub(crate) fn check_linked(&self, device: &Device, answer: Response) {
        let Response::Linked { response } = answer else {
            panic!("expected linked, got {answer:?}");
        };
        let linked = self.code.open_response(&phone(BOB), &response.0).unwrap();
        let verified = linked
            .list
            .verify(&self.account.identity.public_key(), &phone(BOB))
            .unwrap();
        let certified = verified.certify(&linked.certificate).unwrap();
        assert_eq!(certified.device_id.get(), device.id);
        assert!(linked.account_pkcs8.is_none());
    }
}

#[tokio::test]
async fn a_new_device_is_linked_through_a_rendezvous_once() {
    let server = spawn_server().await;
    let mut opener = Opener::open(&server).await;
    let rendezvous = opener.rendezvous.clone();

    // The new device sends its sealed request, not logged in; the opener
    // is pushed it, opens it, certifies the device, publishes the new
    // list and answers.
    let (new_device, ask) = opener.new_device();
    let mut newcomer = Wire::connect(&server).await;
    let asked = newcomer.send(ask).await;
    opener.accept(&new_device).await;

    // The new device gets the answer to its request and logs in with it.
    opener.check_linked(&new_device, newcomer.answer(Some(asked)).await);
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
        .wire
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

#[tokio::test]
async fn an_account_holds_four_link_codes_open_at_once() {
    let server = spawn_server().await;
    let bob = register_account(&server, BOB, KeyType::P256).await;
    let mut opener = Wire::connect(&server).await;
    opener.login(BOB, &bob.identity()).await;
    let open = |n: u8| Request::LinkOpen {
        rendezvous: B64(vec![n; 16]),
    };
    for n in 1..=4 {
        let answer = opener.call(open(n)).await;
        assert!(matches!(answer, Response::LinkOpened { .. }), "{answer:?}");
    }
    let answer = opener.call(open(5)).await;
    let Response::Error { code, message, .. } = &answer else {
        panic!("a fifth code was opened: {answer:?}");
    };
    assert_eq!(*code, ErrorCode::BadRequest);
    assert!(message.contains("4 link codes open already"), "{message}");
    // Once the first ones expire, another can be opened.
    server.clock.advance_ms(10 * 60_000 + 1);
    let answer = opener.call(open(5)).await;
    assert!(matches!(answer, Response::LinkOpened { .. }), "{answer:?}");
}
