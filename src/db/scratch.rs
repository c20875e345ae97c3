//! A scratch SQLite database, opened the way the queue's writer opens its
//! connection (WAL, `synchronous=FULL`, the same cache settings), so the
//! benchmark can measure what one durable commit costs this machine with
//! no server around it.

use std::path::{Path, PathBuf};

use sqlx::{Connection, SqliteConnection};

use super::DbError;

pub struct Scratch {
    conn: SqliteConnection,
    path: PathBuf,
}

impl Scratch {
    /// Opens (creating) the database at `path` with one table of rows.
    pub async fn create(path: &Path) -> Result<Self, DbError> {
        let mut conn = super::sqlite::connect(&super::sqlite::connect_options(path)?).await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS scratch (id INTEGER PRIMARY KEY, body BLOB NOT NULL)",
        )
        .execute(&mut conn)
        .await?;
        Ok(Self {
            conn,
            path: path.to_owned(),
        })
    }

    /// Inserts one row as a transaction of its own: on the disk when this
    /// returns, as a stored message is before its sender hears of it.
    pub async fn commit_row(&mut self, body: &[u8]) -> Result<(), DbError> {
        sqlx::query("INSERT INTO scratch (body) VALUES (?)")
            .bind(body)
            .execute(&mut self.conn)
            .await?;
        Ok(())
    }

    /// Closes the connection and removes the database's files.
    pub async fn remove(self) -> Result<(), DbError> {
        self.conn.close().await?;
        for suffix in ["", "-wal", "-shm"] {
            let mut name = self.path.clone().into_os_string();
            name.push(suffix);
            // Already gone is as good as removed.
            std::fs::remove_file(name).ok();
        }
        Ok(())
    }
}
