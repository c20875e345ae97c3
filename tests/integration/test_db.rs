//! Databases for tests: a fresh SQLite file in a temporary directory, or a
//! fresh schema on the PostgreSQL cluster named by
//! `CARRIER_TEST_DATABASE_URL` (`.ci/postgres.sh` starts a throw-away one).
//! Without that variable the PostgreSQL half of a test is skipped, and the
//! run says so once on standard error.

use std::io::Write;
use std::sync::Once;

use carrier::db::Location;
use sqlx::Connection;
use sqlx::postgres::PgConnection;
use tempfile::TempDir;

/// The PostgreSQL cluster tests may use.
pub const DATABASE_URL_VAR: &str = "CARRIER_TEST_DATABASE_URL";

/// A database of its own for one test; deleted when dropped (SQLite) or by
/// [`TestDb::remove`] (PostgreSQL).
pub enum TestDb {
    Sqlite(TempDir),
    Postgres { cluster: String, schema: String },
}

impl TestDb {
    pub fn sqlite() -> Self {
        TestDb::Sqlite(tempfile::tempdir().expect("a temporary directory"))
    }

    /// A new, empty schema on the test cluster, or `None` (said once) when
    /// no cluster is configured.
    pub async fn postgres() -> Option<Self> {
        let Some(cluster) = std::env::var(DATABASE_URL_VAR)
            .ok()
            .filter(|u| !u.is_empty())
        else {
            say_skipped();
            return None;
        };
        let schema = format!("carrier_test_{}", hex::encode(rand_bytes()));
        let mut conn = PgConnection::connect(&cluster)
            .await
            .unwrap_or_else(|e| panic!("{DATABASE_URL_VAR} names a database that fails: {e}"));
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&mut conn)
            .await
            .expect("a test schema is created");
        conn.close().await.ok();
        Some(TestDb::Postgres { cluster, schema })
    }

    /// Both backends, or only SQLite when PostgreSQL is not configured.
    pub async fn each() -> Vec<Self> {
        let mut all = vec![TestDb::sqlite()];
        all.extend(TestDb::postgres().await);
        all
    }

    /// A fresh schema when the suite runs against PostgreSQL, from inside
    /// or outside a runtime (its own thread and runtime make it).
    pub fn postgres_blocking() -> Option<Self> {
        std::thread::spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(TestDb::postgres())
        })
        .join()
        .expect("the schema thread does not panic")
    }

    pub fn backend(&self) -> &'static str {
        match self {
            TestDb::Sqlite(_) => "sqlite",
            TestDb::Postgres { .. } => "postgres",
        }
    }

    pub fn location(&self) -> Location {
        Location::parse(&self.url()).expect("a test database URL parses")
    }

    /// The URL a server is given (`--database-url`).
    pub fn url(&self) -> String {
        match self {
            TestDb::Sqlite(dir) => format!("sqlite:{}", dir.path().join("carrier.db").display()),
            TestDb::Postgres { cluster, schema } => {
                let sep = if cluster.contains('?') { '&' } else { '?' };
                format!("{cluster}{sep}options=-c%20search_path%3D{schema}")
            }
        }
    }

    /// Runs one statement on the database from outside the server.
    pub async fn execute(&self, sql: &str) {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        match self {
            TestDb::Sqlite(_) => {
                let mut conn = sqlx::SqliteConnection::connect(&self.url()).await.unwrap();
                sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
                conn.close().await.ok();
            }
            TestDb::Postgres { .. } => {
                let mut conn = PgConnection::connect(&self.url()).await.unwrap();
                sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
                conn.close().await.ok();
            }
        }
    }

    /// Deletes the test's schema (a temporary directory goes by itself).
    pub async fn remove(self) {
        if let TestDb::Postgres { cluster, schema } = &self
            && let Ok(mut conn) = PgConnection::connect(cluster).await
        {
            let drop = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
            sqlx::raw_sql(sqlx::AssertSqlSafe(drop))
                .execute(&mut conn)
                .await
                .ok();
            conn.close().await.ok();
        }
    }
}

fn rand_bytes() -> [u8; 8] {
    use rand::TryRng;
    let mut bytes = [0; 8];
    rand::rngs::SysRng
        .try_fill_bytes(&mut bytes)
        .expect("the OS generator works");
    bytes
}

/// Written straight to the process's standard error, past the test
/// harness's capture, so a plain `cargo test` shows it.
fn say_skipped() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = writeln!(
            std::io::stderr(),
            "note: the PostgreSQL half of the storage tests was skipped: set {DATABASE_URL_VAR} \
             (`source .ci/postgres.sh && postgres_start` starts a throw-away cluster)"
        );
    });
}
