//! Link codes across members: the device showing the code is connected to
//! one member, the new device to the other. The rendezvous is shared
//! through the database, so the link works, once, as on a lone server.

use carrier::protocol::{B64, ErrorCode, Request};

use super::{first_member, second_member};
use crate::common::*;
use crate::devices::linking::Opener;
use crate::wire::Wire;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_on_one_member_links_a_new_device_on_the_other() {
    let Some(mut a) = first_member().await else {
        return;
    };
    let mut b = second_member(&a).await;
    let mut opener = Opener::open(&a).await;

    // The new device asks through B; A pushes the request to the opener.
    let (new_device, ask) = opener.new_device();
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

    // The opener certifies the device and answers through A; B passes
    // the answer to the new device, which logs in through B.
    opener.accept(&new_device).await;
    opener.check_linked(&new_device, newcomer.answer(Some(asked)).await);
    new_device.connect(&b).await;

    // Used once: asking again through either member is refused.
    for member in [&a, &b] {
        let mut again = Wire::connect(member).await;
        let answer = again
            .call(Request::LinkRequest {
                phone: BOB.into(),
                rendezvous: opener.rendezvous.clone(),
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
