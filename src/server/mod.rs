//! The server's edge: accept loop with a connection limit, one task per
//! connection, graceful shutdown. [`Server::open`] builds the state from a
//! configuration; [`Server::run`] serves a bound listener until the shutdown
//! token is cancelled, then finishes in-flight requests and closes storage.

mod connection;
mod error;
mod handlers;
mod session;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sqlx::SqlitePool;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::otp::Otp;
use crate::clock::Clock;
use crate::config::ServerConfig;
use crate::crypto::{self, PublicKey};
use crate::crypto::Purpose;
use crate::db::{self, writer::QueueWriter};
use crate::domain::{Fingerprint, PhoneNumber};
use crate::protocol::ErrorCode;
use crate::routing::Router;
use crate::routing::directory::Directory;
use error::ApiError;
use session::Session;

/// File name of the server's long-term key inside the data directory.
pub const KEY_FILE: &str = "server_key.pem";

/// What every connection task shares.
pub struct ServerState {
    pub router: Arc<Router>,
    pub otp: Otp,
    tls: Arc<rustls::ServerConfig>,
    connection_slots: Arc<Semaphore>,
}

/// A server ready to serve: storage open, key loaded, background tasks up.
pub struct Server {
    state: Arc<ServerState>,
    pool: SqlitePool,
    writer_task: tokio::task::JoinHandle<()>,
    fingerprint: Fingerprint,
    key_created: bool,
    data_dir: PathBuf,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create the data directory {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("the server key {path}: {source}")]
    Key { path: PathBuf, source: crypto::CryptoError },
    #[error("TLS set-up failed: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("the database in {path}: {source}")]
    Db { path: PathBuf, source: db::DbError },
}

impl Server {
    /// Opens the data directory (database, long-term key) and starts the
    /// background tasks. Nothing listens yet.
    pub async fn open(config: &ServerConfig, clock: Clock) -> Result<Self, StartError> {
        crate::tls::install_crypto_provider();
        let dir = &config.data_dir;
        create_private_dir(dir).map_err(|source| StartError::DataDir { path: dir.clone(), source })?;
        let key_path = dir.join(KEY_FILE);
        let (key, key_created) = crypto::load_or_create_server_key(&key_path)
            .map_err(|source| StartError::Key { path: key_path.clone(), source })?;
        let tls = crate::tls::server_config(&key.pkcs8_der())?;
        let db_err = |source| StartError::Db { path: dir.clone(), source };
        let (pool, options) = db::open(dir).await.map_err(db_err)?;
        let directory = Directory::load(&pool).await.map_err(db_err)?;
        let (committed_tx, committed_rx) = tokio::sync::mpsc::unbounded_channel();
        let (writer, writer_task) =
            QueueWriter::start(&options, config.quota, committed_tx).await.map_err(db_err)?;
        let router =
            Router::start(pool.clone(), writer, committed_rx, directory, clock.clone(), config.message_ttl_ms);
        let otp = Otp::new(pool.clone(), config.otp_policy, clock, config.code_sink.clone());
        let state = Arc::new(ServerState {
            router,
            otp,
            tls,
            connection_slots: Arc::new(Semaphore::new(config.max_connections)),
        });
        Ok(Self { state, pool, writer_task, fingerprint: key.fingerprint(), key_created, data_dir: dir.clone() })
    }

    /// The fingerprint of the server's long-term key, which clients pin.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// Whether the long-term key was created by this start.
    pub fn key_created(&self) -> bool {
        self.key_created
    }

    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    /// Serves `listener` until `shutdown` is cancelled; then stops accepting,
    /// lets every connection finish its current request, commits what is
    /// pending and closes the database.
    pub async fn run(self, listener: TcpListener, shutdown: CancellationToken) {
        let tracker = TaskTracker::new();
        accept_loop(&listener, &self.state, &tracker, &shutdown).await;
        drop(listener);
        tracker.close();
        tracker.wait().await;
        let Server { state, pool, writer_task, .. } = self;
        drop(state);
        if let Err(e) = writer_task.await {
            tracing::error!(error = %e, "the queue writer ended abnormally");
        }
        pool.close().await;
        tracing::info!("server stopped");
    }
}

async fn accept_loop(
    listener: &TcpListener,
    state: &Arc<ServerState>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) {
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return,
            p = state.connection_slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
        };
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                let state = state.clone();
                let shutdown = shutdown.clone();
                let conn_tracker = tracker.clone();
                tracker.spawn(async move {
                    connection::serve(stream, peer, state, shutdown, conn_tracker).await;
                    drop(permit);
                });
            }
            Err(e) => {
                // Out of file descriptors and similar: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Creates the data directory readable by its owner only.
fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Checks a proof of key possession off the async threads (a public-key
/// operation costs about as much as storing many messages).
async fn verify_proof(
    purpose: Purpose,
    session: &Session,
    nonce: [u8; crate::auth::proof::NONCE_LEN],
    phone: &PhoneNumber,
    key: PublicKey,
    signature: Vec<u8>,
) -> Result<(), ApiError> {
    let exporter = session.exporter;
    let phone_owned = phone.clone();
    let ok = tokio::task::spawn_blocking(move || {
        crate::auth::proof::verify(purpose, &exporter, &nonce, &phone_owned, &key, &signature)
    })
    .await
    .unwrap_or(false);
    if ok {
        Ok(())
    } else {
        tracing::info!(%phone, peer = %session.peer, "proof of key possession refused");
        Err(ApiError::new(
            ErrorCode::BadSignature,
            "the signature does not prove possession of the key for this connection",
        ))
    }
}

/// Marks the session as `phone` and makes it reachable for live push.
fn login_session(state: &ServerState, session: &mut Session, phone: PhoneNumber) {
    let link = state.router.registry.join(phone.as_str(), session.outbox.clone());
    tracing::info!(%phone, "logged in");
    session.user = Some((phone, link));
}
