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
use crate::crypto::Purpose;
use crate::crypto::{self, Identity, PublicKey};
use crate::db;
use crate::db::quota::Quotas;
use crate::db::writer::QueueWriter;
use crate::domain::{Fingerprint, PhoneNumber};
use crate::link::NeighbourConfig;
use crate::protocol::ErrorCode;
use crate::protocol::{B64, KeyType, UserInfo};
use crate::routing::Router;
use crate::routing::ServerInfo;
use crate::routing::directory::Directory;
use crate::routing::directory::{self, Entry};
use error::ApiError;
pub use session::MAX_PENDING_PER_ADDRESS;
use session::Session;

/// File name of the server's long-term key inside the data directory.
pub const KEY_FILE: &str = "server_key.pem";

/// What every connection task shares.
pub struct ServerState {
    pub router: Arc<Router>,
    pub otp: Otp,
    tls: Arc<rustls::ServerConfig>,
    connection_slots: Arc<Semaphore>,
    pending_logins: Arc<session::PendingLogins>,
    /// The long-term key, which vouches for our users' directory entries.
    identity: Identity,
}

impl ServerState {
    /// A directory entry for one of our own users, signed by this server.
    fn local_entry(&self, info: UserInfo) -> Entry {
        let me = self.router.me();
        let mut entry = Entry {
            info,
            home: me.fingerprint,
            home_key: me.public_key.clone(),
            home_name: me.name.clone(),
            signature: Vec::new(),
            via: None,
            hops: 0,
        };
        entry.signature = self.identity.sign(&directory::signed_bytes(&entry));
        entry
    }
}

/// A server ready to serve: storage open, key loaded, background tasks up.
pub struct Server {
    state: Arc<ServerState>,
    link_listener: Option<TcpListener>,
    neighbours: Vec<NeighbourConfig>,
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
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the server key {path}: {source}")]
    Key {
        path: PathBuf,
        source: crypto::CryptoError,
    },
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
        crate::private_files::create_dir(dir).map_err(|source| StartError::DataDir {
            path: dir.clone(),
            source,
        })?;
        let key_path = dir.join(KEY_FILE);
        let (key, key_created) =
            crypto::load_or_create_server_key(&key_path).map_err(|source| StartError::Key {
                path: key_path.clone(),
                source,
            })?;
        let tls = crate::tls::server_config(&key.pkcs8_der())?;
        let db_err = |source| StartError::Db {
            path: dir.clone(),
            source,
        };
        let (pool, options) = db::open(dir).await.map_err(db_err)?;
        let me = ServerInfo {
            fingerprint: key.fingerprint(),
            public_key: key.public_key().to_spki_der(),
            name: config
                .name
                .clone()
                .unwrap_or_else(|| format!("{}:{}", config.host, config.port)),
        };
        let directory = Directory::load(&pool, me.fingerprint)
            .await
            .map_err(db_err)?;
        let (committed_tx, committed_rx) = tokio::sync::mpsc::unbounded_channel();
        let quotas = Quotas {
            per_recipient: config.quota,
            per_neighbour: config.neighbour_quota,
        };
        let (writer, writer_task) = QueueWriter::start(&options, quotas, committed_tx)
            .await
            .map_err(db_err)?;
        let router = Router::start(
            pool.clone(),
            writer,
            committed_rx,
            directory,
            me,
            clock.clone(),
            config.message_ttl_ms,
        );
        let otp = Otp::new(
            pool.clone(),
            config.otp_policy,
            clock,
            config.code_sink.clone(),
        );
        let state = Arc::new(ServerState {
            router,
            otp,
            tls,
            connection_slots: Arc::new(Semaphore::new(connection_limit(config.max_connections))),
            pending_logins: Arc::default(),
            identity: key,
        });
        publish_local_users(&state, &pool).await.map_err(db_err)?;
        let fingerprint = state.router.me().fingerprint;
        Ok(Self {
            state,
            link_listener: None,
            neighbours: config.neighbours.clone(),
            pool,
            writer_task,
            fingerprint,
            key_created,
            data_dir: dir.clone(),
        })
    }

    /// Serves neighbour links on `listener` (mutual TLS) while running.
    pub fn with_link_listener(mut self, listener: TcpListener) -> Self {
        self.link_listener = Some(listener);
        self
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
    pub async fn run(mut self, listener: TcpListener, shutdown: CancellationToken) {
        let tracker = TaskTracker::new();
        let neighbours = std::mem::take(&mut self.neighbours);
        if self.link_listener.is_some() || !neighbours.is_empty() {
            let key_der = self.state.identity.pkcs8_der();
            let links = self.link_listener.take();
            let started = crate::link::start(
                self.state.router.clone(),
                key_der,
                links,
                neighbours,
                shutdown.clone(),
                &tracker,
            )
            .await;
            if let Err(e) = started {
                tracing::error!(error = %e, "neighbour links could not start");
            }
        }
        accept_loop(&listener, &self.state, &tracker, &shutdown).await;
        drop(listener);
        tracker.close();
        tracker.wait().await;
        let Server {
            state,
            pool,
            writer_task,
            ..
        } = self;
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

/// Makes sure every user registered here has a current, signed directory
/// entry (the server's name may have changed since it was signed).
async fn publish_local_users(state: &ServerState, pool: &SqlitePool) -> Result<(), db::DbError> {
    let me = state.router.me().clone();
    for row in db::users::all(pool).await? {
        let Ok(phone) = PhoneNumber::from_canonical(&row.phone) else {
            continue;
        };
        let current = state.router.directory.get(&phone);
        let up_to_date = current.as_ref().is_some_and(|e| {
            (e.info.registered_at, *e.home.as_bytes())
                > (row.registered_at, *me.fingerprint.as_bytes())
                || (e.via.is_none()
                    && e.info.registered_at == row.registered_at
                    && e.home_name == me.name)
        });
        if up_to_date {
            continue;
        }
        let Some(key_type) = KeyType::parse(&row.key_type) else {
            continue;
        };
        let info = UserInfo {
            phone: row.phone,
            key_type,
            fingerprint: row.fingerprint,
            public_key: B64(row.public_key),
            registered_at: row.registered_at,
        };
        state.router.publish_local(state.local_entry(info)).await?;
    }
    Ok(())
}

/// File descriptors kept for the database, links and the listener itself.
const RESERVED_FDS: usize = 128;

/// The configured connection limit, lowered to what the process's
/// open-file limit allows: past it, accepting would fail for everyone.
fn connection_limit(configured: usize) -> usize {
    let Some(fds) = open_file_limit() else {
        return configured;
    };
    let room = fds.saturating_sub(RESERVED_FDS).max(1);
    if configured > room {
        tracing::warn!(
            configured,
            open_file_limit = fds,
            using = room,
            "server.max_connections is above what the open-file limit (ulimit -n) allows; lowering it"
        );
        return room;
    }
    configured
}

/// The soft open-file limit, from /proc/self/limits.
fn open_file_limit() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
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
    let link = state
        .router
        .registry
        .join(phone.as_str(), session.outbox.clone());
    state.router.presence_changed();
    tracing::info!(%phone, "logged in");
    session.user = Some((phone, link));
}
