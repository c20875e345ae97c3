//! Copying a server's whole state from one store to another (SQLite to
//! PostgreSQL, typically): users, pending codes and their limits (per key
//! and per address), queues, outbound queues, relayed ids, the directory
//! and its withdrawals (signed or still to be signed and sent), neighbour
//! pins, disabled users, devices with their lists and prekeys, and other
//! servers' devices. The target must be empty; everything is written in
//! one transaction, so a failed copy leaves it empty; the counts are
//! compared table by table before it commits. The source must be stopped:
//! a copy from SQLite holds its directory's lock and the database's own
//! lock throughout.

use std::path::{Path, PathBuf};

use super::backend::{Conn, on_backend};
use super::queue::{Placeholder, values_of};
use super::quota::{Quota, Quotas};
use super::{DbError, Location, Store};
use crate::data_lock::{DataDirLock, DatabaseLock, LockError};

/// What is copied, in an order that keeps each queue's arrival order (rows
/// are read by their key, and the target numbers `seq` anew in that order).
const TABLES: &[Table] = &[
    Table {
        name: "users",
        order: "phone",
        columns: &[
            ("phone", Text),
            ("key_type", Text),
            ("public_key", Bytes),
            ("fingerprint", Text),
            ("registered_at", Int),
        ],
    },
    Table {
        name: "otp_codes",
        order: "phone, public_key",
        columns: &[
            ("phone", Text),
            ("code_hash", Text),
            ("key_type", Text),
            ("public_key", Bytes),
            ("issued_at", Int),
            ("expires_at", Int),
            ("address", Text),
        ],
    },
    Table {
        name: "otp_address_limits",
        order: "phone, address",
        columns: &[
            ("phone", Text),
            ("address", Text),
            ("window_start", Int),
            ("codes_issued", Int),
        ],
    },
    Table {
        name: "otp_limits",
        order: "phone, public_key",
        columns: &[
            ("phone", Text),
            ("public_key", Bytes),
            ("window_start", Int),
            ("codes_issued", Int),
            ("wrong_tries", Int),
        ],
    },
    Table {
        name: "message_queue",
        order: "seq",
        columns: &[
            ("id", Bytes),
            ("recipient", Text),
            ("device", Int),
            ("sender", Text),
            ("sender_device", Int),
            ("envelope", Bytes),
            ("received_at", Int),
            ("expires_at", Int),
        ],
    },
    Table {
        name: "outbound_queue",
        order: "seq",
        columns: &[
            ("neighbour", Text),
            ("id", Bytes),
            ("recipient", Text),
            ("device", Int),
            ("sender", Text),
            ("sender_device", Int),
            ("envelope", Bytes),
            ("received_at", Int),
            ("expires_at", Int),
            ("path", Text),
        ],
    },
    Table {
        name: "relay_seen",
        order: "recipient, device, sender, id",
        columns: &[
            ("recipient", Text),
            ("device", Int),
            ("sender", Text),
            ("id", Bytes),
            ("expires_at", Int),
        ],
    },
    Table {
        name: "directory",
        order: "phone",
        columns: &[
            ("phone", Text),
            ("key_type", Text),
            ("public_key", Bytes),
            ("home_key", Bytes),
            ("home_name", Text),
            ("registered_at", Int),
            ("signature", Bytes),
            ("via", Text),
            ("hops", Int),
        ],
    },
    Table {
        name: "directory_withdrawals",
        order: "phone",
        columns: &[
            ("phone", Text),
            ("registered_at", Int),
            ("withdrawn_at", Int),
            ("home_key", Bytes),
            ("signature", Bytes),
        ],
    },
    Table {
        name: "neighbour_pins",
        order: "address",
        columns: &[("address", Text), ("fingerprint", Text)],
    },
    Table {
        name: "device_lists",
        order: "phone",
        columns: &[
            ("phone", Text),
            ("version", Int),
            ("list", Bytes),
            ("updated_at", Int),
        ],
    },
    Table {
        name: "devices",
        order: "phone, device",
        columns: &[
            ("phone", Text),
            ("device", Int),
            ("certificate", Bytes),
            ("added_at", Int),
            ("last_seen", Int),
        ],
    },
    Table {
        name: "prekeys",
        order: "phone, device, kind, prekey_id",
        columns: &[
            ("phone", Text),
            ("device", Int),
            ("kind", Int),
            ("prekey_id", Int),
            ("prekey", Bytes),
            ("stored_at", Int),
        ],
    },
    Table {
        name: "disabled_users",
        order: "phone",
        columns: &[("phone", Text), ("disabled_at", Int)],
    },
    Table {
        name: "remote_devices",
        order: "phone",
        columns: &[
            ("phone", Text),
            ("list", Bytes),
            ("bundles", Bytes),
            ("updated_at", Int),
        ],
    },
];

/// The tables of either schema that are not copied, and why: none holds
/// state a server needs to go on where it stopped. The test below holds
/// every table of the SQLite schema to [`TABLES`] or this list.
#[cfg(test)]
const NOT_COPIED: &[(&str, &str)] = &[
    (
        "link_rendezvous",
        "a server on SQLite keeps its link codes' rendezvous in memory, so its \
         table is always empty; a rendezvous lasts minutes and not past a restart",
    ),
    (
        "cluster_identity",
        "PostgreSQL only: the first member to start on the copy records it",
    ),
    (
        "cluster_members",
        "PostgreSQL only: who is connected to each live member, rewritten by \
         every member's heartbeat",
    ),
];

/// Rows read and written per statement.
const CHUNK: i64 = 200;

/// The three kinds of stored value.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Int,
    Text,
    Bytes,
}
use Kind::{Bytes, Int, Text};

/// One table to copy: its name, the order rows are read in, and the
/// columns copied with their kinds (not `seq`).
struct Table {
    name: &'static str,
    order: &'static str,
    columns: &'static [(&'static str, Kind)],
}

impl Table {
    fn column_list(&self) -> String {
        let names: Vec<&str> = self.columns.iter().map(|(name, _)| *name).collect();
        names.join(", ")
    }
}

/// How many rows each table held, as copied.
pub type Copied = Vec<(&'static str, u64)>;

/// Why a copy did not happen.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("the target database is not empty ({table} has {rows} rows): copy into a new database")]
    TargetNotEmpty { table: &'static str, rows: u64 },
    #[error("{table}: {copied} rows copied but the source has {source_rows}; nothing was kept")]
    CountMismatch {
        table: &'static str,
        copied: u64,
        source_rows: u64,
    },
    #[error("--from and --to name the same database")]
    SameDatabase,
    #[error("there is no database at {0}: check the --from path")]
    NoSource(Location),
    #[error(
        "another carrier-server (PID {pid}) is using the data directory {dir}; stop it first, then migrate"
    )]
    SourceInUse { dir: PathBuf, pid: String },
    #[error(
        "another carrier-server (PID {pid}) is using the database {db}; stop it first, then migrate"
    )]
    DatabaseInUse { db: PathBuf, pid: String },
    #[error(transparent)]
    Lock(LockError),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// `carrier-server migrate`: copies the store at `from` into the empty one
/// at `to` (both brought to this binary's schema first).
pub async fn migrate(from: &Location, to: &Location) -> Result<Copied, CopyError> {
    if from == to {
        return Err(CopyError::SameDatabase);
    }
    // Opening a missing SQLite file would create it, and copy nothing.
    if let Location::Sqlite(path) = from
        && !path.exists()
    {
        return Err(CopyError::NoSource(from.clone()));
    }
    let _stopped = lock_source(from)?;
    let (source, _) = Store::open(from, unbounded()).await?;
    let (target, _) = Store::open(to, unbounded()).await?;
    let copied = source.copy_into(&target).await;
    source.close().await;
    target.close().await;
    copied
}

/// No limits: quotas bound new messages, and a copy takes what is there.
fn unbounded() -> Quotas {
    let unbounded = Quota {
        max_messages: u64::MAX,
        max_bytes: u64::MAX,
    };
    Quotas {
        per_recipient: unbounded,
        per_sender: unbounded,
        per_neighbour: unbounded,
    }
}

/// The locks on an SQLite source, held until the copy ends: a server
/// running on it goes on writing, and what it wrote or deleted after its
/// table was read would differ in the copy, or be lost. The database's own
/// lock is held by a server wherever the file lies; its directory's lock
/// is too when that is the server's data directory (and refuses with the
/// message an operator knows from a start there). The locks are the
/// kernel's and go with their process, so a lock file a killed server left
/// behind does not refuse the copy.
fn lock_source(from: &Location) -> Result<Option<(DataDirLock, DatabaseLock)>, CopyError> {
    let Location::Sqlite(path) = from else {
        return Ok(None);
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let refused = |e| match e {
        LockError::Held { dir, pid } => CopyError::SourceInUse { dir, pid },
        LockError::DatabaseHeld { db, pid } => CopyError::DatabaseInUse { db, pid },
        e => CopyError::Lock(e),
    };
    let dir_lock = DataDirLock::acquire(dir).map_err(refused)?;
    let db_lock = DatabaseLock::acquire(path).map_err(refused)?;
    Ok(Some((dir_lock, db_lock)))
}

impl Store {
    /// Copies everything in this store into `target`, which must be empty.
    pub async fn copy_into(&self, target: &Store) -> Result<Copied, CopyError> {
        for table in TABLES {
            let rows = target.count(table.name).await?;
            if rows > 0 {
                return Err(CopyError::TargetNotEmpty {
                    table: table.name,
                    rows,
                });
            }
        }
        let mut pooled = target.pool.acquire().await?;
        let mut tx = pooled.conn();
        let work = match tx.begin().await {
            Ok(()) => self.copy_all(&mut tx).await,
            Err(e) => Err(e.into()),
        };
        let result = match work {
            Ok(copied) => {
                let (committed, fit) = tx.end(Ok(copied)).await;
                pooled.release(fit);
                committed?
            }
            Err(e) => {
                let (_, fit) = tx.end::<()>(Err(DbError::RolledBack(e.to_string()))).await;
                pooled.release(fit);
                return Err(e);
            }
        };
        Ok(result)
    }

    async fn copy_all(&self, target: &mut Conn<'_>) -> Result<Copied, CopyError> {
        let mut copied = Vec::with_capacity(TABLES.len());
        for table in TABLES {
            let source_rows = self.count(table.name).await?;
            let mut n = 0;
            loop {
                let chunk = self.read_chunk(table, n as i64).await?;
                if chunk.is_empty() {
                    break;
                }
                n += chunk.len() as u64;
                write_chunk(target, table, chunk).await?;
            }
            let in_target = count_in(target, table.name).await?;
            if in_target != source_rows || n != source_rows {
                return Err(CopyError::CountMismatch {
                    table: table.name,
                    copied: in_target,
                    source_rows,
                });
            }
            tracing::info!(table = table.name, rows = n, "table copied");
            copied.push((table.name, n));
        }
        Ok(copied)
    }

    async fn count(&self, table: &str) -> Result<u64, DbError> {
        let sql = format!("SELECT count(*) FROM {table}");
        let n: Result<i64, _> = on_backend!(&self.pool, p =>
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(p).await);
        Ok(self.read(n)? as u64)
    }

    /// Up to [`CHUNK`] rows of `table` from the `offset`-th, each as its
    /// values in column order.
    async fn read_chunk(&self, table: &Table, offset: i64) -> Result<Vec<Row>, DbError> {
        let sql = format!(
            "SELECT {} FROM {} ORDER BY {} LIMIT $1 OFFSET $2",
            table.column_list(),
            table.name,
            table.order
        );
        let rows = on_backend!(&self.pool, p => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(CHUNK)
                .bind(offset)
                .fetch_all(p)
                .await;
            rows.and_then(|rows| rows.iter().map(|r| row_values(r, table)).collect::<Result<Vec<_>, _>>())
        });
        self.read(rows)
    }
}

/// One row's values, in column order.
type Row = Vec<Value>;

#[derive(Debug, Clone, PartialEq)]
enum Value {
    Int(Option<i64>),
    Text(Option<String>),
    Bytes(Option<Vec<u8>>),
}

fn row_values<R: sqlx::Row>(row: &R, table: &Table) -> Result<Row, sqlx::Error>
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> Option<i64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<Vec<u8>>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let value = |(i, (_, kind)): (usize, &(&str, Kind))| match kind {
        Int => row.try_get(i).map(Value::Int),
        Text => row.try_get(i).map(Value::Text),
        Bytes => row.try_get(i).map(Value::Bytes),
    };
    table.columns.iter().enumerate().map(value).collect()
}

async fn write_chunk(conn: &mut Conn<'_>, table: &Table, rows: Vec<Row>) -> Result<(), DbError> {
    let width = rows[0].len();
    let sql = format!(
        "INSERT INTO {} ({}) VALUES {}",
        table.name,
        table.column_list(),
        values_of(Placeholder::of(conn), rows.len(), width)
    );
    on_backend!(conn.reborrow(), c => {
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for value in rows.into_iter().flatten() {
            query = match value {
                Value::Int(v) => query.bind(v),
                Value::Text(v) => query.bind(v),
                Value::Bytes(v) => query.bind(v),
            };
        }
        query.execute(c).await.map(drop)
    })?;
    Ok(())
}

async fn count_in(conn: &mut Conn<'_>, table: &str) -> Result<u64, DbError> {
    let sql = format!("SELECT count(*) FROM {table}");
    let n: i64 = on_backend!(conn.reborrow(), c =>
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(c).await)?;
    Ok(n as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every table of the SQLite schema is copied, with every column but
    /// the queues' `seq` (which the target numbers anew), or is listed in
    /// [`NOT_COPIED`] with its reason: a table added to the schema and to
    /// neither would be silently left behind by every migrate.
    #[tokio::test]
    async fn every_table_of_the_schema_is_copied_or_left_on_purpose() {
        let dir = tempfile::tempdir().unwrap();
        let (pool, _) = crate::db::sqlite::open(&dir.path().join("carrier.db"))
            .await
            .unwrap();
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' \
             AND name NOT LIKE 'sqlite_%' AND name <> '_sqlx_migrations' ORDER BY name",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        assert!(tables.len() > TABLES.len(), "{tables:?}");
        for name in &tables {
            let columns: Vec<String> = sqlx::query_scalar(
                "SELECT name FROM pragma_table_info($1) WHERE name <> 'seq' ORDER BY cid",
            )
            .bind(name)
            .fetch_all(&pool)
            .await
            .unwrap();
            let left = NOT_COPIED.iter().any(|(skipped, _)| skipped == name);
            match TABLES.iter().find(|t| t.name == name) {
                Some(table) => {
                    let mut copied: Vec<&str> = table.columns.iter().map(|(c, _)| *c).collect();
                    let mut schema: Vec<&str> = columns.iter().map(String::as_str).collect();
                    copied.sort_unstable();
                    schema.sort_unstable();
                    assert_eq!(copied, schema, "{name}: the columns copied");
                    assert!(!left, "{name} is both copied and left behind");
                }
                None => assert!(left, "{name} is neither copied nor listed in NOT_COPIED"),
            }
        }
        for table in TABLES {
            assert!(tables.iter().any(|t| t == table.name), "{}", table.name);
        }
        pool.close().await;
    }

    /// Two rows in every copied table, one with every byte value in each
    /// blob and one with empty blobs (as a withdrawal not yet signed has),
    /// arrive in a copy on SQLite, and on PostgreSQL when
    /// `CARRIER_TEST_DATABASE_URL` names a cluster, value for value.
    #[tokio::test]
    async fn every_copied_column_arrives_as_it_was() {
        let (from_dir, to_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let from = Location::Sqlite(from_dir.path().join("carrier.db"));
        let (pool, _) = crate::db::sqlite::open(&from_dir.path().join("carrier.db"))
            .await
            .unwrap();
        for table in TABLES {
            for n in 1..=2 {
                insert(&pool, table, made_up(table, n)).await;
            }
        }
        pool.close().await;
        let (source, _) = Store::open(&from, unbounded()).await.unwrap();
        let postgres = postgres_schema().await;
        let mut targets = vec![Location::Sqlite(to_dir.path().join("carrier.db"))];
        targets.extend(postgres.iter().map(|(_, to)| to.clone()));
        for to in targets {
            let copied = migrate(&from, &to).await.unwrap();
            assert!(copied.iter().all(|(_, rows)| *rows == 2), "{copied:?}");
            let (target, _) = Store::open(&to, unbounded()).await.unwrap();
            for table in TABLES {
                let want = source.read_chunk(table, 0).await.unwrap();
                assert_eq!(want.len(), 2, "{}", table.name);
                let got = target.read_chunk(table, 0).await.unwrap();
                assert_eq!(got, want, "{to}: {}", table.name);
            }
            target.close().await;
        }
        source.close().await;
        if let Some((drop, _)) = postgres {
            drop.await;
        }
    }

    /// A new schema in the cluster `CARRIER_TEST_DATABASE_URL` names, if it
    /// names one: what drops it, and its location.
    async fn postgres_schema() -> Option<(impl Future<Output = ()>, Location)> {
        use sqlx::Connection;
        let cluster = std::env::var("CARRIER_TEST_DATABASE_URL").ok()?;
        let schema = format!("carrier_copy_{}", std::process::id());
        let run = |sql: String| {
            let cluster = cluster.clone();
            async move {
                let mut conn = sqlx::PgConnection::connect(&cluster).await.unwrap();
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                conn.close().await.ok();
            }
        };
        run(format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
        ))
        .await;
        let sep = if cluster.contains('?') { '&' } else { '?' };
        let url = format!("{cluster}{sep}options=-c%20search_path%3D{schema}");
        let drop = run(format!("DROP SCHEMA {schema} CASCADE"));
        Some((drop, Location::Postgres(url)))
    }

    /// The `n`th made-up row of `table`: each value differs from the other
    /// row's and from every other column's.
    fn made_up(table: &Table, n: i64) -> Row {
        let value = |(i, (name, kind)): (usize, &(&str, Kind))| match kind {
            Int => Value::Int(Some(n * 1000 + i as i64)),
            Text => Value::Text(Some(format!("{}.{name}.{n}", table.name))),
            Bytes if n == 1 => Value::Bytes(Some((0..=255).collect())),
            Bytes => Value::Bytes(Some(Vec::new())),
        };
        table.columns.iter().enumerate().map(value).collect()
    }

    async fn insert(pool: &sqlx::SqlitePool, table: &Table, row: Row) {
        let sql = format!(
            "INSERT INTO {} ({}) VALUES {}",
            table.name,
            table.column_list(),
            values_of(Placeholder::Anonymous, 1, row.len())
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for value in row {
            query = match value {
                Value::Int(v) => query.bind(v),
                Value::Text(v) => query.bind(v),
                Value::Bytes(v) => query.bind(v),
            };
        }
        query.execute(pool).await.unwrap();
    }
}
