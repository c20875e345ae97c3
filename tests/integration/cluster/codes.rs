//! Code requests for one phone arriving at once on two members. Each
//! request's transaction touches several rows of the phone (its key's
//! counts, its address's, the phone's, and the stale rows of other keys
//! and addresses it clears on the way); in parallel they must each get an
//! answer, not a deadlock PostgreSQL breaks by failing one of them.

use std::net::{IpAddr, Ipv4Addr};

use carrier::config::ServerConfig;
use carrier::crypto::Identity;
use carrier::protocol::{KeyType, Response};
use carrier::rate::Rate;

use super::copy_keys;
use crate::common::*;
use crate::test_db::TestDb;
use crate::wire::Wire;

/// Keys asking at once, per member.
const KEYS: u8 = 8;
/// Rounds, each after the last one's counts have gone stale.
const ROUNDS: usize = 10;

/// Room for every request the test makes: only the database is tested.
fn generous(config: &mut ServerConfig) {
    config.register_per_address = Rate::per_minute(100_000, 100_000);
    let policy = &mut config.otp_policy;
    policy.max_codes = 1000;
    policy.max_codes_per_address = 100_000;
    policy.max_codes_per_phone = 1_000_000;
}

/// Two members of one cluster, both generous; `None` without PostgreSQL.
async fn generous_pair() -> Option<(TestServer, TestServer)> {
    TestDb::postgres().await?.remove().await;
    let a = spawn_server_with(generous).await;
    let database = a.config.database.clone();
    let b = spawn_server_with(|config| {
        copy_keys(&a, &config.data_dir);
        config.database = database;
        generous(config);
    })
    .await;
    Some((a, b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_code_requests_for_one_phone_are_all_answered() {
    let Some((mut a, mut b)) = generous_pair().await else {
        return;
    };
    let keys: Vec<Identity> = (0..2 * KEYS)
        .map(|_| Identity::generate(KeyType::P256))
        .collect();
    let window = a.config.otp_policy.window_ms;
    for round in 0..ROUNDS {
        // Every key asks at once, half through each member, each from an
        // address of its own: each request finds the others' rows (stale
        // after the first round) and clears them while they are counted.
        // Connected first, so that the requests themselves arrive together.
        let connects = (0..keys.len()).map(|i| {
            let server = if i % 2 == 0 { &a } else { &b };
            let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + i as u8));
            Wire::connect_from(server, source)
        });
        let mut wires = futures::future::join_all(connects).await;
        let asks = wires
            .iter_mut()
            .zip(&keys)
            .map(|(wire, key)| wire.register(DAVE, key));
        let answers = within("every code request", futures::future::join_all(asks)).await;
        for (i, answer) in answers.into_iter().enumerate() {
            assert!(
                matches!(answer, Response::CodeSent { .. }),
                "round {round}, key {i}: {answer:?}"
            );
        }
        for member in [&a, &b] {
            member.clock.advance_ms(window + 1);
        }
    }
    b.stop().await;
    a.stop().await;
}
