//! The server's edge: accept loop with a connection limit, one task per
//! connection, graceful shutdown.
//!
//! [`serve`] is the one start-up path, what `carrier-server` runs: open the
//! data directory, bind the client port and the link port, print where it
//! listens, serve until the shutdown token is cancelled. Tests take the same
//! steps one by one ([`Server::open`] with their own clock,
//! [`Listeners::bind`] on port 0, [`Server::run`]) to learn the bound
//! addresses and to stop the server and wait for it.

mod connection;
mod error;
mod handlers;
mod session;
mod start;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::otp::Otp;
use crate::clock::Clock;
use crate::config::{NeighbourConfig, ServerConfig};
use crate::crypto::{self, Identity};
use crate::db;
use crate::db::Store;
use crate::db::quota::Quotas;
use crate::domain::{Fingerprint, PhoneNumber};
use crate::protocol::{B64, KeyType, UserInfo};
use crate::routing::directory::{self, Entry};
use crate::routing::{Router, ServerInfo};
pub use session::MAX_PENDING_PER_ADDRESS;
pub use start::{Listeners, serve, shutdown_on_signal};

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
    fn local_entry(&self, phone: PhoneNumber, info: UserInfo) -> Entry {
        let me = self.router.me();
        let mut entry = Entry {
            phone,
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
    neighbours: Vec<NeighbourConfig>,
    store: Store,
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
    #[error("the database at {location}: {source}")]
    Db {
        location: db::Location,
        source: db::DbError,
    },
    #[error("cannot listen on {addr} (is another server running there?)")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot listen for neighbour servers on {addr}")]
    LinkListen {
        addr: String,
        source: std::io::Error,
    },
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
        let location = config.database_location();
        let db_err = |source| StartError::Db {
            location: location.clone(),
            source,
        };
        let me = ServerInfo {
            fingerprint: key.fingerprint(),
            public_key: key.public_key().to_spki_der(),
            name: config
                .name
                .clone()
                .unwrap_or_else(|| format!("{}:{}", config.host, config.port)),
        };
        let quotas = Quotas {
            per_recipient: config.quota,
            per_neighbour: config.neighbour_quota,
        };
        let (store, committed) = Store::open(&location, quotas).await.map_err(db_err)?;
        let router = Router::start(
            store.clone(),
            committed,
            me,
            clock.clone(),
            config.message_ttl_ms,
        )
        .await
        .map_err(db_err)?;
        let otp = Otp::new(
            store.clone(),
            config.otp_policy,
            clock,
            config.code_sink.clone(),
        );
        let state = Arc::new(ServerState {
            router,
            otp,
            tls,
            connection_slots: Arc::new(Semaphore::new(start::connection_limit(
                config.max_connections,
            ))),
            pending_logins: Arc::default(),
            identity: key,
        });
        publish_local_users(&state, &store).await.map_err(db_err)?;
        Ok(Self {
            state,
            neighbours: config.neighbours.clone(),
            store,
            key_created,
            data_dir: dir.clone(),
        })
    }

    /// The fingerprint of the server's long-term key, which clients pin.
    pub fn fingerprint(&self) -> Fingerprint {
        self.state.router.me().fingerprint
    }

    /// Serves clients on `listeners.client` and neighbour links on
    /// `listeners.link` (mutual TLS), and dials the configured neighbours,
    /// until `shutdown` is cancelled; then stops accepting, lets every
    /// connection finish its current request, commits what is pending and
    /// closes the database.
    pub async fn run(self, listeners: Listeners, shutdown: CancellationToken) {
        let tracker = TaskTracker::new();
        let Listeners { client, link } = listeners;
        if link.is_some() || !self.neighbours.is_empty() {
            let started = crate::link::start(
                self.state.router.clone(),
                self.state.identity.pkcs8_der(),
                link,
                self.neighbours,
                shutdown.clone(),
                &tracker,
            )
            .await;
            if let Err(e) = started {
                tracing::error!(error = %e, "neighbour links could not start");
            }
        }
        accept_loop(&client, &self.state, &tracker, &shutdown).await;
        drop(client);
        tracker.close();
        tracker.wait().await;
        drop(self.state);
        self.store.close().await;
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
async fn publish_local_users(state: &ServerState, store: &Store) -> Result<(), db::DbError> {
    for row in store.users().await? {
        let Ok(phone) = PhoneNumber::from_canonical(&row.phone) else {
            continue;
        };
        if state
            .router
            .local_entry_is_current(&phone, row.registered_at)
        {
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
        state
            .router
            .publish_local(state.local_entry(phone, info))
            .await?;
    }
    Ok(())
}
