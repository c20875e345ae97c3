//! A member that lost its notification connection may have missed other
//! members' changes, so when it listens again it reads the directory anew:
//! its entries and its withdrawals' tombstones. Were only the entries read,
//! a registration another member withdrew meanwhile would be gone from the
//! member's copy without a tombstone, and a neighbour's stale copy of it
//! would bring it back.

use carrier::crypto::Identity;
use carrier::protocol::link::{DirectoryEntry, LinkMessage};
use carrier::protocol::{B64, KeyType, signed};
use sha2::{Digest, Sha256};
use sqlx::{Connection, PgConnection};

use crate::common::*;
use crate::neighbourhood::{eventually, now_ms, sees, send_link};
use crate::process::ServerFiles;

/// `phone`'s entry, registered at `at` with `home` as its home server.
fn entry(home: &Identity, phone: &str, at: i64) -> DirectoryEntry {
    let user = Identity::generate(KeyType::P256).public_key().to_spki_der();
    let home_key = home.public_key().to_spki_der();
    let bytes = signed::directory_entry_bytes(phone, "p256", &user, at, &home_key, "home");
    DirectoryEntry {
        phone: phone.into(),
        key_type: KeyType::P256,
        public_key: B64(user),
        home_key: B64(home_key),
        home_name: "home".into(),
        registered_at: at,
        signature: B64(home.sign(&bytes)),
        hops: 0,
    }
}

/// The database URL `files` gives its server.
fn database_url(files: &ServerFiles) -> String {
    let config = std::fs::read_to_string(&files.config).expect("the config reads");
    config
        .lines()
        .find_map(|l| l.strip_prefix("url = \"")?.strip_suffix('"'))
        .expect("the config names a database")
        .to_owned()
}

/// Withdraws `withdrawn`'s registration in the database as another member
/// would, but without the notification: what a member that is not
/// listening misses.
async fn withdraw_unheard(db: &mut PgConnection, home: &Identity, withdrawn: &DirectoryEntry) {
    let at = now_ms();
    let home_key = home.public_key().to_spki_der();
    let phone = &withdrawn.phone;
    let bytes = signed::withdrawal_bytes(phone, withdrawn.registered_at, at, &home_key);
    sqlx::query("DELETE FROM directory WHERE phone = $1")
        .bind(phone)
        .execute(&mut *db)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO directory_withdrawals (phone, registered_at, withdrawn_at, home_key, signature)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(phone)
    .bind(withdrawn.registered_at)
    .bind(at)
    .bind(home_key)
    .bind(home.sign(&bytes))
    .execute(&mut *db)
    .await
    .unwrap();
}

/// Registers a new key for `phone` in the database as another member of
/// `files`' cluster would (its entry signed by the cluster's key), but
/// without the notification.
async fn replace_key_unheard(db: &mut PgConnection, files: &ServerFiles, phone: &str) {
    let key_file = files.data_dir().join(carrier::server::KEY_FILE);
    let server = Identity::load(&key_file, None).expect("the server key loads");
    let (home_key, home_name, at): (Vec<u8>, String, i64) =
        sqlx::query_as("SELECT home_key, home_name, registered_at FROM directory WHERE phone = $1")
            .bind(phone)
            .fetch_one(&mut *db)
            .await
            .unwrap();
    let user = Identity::generate(KeyType::P256).public_key().to_spki_der();
    let at = at + 1;
    let bytes = signed::directory_entry_bytes(phone, "p256", &user, at, &home_key, &home_name);
    sqlx::query(
        "UPDATE directory SET public_key = $1, registered_at = $2, signature = $3
         WHERE phone = $4",
    )
    .bind(user)
    .bind(at)
    .bind(server.sign(&bytes))
    .bind(phone)
    .execute(&mut *db)
    .await
    .unwrap();
}

/// Ends the server's connection that listens for the cluster's
/// notifications (named, like the channel, after the database and schema).
async fn cut_listener(db: &mut PgConnection) {
    let name: String = sqlx::query_scalar("SELECT current_database() || '.' || current_schema()")
        .fetch_one(&mut *db)
        .await
        .unwrap();
    let channel = format!(
        "carrier_{}",
        hex::encode(&Sha256::digest(name.as_bytes())[..8])
    );
    let cut: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE pid <> pg_backend_pid() AND query LIKE 'LISTEN%' AND strpos(query, $1) > 0",
    )
    .bind(channel)
    .fetch_all(&mut *db)
    .await
    .unwrap();
    assert_eq!(cut, [true], "one listening connection is ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listening_again_reloads_withdrawals_as_well_as_entries() {
    let mut files = ServerFiles::new();
    if !files.on_postgres() {
        return;
    }
    // A neighbour home, played by the test: pinned, so it may link in.
    let home = Identity::generate(KeyType::P256);
    files.set_links(
        0,
        &[("127.0.0.1:9".parse().unwrap(), Some(home.fingerprint()))],
    );
    let member = files.start();
    let alice = register(&member, ALICE, KeyType::P256).await;
    let (mut link, _) = carrier::tls::connect_link(
        &member.link_addr.expect("a link port").to_string(),
        &home.pkcs8_der(),
        carrier::tls::Pin::Expect(member.fingerprint),
    )
    .await
    .expect("the neighbour links");

    let carol = entry(&home, CAROL, now_ms() - 1000);
    let entries = vec![carol.clone()];
    send_link(&mut link, &LinkMessage::Directory { entries }).await;
    eventually("the member learns Carol", || sees(&alice.client, CAROL)).await;

    // Carol's registration is withdrawn while the member is not listening.
    let mut db = PgConnection::connect(&database_url(&files)).await.unwrap();
    withdraw_unheard(&mut db, &home, &carol).await;
    cut_listener(&mut db).await;
    db.close().await.ok();
    // Its copy loses Carol only by reading the directory again.
    eventually("the member reads the directory again", || async {
        !sees(&alice.client, CAROL).await
    })
    .await;
    assert!(
        files
            .log_text()
            .contains("lost the cluster notification connection"),
        "the member never noticed:\n{}",
        files.log_text()
    );

    // A stale copy of the withdrawn registration, then a marker behind it
    // on the same link: once the marker is listed, the copy was judged.
    let entries = vec![carol, entry(&home, DAVE, now_ms())];
    send_link(&mut link, &LinkMessage::Directory { entries }).await;
    eventually("the member learns the marker", || sees(&alice.client, DAVE)).await;
    assert!(
        !sees(&alice.client, CAROL).await,
        "a stale copy brought a withdrawn registration back"
    );
}

/// A key replaced while a member was not listening closes, when it listens
/// again, the sessions it holds under the old key: they would otherwise go
/// on fetching for an account that is no longer theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listening_again_closes_the_sessions_of_a_key_replaced_meanwhile() {
    let files = ServerFiles::new();
    if !files.on_postgres() {
        return;
    }
    let member = files.start();
    let bob = register_account(&member, BOB, KeyType::P256).await;
    let mut session = crate::wire::Wire::connect(&member).await;
    let answer = session.login(BOB, &bob.identity()).await;
    assert!(
        matches!(answer, carrier::protocol::Response::LoggedIn { .. }),
        "{answer:?}"
    );

    // Bob registers a new key through another member, whose notification
    // this one does not hear.
    let mut db = PgConnection::connect(&database_url(&files)).await.unwrap();
    replace_key_unheard(&mut db, &files, BOB).await;
    cut_listener(&mut db).await;
    db.close().await.ok();

    let told = session.farewell().await;
    let Some((carrier::protocol::ErrorCode::UnknownDevice, message)) = told else {
        panic!("the old key's session is not closed with unknown_device: {told:?}");
    };
    assert!(
        message.contains("log in with the new key"),
        "the session is told: {message}"
    );
}
