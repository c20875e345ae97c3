//! The v2 tables of the client's store (migrations/client/0002): this
//! device, its sessions, and the checked devices of its contacts. Plain
//! functions over an executor, so a caller can put several in one
//! transaction (a session and the message it opened; a session and the
//! prekey store it consumed).

use sqlx::{SqliteConnection, SqliteExecutor, SqlitePool};

use crate::client::ClientError;

/// Sessions kept per peer device (docs/PROTOCOL.md §14.6).
pub const SESSIONS_PER_DEVICE: i64 = 4;

/// This device's row.
#[derive(sqlx::FromRow)]
pub struct DeviceRow {
    pub device_id: i64,
    pub name: String,
    pub local: Vec<u8>,
    pub prekeys: Vec<u8>,
    pub highest_id: i64,
}

pub async fn device(pool: &SqlitePool) -> Result<Option<DeviceRow>, ClientError> {
    Ok(sqlx::query_as(
        "SELECT device_id, name, local, prekeys, highest_id FROM device WHERE only = 1",
    )
    .fetch_optional(pool)
    .await?)
}

/// Makes this home's device, forgetting every session and checked device
/// of an earlier one (a new device starts afresh).
pub async fn replace_device(
    tx: &mut SqliteConnection,
    row: &DeviceRow,
    now: i64,
) -> Result<(), ClientError> {
    for table in [
        "device",
        "sessions",
        "peer_devices",
        "peer_lists",
        "device_notices",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table}")))
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query(
        "INSERT INTO device (only, device_id, name, local, prekeys, highest_id, created_at)
         VALUES (1, $1, $2, $3, $4, $5, $6)",
    )
    .bind(row.device_id)
    .bind(&row.name)
    .bind(&row.local)
    .bind(&row.prekeys)
    .bind(row.highest_id)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

pub async fn save_prekeys(ex: impl SqliteExecutor<'_>, sealed: &[u8]) -> Result<(), ClientError> {
    sqlx::query("UPDATE device SET prekeys = $1 WHERE only = 1")
        .bind(sealed)
        .execute(ex)
        .await?;
    Ok(())
}

/// Raises the highest device id known to this account (never lowers it).
pub async fn note_device_id(pool: &SqlitePool, id: u32) -> Result<(), ClientError> {
    sqlx::query("UPDATE device SET highest_id = max(highest_id, $1) WHERE only = 1")
        .bind(id as i64)
        .execute(pool)
        .await?;
    Ok(())
}

/// A stored session.
#[derive(sqlx::FromRow)]
pub struct SessionRow {
    pub state: Vec<u8>,
}

/// The session to send in: the one a message was last opened in, else the
/// newest.
pub async fn sending_session(
    pool: &SqlitePool,
    peer: &str,
    device: u32,
) -> Result<Option<SessionRow>, ClientError> {
    Ok(sqlx::query_as(
        "SELECT state FROM sessions WHERE peer = $1 AND peer_device = $2
         ORDER BY opened_at DESC, created_at DESC LIMIT 1",
    )
    .bind(peer)
    .bind(device as i64)
    .fetch_optional(pool)
    .await?)
}

pub async fn session(
    pool: &SqlitePool,
    peer: &str,
    device: u32,
    session_id: &[u8],
) -> Result<Option<SessionRow>, ClientError> {
    Ok(sqlx::query_as(
        "SELECT state FROM sessions
         WHERE peer = $1 AND peer_device = $2 AND session_id = $3",
    )
    .bind(peer)
    .bind(device as i64)
    .bind(session_id)
    .fetch_optional(pool)
    .await?)
}

/// Where a session is saved from, which decides what it is preferred for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// Sealed a message.
    Sent,
    /// Opened a message: the session to answer in from now on.
    Opened,
}

/// Saves a session and keeps at most [`SESSIONS_PER_DEVICE`] per peer
/// device, dropping the least recently used.
pub async fn save_session(
    tx: &mut SqliteConnection,
    peer: &str,
    device: u32,
    session_id: &[u8],
    sealed: &[u8],
    how: Use,
    now: i64,
) -> Result<(), ClientError> {
    let opened = if how == Use::Opened { now } else { 0 };
    sqlx::query(
        "INSERT INTO sessions (peer, peer_device, session_id, state, created_at, opened_at, used_at)
         VALUES ($1, $2, $3, $4, $5, $6, $5)
         ON CONFLICT (peer, peer_device, session_id) DO UPDATE SET state = excluded.state,
             used_at = excluded.used_at,
             opened_at = max(sessions.opened_at, excluded.opened_at)",
    )
    .bind(peer)
    .bind(device as i64)
    .bind(session_id)
    .bind(sealed)
    .bind(now)
    .bind(opened)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "DELETE FROM sessions WHERE peer = $1 AND peer_device = $2 AND session_id NOT IN
             (SELECT session_id FROM sessions WHERE peer = $1 AND peer_device = $2
              ORDER BY used_at DESC LIMIT $3)",
    )
    .bind(peer)
    .bind(device as i64)
    .bind(SESSIONS_PER_DEVICE)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// A contact's device as checked against the pinned account key.
#[derive(sqlx::FromRow, Clone)]
pub struct PeerDeviceRow {
    pub device_id: i64,
    pub account_fingerprint: String,
    pub device_key: Vec<u8>,
    /// Empty until a certificate of the device has checked out (a
    /// certificate's name never is).
    pub name: String,
    pub created_at: i64,
}

pub async fn peer_device(
    pool: &SqlitePool,
    phone: &str,
    device: u32,
) -> Result<Option<PeerDeviceRow>, ClientError> {
    Ok(sqlx::query_as(
        "SELECT device_id, account_fingerprint, device_key, name, created_at FROM peer_devices
         WHERE phone = $1 AND device_id = $2",
    )
    .bind(phone)
    .bind(device as i64)
    .fetch_optional(pool)
    .await?)
}

/// The devices of `phone` this home has checked, by id.
pub async fn peer_device_ids(pool: &SqlitePool, phone: &str) -> Result<Vec<u32>, ClientError> {
    let ids: Vec<i64> = sqlx::query_scalar(
        "SELECT device_id FROM peer_devices WHERE phone = $1 ORDER BY device_id",
    )
    .bind(phone)
    .fetch_all(pool)
    .await?;
    Ok(ids.into_iter().map(|id| id as u32).collect())
}

/// The highest list version accepted for `phone` under `fingerprint`.
pub async fn list_version(
    pool: &SqlitePool,
    phone: &str,
    fingerprint: &str,
) -> Result<Option<u64>, ClientError> {
    let v: Option<i64> = sqlx::query_scalar(
        "SELECT version FROM peer_lists WHERE phone = $1 AND account_fingerprint = $2",
    )
    .bind(phone)
    .bind(fingerprint)
    .fetch_optional(pool)
    .await?;
    Ok(v.map(|v| v as u64))
}

/// Replaces what is known of `phone`'s devices by a checked list: devices
/// no longer listed lose their sessions. A device given without a name (no
/// certificate of it checked out this time) keeps the one it had under the
/// same key. Devices new under the same account key (an id not seen
/// before, or seen with another key) are noted for `fetch` to tell once
/// when `announce`, by number while no certificate has named them: a device
/// whose messages are accepted is never one the user was not told of, and
/// one told of stays known however often its bundle is refused.
pub async fn replace_peer_devices(
    tx: &mut SqliteConnection,
    phone: &str,
    fingerprint: &str,
    version: u64,
    devices: &[PeerDeviceRow],
    announce: bool,
) -> Result<(), ClientError> {
    let known: Vec<(i64, String, Vec<u8>, String)> = sqlx::query_as(
        "SELECT device_id, account_fingerprint, device_key, name FROM peer_devices
         WHERE phone = $1",
    )
    .bind(phone)
    .fetch_all(&mut *tx)
    .await?;
    let same_account = known.iter().any(|(_, fp, _, _)| fp == fingerprint);
    // A device id under a new account key (or with a new key) is another
    // device: sessions with the old one must not be used for it.
    for (id, fp, key, _) in &known {
        let same = devices
            .iter()
            .any(|d| d.device_id == *id && fp == fingerprint && d.device_key == *key);
        if !same {
            sqlx::query("DELETE FROM sessions WHERE peer = $1 AND peer_device = $2")
                .bind(phone)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
    }
    sqlx::query("DELETE FROM peer_devices WHERE phone = $1")
        .bind(phone)
        .execute(&mut *tx)
        .await?;
    for d in devices {
        let before = known
            .iter()
            .find(|(id, fp, _, _)| *id == d.device_id && fp == fingerprint);
        let name = match before {
            Some((_, _, key, name)) if d.name.is_empty() && *key == d.device_key => name,
            _ => &d.name,
        };
        let new = before.is_none_or(|(_, _, key, _)| *key != d.device_key);
        if announce && same_account && new {
            sqlx::query(
                "INSERT INTO device_notices (phone, device_id, name) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING",
            )
            .bind(phone)
            .bind(d.device_id)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "INSERT INTO peer_devices (phone, device_id, account_fingerprint, device_key, name, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(phone)
        .bind(d.device_id)
        .bind(fingerprint)
        .bind(&d.device_key)
        .bind(name)
        .bind(d.created_at)
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query(
        "DELETE FROM sessions WHERE peer = $1
         AND peer_device NOT IN (SELECT device_id FROM peer_devices WHERE phone = $1)",
    )
    .bind(phone)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO peer_lists (phone, account_fingerprint, version) VALUES ($1, $2, $3)
         ON CONFLICT (phone) DO UPDATE SET account_fingerprint = excluded.account_fingerprint,
             version = excluded.version",
    )
    .bind(phone)
    .bind(fingerprint)
    .bind(version as i64)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The phones whose device lists this home has checked.
pub async fn listed_phones(pool: &SqlitePool) -> Result<Vec<String>, ClientError> {
    Ok(
        sqlx::query_scalar("SELECT phone FROM peer_lists ORDER BY phone")
            .fetch_all(pool)
            .await?,
    )
}

/// Devices contacts added (phone, device id, name: empty while no
/// certificate has named it), each returned once.
pub async fn take_device_notices(
    pool: &SqlitePool,
) -> Result<Vec<(String, i64, String)>, ClientError> {
    let mut tx = crate::client::home::write_tx(pool).await?;
    let notices: Vec<(String, i64, String)> = sqlx::query_as(
        "SELECT phone, device_id, name FROM device_notices ORDER BY phone, device_id",
    )
    .fetch_all(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM device_notices")
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(notices)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::home::Home;

    async fn sessions_of(pool: &SqlitePool) -> Vec<Vec<u8>> {
        sqlx::query_scalar("SELECT session_id FROM sessions ORDER BY session_id")
            .fetch_all(pool)
            .await
            .unwrap()
    }

    fn row(id: i64, name: &str) -> PeerDeviceRow {
        PeerDeviceRow {
            device_id: id,
            account_fingerprint: "ab".into(),
            device_key: vec![id as u8; 65],
            name: name.into(),
            created_at: 0,
        }
    }

    /// Devices of `+12025550102` as remembered: (id, name).
    async fn remembered(pool: &SqlitePool) -> Vec<(i64, String)> {
        sqlx::query_as("SELECT device_id, name FROM peer_devices ORDER BY device_id")
            .fetch_all(pool)
            .await
            .unwrap()
    }

    /// A device whose certificate did not come this time keeps its name
    /// and is not told of again; a new one is told of at once, by number
    /// while no certificate has named it, and only once; one present at
    /// first contact is never told of, however its bundles come later.
    #[tokio::test]
    async fn a_device_is_told_of_once_however_its_bundles_come() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::open(dir.path()).await.unwrap();
        let pool = home.pool();
        let replace = |version: u64, rows: Vec<PeerDeviceRow>| async move {
            let mut tx = pool.begin().await.unwrap();
            replace_peer_devices(&mut tx, "+12025550102", "ab", version, &rows, true)
                .await
                .unwrap();
            tx.commit().await.unwrap();
        };
        let bob = "+12025550102".to_owned();
        replace(1, vec![row(1, "phone"), row(2, "")]).await;
        assert!(
            take_device_notices(pool).await.unwrap().is_empty(),
            "first contact"
        );
        replace(1, vec![row(1, "phone"), row(2, "tablet")]).await;
        assert!(
            take_device_notices(pool).await.unwrap().is_empty(),
            "there at first contact: never new"
        );
        replace(1, vec![row(1, "phone"), row(2, "")]).await;
        assert_eq!(
            remembered(pool).await,
            [(1, "phone".into()), (2, "tablet".into())]
        );
        assert!(take_device_notices(pool).await.unwrap().is_empty());

        replace(2, vec![row(1, "phone"), row(2, ""), row(3, "")]).await;
        assert_eq!(
            take_device_notices(pool).await.unwrap(),
            [(bob.clone(), 3, String::new())],
            "told at once, by number"
        );
        replace(2, vec![row(1, "phone"), row(2, "tablet"), row(3, "laptop")]).await;
        assert!(
            take_device_notices(pool).await.unwrap().is_empty(),
            "told once, named or not"
        );
        let mut rekeyed = row(3, "laptop");
        rekeyed.device_key = vec![9; 65];
        replace(3, vec![row(1, "phone"), row(2, "tablet"), rekeyed]).await;
        assert_eq!(
            take_device_notices(pool).await.unwrap(),
            [(bob, 3, "laptop".to_owned())],
            "an id under a new key is another device"
        );
    }

    #[tokio::test]
    async fn four_sessions_per_device_are_kept_and_the_last_opened_one_sends() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::open(dir.path()).await.unwrap();
        let pool = home.pool();
        let save = |id: u8, how: Use, now: i64| async move {
            let mut tx = pool.begin().await.unwrap();
            save_session(&mut tx, "+12025550102", 1, &[id], &[id, id], how, now)
                .await
                .unwrap();
            tx.commit().await.unwrap();
        };
        save(1, Use::Opened, 10).await;
        for (id, now) in [(2, 20), (3, 30), (4, 40)] {
            save(id, Use::Sent, now).await;
        }
        let sending = sending_session(pool, "+12025550102", 1).await.unwrap();
        assert_eq!(
            sending.unwrap().state,
            [1, 1],
            "the one a message opened in"
        );
        save(5, Use::Sent, 50).await;
        assert_eq!(
            sessions_of(pool).await,
            [vec![2], vec![3], vec![4], vec![5]],
            "the least recently used went"
        );
        let sending = sending_session(pool, "+12025550102", 1).await.unwrap();
        assert_eq!(sending.unwrap().state, [5, 5], "else the newest");
        save(3, Use::Opened, 60).await;
        let sending = sending_session(pool, "+12025550102", 1).await.unwrap();
        assert_eq!(sending.unwrap().state, [3, 3]);
        assert!(
            sending_session(pool, "+12025550102", 2)
                .await
                .unwrap()
                .is_none()
        );
    }
}
