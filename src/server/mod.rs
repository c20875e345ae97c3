//! The server's edge: accept loop with a connection limit, one task per
//! connection, graceful shutdown.
//!
//! [`serve`] is the one start-up path, what `carrier-server` runs: bind the
//! client port and the link port, open the data directory, print where it
//! listens, serve until the shutdown token is cancelled. Tests take the same
//! steps one by one ([`Server::open`] with their own clock,
//! [`Listeners::bind`] on port 0, [`Server::run`]) to learn the bound
//! addresses and to stop the server and wait for it.

mod answers;
mod connection;
mod disk;
mod error;
mod handlers;
mod observe;
mod pre_login;
mod reload;
mod session;
mod start;

use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::otp::Otp;
use crate::clock::Clock;
use crate::config::ServerConfig;
use crate::crypto::{self, Identity};
use crate::db;
use crate::db::Store;
use crate::domain::{ClientPrefix, Fingerprint, PhoneNumber};
use crate::protocol::{B64, KeyType, UserInfo};
use crate::routing::directory::{self, Entry};
use crate::routing::{Router, ServerInfo};
pub(crate) use connection::{FrameSource, run_session};
pub use reload::Reload;
pub use session::MAX_PENDING_PER_ADDRESS;
pub(crate) use session::PendingSlot;
pub use start::{
    BACKLOG, Listeners, PendingEdge, Ports, reserve_port, serve, serve_with, shutdown_on_signal,
    unless_locked,
};

/// File name of the server's long-term key inside the data directory.
pub const KEY_FILE: &str = crypto::SERVER_KEY_FILE;

/// What every connection task shares.
pub struct ServerState {
    pub router: Arc<Router>,
    pub otp: Otp,
    tls: Arc<rustls::ServerConfig>,
    connection_slots: Arc<Semaphore>,
    /// Connections not logged in yet (on the TCP port and `/ws`), in the
    /// order they came and per address (an IPv6 /64).
    pending_logins: Arc<crate::listen::Unproven>,
    /// Places for new connections to wait for a slot closed for them.
    slot_waiters: Arc<Semaphore>,
    /// Warnings that a connection not logged in was closed for a new one.
    slots_freed: crate::telemetry::Throttle,
    /// Warnings that new connections are turned away.
    refusing: crate::telemetry::Throttle,
    /// Warnings about an address's oldest connection closed for its newest.
    crowded: crate::telemetry::Throttle,
    /// `register` requests per address (an IPv6 /64).
    registers: crate::rate::Buckets<ClientPrefix, 1>,
    /// The long-term key, which vouches for our users' directory entries.
    identity: Identity,
    /// The neighbour links, once they run (a reload adds and removes them).
    links: std::sync::OnceLock<crate::link::Links>,
}

impl ServerState {
    /// Counts a `register` from `peer`, or refuses it when its address has
    /// made too many lately. An IPv6 address counts by its /64, which one
    /// host can fill with addresses of its own.
    fn count_register(&self, peer: std::net::IpAddr) -> Result<(), error::ApiError> {
        self.registers
            .take(&ClientPrefix::of(peer), [1])
            .map_err(|retry_after_ms| error::ApiError {
                retry_after_ms: Some(retry_after_ms),
                ..error::ApiError::new(
                    crate::protocol::ErrorCode::RateLimited,
                    format!(
                        "too many registrations from your address; try again in {} s",
                        retry_after_ms.div_ceil(1000)
                    ),
                )
            })
    }

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

/// Another edge served beside the TCP port, on the same state (the web
/// port): called once when the server runs, it spawns its tasks on the
/// tracker, so a shutdown waits for them as for every connection. Edges sit
/// above `server` and reach sessions through `run_session`.
pub type Edge = Box<dyn FnOnce(Arc<ServerState>, CancellationToken, TaskTracker) + Send>;

/// A server ready to serve: storage open, key loaded, background tasks up.
pub struct Server {
    state: Arc<ServerState>,
    neighbours: crate::link::Configured,
    store: Store,
    key_created: bool,
    data_dir: PathBuf,
    clock: Clock,
    /// Further edges served with this state (the web port).
    edges: Vec<Edge>,
    /// Released when the server has stopped.
    _lock: crate::data_lock::DataDirLock,
    /// The SQLite database's own lock, wherever it lies; released with it.
    _db_lock: Option<crate::data_lock::DatabaseLock>,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create the data directory {path}: {error}")]
    DataDir {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("the server key {path}: {error}")]
    Key {
        path: PathBuf,
        error: crypto::CryptoError,
    },
    #[error("the server key: {0}")]
    KeyOwner(crate::private_files::ForeignOwner),
    #[error("cannot read the server key {path}: {error}")]
    KeyFile {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("the one-time-code key {path}: {error}")]
    CodeKey {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(transparent)]
    Locked(#[from] crate::data_lock::LockError),
    #[error("TLS set-up failed: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// Said once, in one sentence: the error is not also given as this
    /// one's cause, which would print it a second time.
    #[error("{}", located(location, error))]
    Db {
        location: db::Location,
        error: db::DbError,
    },
    #[error(
        "the database belongs to a cluster whose server key has the fingerprint {cluster}, \
         but this server's key ({ours}) is another: copy the cluster's {KEY_FILE} into this \
         member's data directory (or point it at its own database)"
    )]
    ForeignKey { cluster: String, ours: String },
    #[error(
        "this server's one-time-code key differs from the cluster's: copy the cluster's {} \
         into this member's data directory",
        crate::auth::code_key::CODE_KEY_FILE
    )]
    ForeignCodeKey,
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

/// A database error with where the database is, unless it says so itself.
fn located(location: &db::Location, error: &db::DbError) -> String {
    let (at, said) = (location.to_string(), error.to_string());
    if said.contains(&at) {
        said
    } else {
        format!("the database at {at}: {said}")
    }
}

impl Server {
    /// Opens the data directory (database, long-term key) and starts the
    /// background tasks. Nothing listens yet.
    pub async fn open(config: &ServerConfig, clock: Clock) -> Result<Self, StartError> {
        crate::tls::install_crypto_provider();
        let dir = &config.data_dir;
        crate::private_files::create_dir(dir).map_err(|error| StartError::DataDir {
            path: dir.clone(),
            error,
        })?;
        let lock = crate::data_lock::DataDirLock::acquire(dir)?;
        // An SQLite database is this server's alone, even outside the data
        // directory: no other server, nor `migrate`, may open it meanwhile.
        // Taken before the key is made, so a refused start leaves none.
        let db_lock = match config.database_location() {
            db::Location::Sqlite(path) => Some(crate::data_lock::DatabaseLock::acquire(&path)?),
            db::Location::Postgres(_) => None,
        };
        let key_path = dir.join(KEY_FILE);
        crate::private_files::check_owner(&key_path)
            .map_err(|error| StartError::KeyFile {
                path: key_path.clone(),
                error,
            })?
            .map_err(StartError::KeyOwner)?;
        let (key, key_created) =
            crypto::load_or_create_server_key(&key_path).map_err(|error| StartError::Key {
                path: key_path.clone(),
                error,
            })?;
        if key_created {
            // Said now, not only in the banner: a start that fails after
            // this leaves the key behind, and its fingerprint is what
            // clients and neighbours will pin.
            tracing::info!(
                data_dir = %dir.display(),
                fingerprint = %key.fingerprint(),
                "created a new server key; clients and neighbours pin its fingerprint"
            );
        }
        let tls = crate::tls::server_config(&key.pkcs8_der())?;
        let location = config.database_location();
        let db_err = |error| StartError::Db {
            location: location.clone(),
            error,
        };
        let me = ServerInfo {
            fingerprint: key.fingerprint(),
            public_key: key.public_key().to_spki_der(),
            // A `[server] name` is checked at load; the default is cut to
            // the same bound, which neighbours enforce.
            name: config.name.clone().unwrap_or_else(|| {
                let default = format!("{}:{}", config.host, config.port);
                crate::protocol::link::cut_server_name(&default).to_owned()
            }),
        };
        let (store, committed) = Store::open(&location, config.quotas())
            .await
            .map_err(db_err)?;
        let code_key_path = dir.join(crate::auth::code_key::CODE_KEY_FILE);
        let code_key =
            crate::auth::code_key::CodeKey::load_or_create(&code_key_path).map_err(|error| {
                StartError::CodeKey {
                    path: code_key_path,
                    error,
                }
            })?;
        join_cluster(&store, &me, &code_key, &clock, &location).await?;
        let router = Router::start(
            store.clone(),
            committed,
            me,
            clock.clone(),
            config.message_ttl_ms,
            config.limits,
        )
        .await
        .map_err(db_err)?;
        let registers = crate::rate::Buckets::new([config.register_per_address], clock.clone());
        let clock_for_admin = clock.clone();
        let otp = Otp::new(
            store.clone(),
            config.otp_policy,
            clock,
            config.code_sink.clone(),
            code_key,
        );
        let slots = start::connection_limit(config.max_connections, config.max_connections_set);
        let state = Arc::new(ServerState {
            router,
            otp,
            tls,
            connection_slots: Arc::new(Semaphore::new(slots)),
            pending_logins: crate::listen::Unproven::new(MAX_PENDING_PER_ADDRESS, slots),
            slot_waiters: Arc::new(Semaphore::new(crate::listen::MAX_WAITING)),
            slots_freed: crate::telemetry::Throttle::new(crate::listen::WARN_EVERY),
            refusing: crate::telemetry::Throttle::new(crate::listen::WARN_EVERY),
            crowded: crate::telemetry::Throttle::new(crate::listen::WARN_EVERY),
            registers,
            identity: key,
            links: std::sync::OnceLock::new(),
        });
        publish_local_users(&state, &store).await.map_err(db_err)?;
        state
            .router
            .publish_withdrawals(&|bytes: &[u8]| state.identity.sign(bytes))
            .await
            .map_err(db_err)?;
        Ok(Self {
            state,
            neighbours: crate::link::Configured::new(config.neighbours.clone()),
            store,
            key_created,
            data_dir: dir.clone(),
            clock: clock_for_admin,
            edges: Vec::new(),
            _lock: lock,
            _db_lock: db_lock,
        })
    }

    /// The fingerprint of the server's long-term key, which clients pin.
    pub fn fingerprint(&self) -> Fingerprint {
        self.state.router.me().fingerprint
    }

    /// Starts `edge` too when the server runs.
    pub fn with_edge(mut self, edge: Edge) -> Self {
        self.edges.push(edge);
        self
    }

    /// Serves clients on `listeners.client` and neighbour links on
    /// `listeners.link` (mutual TLS), and dials the configured neighbours,
    /// until `shutdown` is cancelled; then stops accepting, lets every
    /// connection finish its current request, commits what is pending and
    /// closes the database.
    pub async fn run(mut self, listeners: Listeners, shutdown: CancellationToken) {
        let tracker = TaskTracker::new();
        let Listeners {
            client,
            link,
            metrics,
        } = listeners;
        let admin_cx = crate::admin::Context {
            store: self.store.clone(),
            clock: self.clock.clone(),
            data_dir: self.data_dir.clone(),
            neighbours: self.neighbours.clone(),
            live: Some(crate::admin::Live {
                router: self.state.router.clone(),
                started: std::time::Instant::now(),
                sign: {
                    let state = self.state.clone();
                    Arc::new(move |bytes: &[u8]| state.identity.sign(bytes))
                },
            }),
        };
        let admin_cx = Arc::new(admin_cx);
        for edge in std::mem::take(&mut self.edges) {
            edge(self.state.clone(), shutdown.clone(), tracker.clone());
        }
        tracker.spawn(disk::watch(self.data_dir.clone(), shutdown.clone()));
        if let Some(metrics) = metrics {
            tracker.spawn(observe::serve(
                metrics,
                admin_cx.clone(),
                shutdown.clone(),
                tracker.clone(),
            ));
        }
        match crate::admin::socket::bind(&self.data_dir) {
            Ok(admin) => {
                tracker.spawn(crate::admin::socket::serve(
                    admin,
                    admin_cx,
                    shutdown.clone(),
                    tracker.clone(),
                ));
            }
            Err(e) => tracing::error!(
                error = %e,
                path = %crate::admin::socket::path(&self.data_dir).display(),
                "the admin socket could not be opened; admin commands cannot reach this server"
            ),
        }
        // Started even with no listener and no neighbour, so that a reload
        // can add neighbours.
        let started = crate::link::start(
            self.state.router.clone(),
            self.state.identity.pkcs8_der(),
            link,
            self.neighbours,
            shutdown.clone(),
            &tracker,
        )
        .await;
        match started {
            Ok(links) => {
                let _ = self.state.links.set(links);
            }
            Err(e) => tracing::error!(error = %e, "neighbour links could not start"),
        }
        accept_loop(client, &self.state, &tracker, &shutdown).await;
        tracker.close();
        tracker.wait().await;
        drop(self.state);
        self.store.close().await;
        tracing::info!("server stopped");
    }
}

/// Serves each accepted connection in a task of its own while a
/// connection slot is free, or can be freed by closing the oldest
/// connection not logged in; past the limit, answers `server_busy` (or
/// closes at once, when even those answers are all under way) rather than
/// leaving connections in the backlog.
async fn accept_loop(
    listener: TcpListener,
    state: &Arc<ServerState>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) {
    let mut listener = crate::listen::Listener::new(listener, "client");
    let busy_answers = Arc::new(Semaphore::new(connection::MAX_BUSY_ANSWERS));
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        // Never waits here: a connection that must wait for a slot closed
        // for it waits in its own task.
        let Some(claim) = state.claim_slot() else {
            turn_away(stream, state, tracker, &busy_answers);
            continue;
        };
        let (state, shutdown) = (state.clone(), shutdown.clone());
        let (tracker_, busy_answers) = (tracker.clone(), busy_answers.clone());
        tracker.spawn(async move {
            let Some(permit) = state.connection_slot(claim, peer.ip()).await else {
                return turn_away(stream, &state, &tracker_, &busy_answers);
            };
            connection::serve(stream, peer, state, shutdown).await;
            drop(permit);
        });
    }
}

/// Tells a connection no slot is left (`server_busy`), or closes it at
/// once when even those answers are all under way.
fn turn_away(
    stream: tokio::net::TcpStream,
    state: &Arc<ServerState>,
    tracker: &TaskTracker,
    busy_answers: &Arc<Semaphore>,
) {
    if let Ok(answer) = busy_answers.clone().try_acquire_owned() {
        let tls = state.tls.clone();
        tracker.spawn(async move {
            connection::turn_away(stream, tls).await;
            drop(answer);
        });
    }
}

/// Records this server's identity as the cluster's if the database holds
/// none yet, and refuses to start as a member whose keys differ from it:
/// clients and neighbours must see one server whichever member answers.
async fn join_cluster(
    store: &Store,
    me: &ServerInfo,
    code_key: &crate::auth::code_key::CodeKey,
    clock: &Clock,
    location: &db::Location,
) -> Result<(), StartError> {
    let fingerprint = me.fingerprint.to_hex();
    let claimed = store
        .claim_identity(&fingerprint, &code_key.check_value(), clock.now_ms())
        .await
        .map_err(|error| StartError::Db {
            location: location.clone(),
            error,
        })?;
    match claimed {
        None => Ok(()),
        Some(db::cluster::Mismatch::ServerKey { cluster, ours }) => {
            Err(StartError::ForeignKey { cluster, ours })
        }
        Some(db::cluster::Mismatch::CodeKey) => Err(StartError::ForeignCodeKey),
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
            devices: None,
        };
        state
            .router
            .publish_local(state.local_entry(phone, info))
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error that names the database is said as it is; one that does
    /// not gets the database's location in front.
    #[test]
    fn a_database_error_names_its_location_once() {
        let location = db::Location::parse("postgres://carrier:secret@db:5432/carrier").unwrap();
        let unreachable = StartError::Db {
            location: location.clone(),
            error: db::DbError::Connect {
                location: location.to_string(),
                reason: "connection refused".into(),
            },
        };
        assert_eq!(
            unreachable.to_string(),
            "cannot reach the database at postgres://carrier:***@db:5432/carrier: connection refused"
        );
        assert!(std::error::Error::source(&unreachable).is_none());
        let other = StartError::Db {
            location,
            error: db::DbError::BadUrl("x".into()),
        };
        assert!(
            other
                .to_string()
                .starts_with("the database at postgres://carrier:***@db:5432/carrier: \"x\""),
            "{other}"
        );
    }
}
