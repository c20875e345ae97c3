//! A scratch SQLite database, opened the way the queue's writer opens its
//! connection (WAL, `synchronous=FULL`, the same cache settings), so the
//! benchmark can measure what one durable commit costs this machine with
//! no server around it.

use std::path::Path;

use sqlx::{Connection, SqliteConnection};

use super::DbError;

pub struct ScratchDb {
    conn: SqliteConnection,
}

impl ScratchDb {
    /// Creates the database at `path`, which must not exist yet, with one
    /// table of rows.
    pub async fn create(path: &Path) -> Result<Self, DbError> {
        let mut conn = super::sqlite::connect(&super::sqlite::connect_options(path)?).await?;
        sqlx::query("CREATE TABLE scratch (id INTEGER PRIMARY KEY, body BLOB NOT NULL)")
            .execute(&mut conn)
            .await?;
        Ok(Self { conn })
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

    /// Closes the connection; the files are the caller's to remove.
    pub async fn close(self) -> Result<(), DbError> {
        self.conn.close().await?;
        Ok(())
    }
}
