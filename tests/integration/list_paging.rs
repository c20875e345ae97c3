//! `list` a page at a time (PROTOCOL §5.4, §21.7): a directory of 2 101
//! users, brought by a neighbour, takes three pages of the default 1 000;
//! `after` and `limit` walk it in phone order with `next` absent on the last
//! page; the client library and `carrier list` follow every page and see
//! every user once; a malformed `after` or `limit` is `bad_request`.

use std::collections::BTreeSet;

use carrier::client::Connection;
use carrier::protocol::link::LinkMessage;
use carrier::protocol::{ErrorCode, KeyType, ListedUser, Request, Response};

use crate::client_support::{carrier_out, outcome};
use crate::common::{ALICE, Reachable, logged_in_connection, register, server_code};
use crate::neighbourhood::devices::homed_at;
use crate::neighbourhood::{beside_a_hostile_neighbour, eventually, link_as, send_link};
use crate::wire::Wire;

/// Users the neighbour brings, beside Alice: two full pages and some.
const BROUGHT: usize = 2_100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_comes_in_pages_that_cover_every_user_once() {
    let (nodes, hostile) = beside_a_hostile_neighbour().await;
    let alice = register(&nodes[0], ALICE, KeyType::P256).await;
    let mut link = link_as(&hostile, &nodes[0]).await;
    let mut expected: BTreeSet<String> = (0..BROUGHT).map(brought).collect();
    expected.insert(ALICE.to_owned());
    let account = carrier::crypto::Identity::generate(KeyType::P256);
    let entries: Vec<_> = expected
        .iter()
        .filter(|p| *p != ALICE)
        .map(|p| homed_at(&hostile, p, &account))
        .collect();
    for frame in entries.chunks(500) {
        let entries = frame.to_vec();
        send_link(&mut link, &LinkMessage::Directory { entries }).await;
    }
    eventually("the directory holds every user", || async {
        let session = alice.client.login().await.expect("alice logs in");
        let n = session.list().await.expect("list").len();
        session.close().await;
        n == expected.len()
    })
    .await;

    let conn = logged_in_connection(&nodes[0], ALICE, &alice.identity()).await;
    // The default page: 1 000, 1 000, then the 101 left, without `next`.
    let pages = walk(&conn, None).await;
    let sizes: Vec<_> = pages.iter().map(Vec::len).collect();
    assert_eq!(sizes, [1000, 1000, 101]);
    assert_eq!(once_each(&pages), expected, "every user once, in order");

    // A smaller page asked for: 700 a page, four pages.
    let sizes: Vec<_> = walk(&conn, Some(700)).await.iter().map(Vec::len).collect();
    assert_eq!(sizes, [700, 700, 700, 1]);

    // `after` need not be a listed phone: every phone sorting after it.
    let (users, next) = page(&conn, Some("+20"), Some(1)).await;
    assert_eq!(phones(&users), [brought(0)]);
    assert_eq!(next, Some(brought(0)));
    // Exactly what is left fits: the last page, without `next`.
    let last_two: Vec<_> = expected.iter().rev().take(2).cloned().collect();
    let (users, next) = page(&conn, Some(&last_two[1]), Some(1)).await;
    assert_eq!((phones(&users), next), (vec![last_two[0].clone()], None));
    let (users, next) = page(&conn, Some(&last_two[0]), None).await;
    assert!(users.is_empty() && next.is_none(), "nothing after the last");

    for (after, limit, case) in [
        (None, Some(0), "limit 0"),
        (None, Some(1001), "limit over 1 000"),
        (Some("12025550101"), None, "after without +"),
        (Some("+1 202 555 0101"), None, "after spelled loosely"),
        (Some("+"), None, "after without digits"),
    ] {
        let request = Request::List {
            after: after.map(str::to_owned),
            limit,
        };
        let err = conn.call(request).await.expect_err(case);
        assert_eq!(
            server_code(&err),
            Some(ErrorCode::BadRequest),
            "{case}: {err}"
        );
    }
    conn.close().await;
    for (body, case) in [
        (r#"{"seq":1,"type":"list","limit":"ten"}"#, "limit a string"),
        (
            r#"{"seq":1,"type":"list","after":12025550101}"#,
            "after a number",
        ),
    ] {
        let mut wire = Wire::connect(&nodes[0]).await;
        wire.send_frame(body.as_bytes()).await;
        let answer = wire.answer(Some(1)).await;
        assert!(
            matches!(
                &answer,
                Response::Error {
                    code: ErrorCode::BadRequest,
                    ..
                }
            ),
            "{case}: {answer:?}"
        );
    }

    // `carrier list` follows the pages and prints every user, once.
    let addr = nodes[0].addr();
    let out = carrier_out(alice.home.path(), &["--server", &addr, "list", "--json"]).await;
    let (status, stdout, stderr) = outcome(&out);
    assert_eq!(status, 0, "{stderr}");
    let printed: Vec<String> = stdout
        .lines()
        .map(|l| {
            serde_json::from_str::<ListedUser>(l)
                .expect("a JSON user")
                .phone
        })
        .collect();
    assert_eq!(printed.len(), expected.len(), "no user printed twice");
    assert_eq!(printed.into_iter().collect::<BTreeSet<_>>(), expected);
}

/// The `i`th phone the neighbour brings.
fn brought(i: usize) -> String {
    format!("+3161{i:07}")
}

/// One `list` request.
async fn page(
    conn: &Connection,
    after: Option<&str>,
    limit: Option<u32>,
) -> (Vec<ListedUser>, Option<String>) {
    let request = Request::List {
        after: after.map(str::to_owned),
        limit,
    };
    match conn.call(request).await.expect("a page") {
        Response::Users { users, next } => (users, next),
        other => panic!("expected users, got {other:?}"),
    }
}

/// Every page from the start, each `next` the last phone of its page.
async fn walk(conn: &Connection, limit: Option<u32>) -> Vec<Vec<ListedUser>> {
    let mut pages = Vec::new();
    let mut after = None;
    loop {
        let (users, next) = page(conn, after.as_deref(), limit).await;
        let last = users.last().map(|u| u.phone.clone());
        pages.push(users);
        match next {
            Some(next) => {
                assert_eq!(Some(&next), last.as_ref(), "next is the page's last phone");
                after = Some(next);
            }
            None => return pages,
        }
    }
}

/// The phones of all pages, checked to be strictly ascending throughout.
fn once_each(pages: &[Vec<ListedUser>]) -> BTreeSet<String> {
    let all: Vec<String> = pages.iter().flat_map(|p| phones(p)).collect();
    assert!(
        all.windows(2).all(|w| w[0] < w[1]),
        "strictly in phone order"
    );
    all.into_iter().collect()
}

fn phones(users: &[ListedUser]) -> Vec<String> {
    users.iter().map(|u| u.phone.clone()).collect()
}
