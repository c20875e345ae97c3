//! How a server comes up: the sockets it binds, what it prints once it
//! listens (the lines people and scripts read), the signals that stop it,
//! and the connection limit the process's open-file limit allows.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket, ToSocketAddrs};
use tokio_util::sync::CancellationToken;

use super::{Server, StartError};
use crate::clock::Clock;
use crate::config::ServerConfig;

/// The sockets a server serves: one for clients and, when the
/// configuration names a link port, one for neighbour servers.
pub struct Listeners {
    pub client: TcpListener,
    pub link: Option<TcpListener>,
    /// The HTTP endpoint for metrics and health checks, when configured.
    pub metrics: Option<TcpListener>,
}

impl Listeners {
    /// Binds `host:port` for clients and `host:server_port` for links, and
    /// listens at once. Port 0 takes any free port;
    /// [`Listeners::client_addr`] and [`Listeners::link_addr`] tell which.
    pub async fn bind(config: &ServerConfig) -> Result<Self, StartError> {
        Ports::reserve(config).await?.listen()
    }

    /// Where clients reach the server.
    pub fn client_addr(&self) -> std::io::Result<SocketAddr> {
        self.client.local_addr()
    }

    /// Where neighbour servers reach it, if it listens for them.
    pub fn link_addr(&self) -> std::io::Result<Option<SocketAddr>> {
        self.link.as_ref().map(TcpListener::local_addr).transpose()
    }
}

/// The ports of [`Listeners`], bound but not listening: no other process
/// can take them, and a connection to them is refused until
/// [`Ports::listen`], rather than accepted by the kernel and then reset
/// because nothing will ever serve it.
pub struct Ports {
    client: Port,
    link: Option<Port>,
    metrics: Option<Port>,
}

impl Ports {
    /// Binds each configured address ([`reserve_port`]).
    pub async fn reserve(config: &ServerConfig) -> Result<Self, StartError> {
        let listen = |addr, source| StartError::Listen { addr, source };
        let client = format!("{}:{}", config.host, config.port);
        let client = Port::reserve(client, listen).await?;
        let link = match config.server_port {
            Some(port) => {
                let addr = format!("{}:{port}", config.host);
                let refused = |addr, source| StartError::LinkListen { addr, source };
                Some(Port::reserve(addr, refused).await?)
            }
            None => None,
        };
        let metrics = match config.metrics_listen {
            Some(addr) => Some(Port::reserve(addr.to_string(), listen).await?),
            None => None,
        };
        Ok(Self {
            client,
            link,
            metrics,
        })
    }

    /// Starts listening on every port.
    pub fn listen(self) -> Result<Listeners, StartError> {
        Ok(Listeners {
            client: self.client.listen()?,
            link: self.link.map(Port::listen).transpose()?,
            metrics: self.metrics.map(Port::listen).transpose()?,
        })
    }
}

/// One reserved port, with the error that names it if it cannot be had.
struct Port {
    socket: TcpSocket,
    addr: String,
    refused: fn(String, std::io::Error) -> StartError,
}

impl Port {
    async fn reserve(
        addr: String,
        refused: fn(String, std::io::Error) -> StartError,
    ) -> Result<Self, StartError> {
        match reserve_port(addr.as_str()).await {
            Ok(socket) => Ok(Self {
                socket,
                addr,
                refused,
            }),
            Err(source) => Err(refused(addr, source)),
        }
    }

    fn listen(self) -> Result<TcpListener, StartError> {
        let Self {
            socket,
            addr,
            refused,
        } = self;
        socket
            .listen(BACKLOG)
            .map_err(|source| refused(addr, source))
    }
}

/// The listen backlog, tokio's own for `TcpListener::bind`.
pub const BACKLOG: u32 = 1024;

/// Binds the first of `addr`'s addresses that can be bound, as
/// `TcpListener::bind` does, but does not listen (see [`Ports`]). Like
/// it, sets `SO_REUSEADDR`, so a restart is not refused for the last
/// run's connections in TIME_WAIT. On Linux that also lets a second
/// socket bind the port until one of them listens: `listen` can then
/// fail with "address in use", and is reported as a refused bind is.
pub async fn reserve_port(addr: impl ToSocketAddrs) -> std::io::Result<TcpSocket> {
    let mut last = None;
    for addr in tokio::net::lookup_host(addr).await? {
        match bound(addr) {
            Ok(socket) => return Ok(socket),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the address resolves to nothing",
        )
    }))
}

/// A socket bound to `addr`, not listening.
fn bound(addr: SocketAddr) -> std::io::Result<TcpSocket> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    Ok(socket)
}

/// An edge whose port is reserved ([`reserve_port`]). Called once the
/// server can serve, it listens, and returns the line announcing where
/// and the edge.
pub type PendingEdge<E> = Box<dyn FnOnce() -> Result<(String, super::Edge), E> + Send>;

/// Runs a server as `carrier-server` does: reserves the client and link
/// ports, opens `config.data_dir`, listens, prints the key's fingerprint
/// and the bound addresses on standard output, and serves until `shutdown` is cancelled
/// (see [`shutdown_on_signal`]), then shuts down gracefully. With `reload`,
/// SIGHUP reloads the configuration.
pub async fn serve(
    config: &ServerConfig,
    shutdown: CancellationToken,
    reload: Option<super::Reload>,
) -> Result<(), StartError> {
    serve_with::<StartError>(config, shutdown, reload, Vec::new()).await
}

/// [`serve`] with further edges, their ports reserved already (the web
/// port: `web::serve`).
///
/// Every port is reserved (bound, not listening: [`Ports`]) before the
/// data directory is opened, so a start that cannot have a port leaves no
/// directory, key or database behind; and none listens before the server
/// has opened its database and can serve, so neither a client nor a
/// balancer's TCP check finds a port open on a server that cannot answer.
/// The lock on the directory is still taken before the key and the
/// database are touched, so two servers never share them. A second
/// server on a running one's directory, though, often finds its ports
/// taken first: a refused port is then reported as the lock's refusal
/// ([`unless_locked`]), the cause the operator has to act on. Locking
/// first instead, when the directory exists, would report the same, but
/// leave a lock file behind a failed start and make the lock travel from
/// the caller that reserves the web port down to [`Server::open`].
pub async fn serve_with<E: From<StartError>>(
    config: &ServerConfig,
    shutdown: CancellationToken,
    reload: Option<super::Reload>,
    edges: Vec<PendingEdge<E>>,
) -> Result<(), E> {
    let ports = Ports::reserve(config)
        .await
        .map_err(|refused| unless_locked(config, refused))?;
    let server = Server::open(config, Clock::System).await?;
    let (listeners, edges) = match listen(ports, edges) {
        Ok(listening) => listening,
        Err(refused) => {
            // Let go of the directory first, or the lock would be
            // reported as another server's.
            drop(server);
            return Err(unless_locked(config, refused));
        }
    };
    let mut server = server;
    let mut lines = Vec::new();
    for (line, edge) in edges {
        server = server.with_edge(edge);
        lines.push(line);
    }
    if let Some(reload) = reload {
        use tokio::signal::unix::{SignalKind, signal};
        let hangups = signal(SignalKind::hangup()).expect("can install a SIGHUP handler");
        tokio::spawn(super::reload::on_hangup(
            hangups,
            reload,
            config.clone(),
            server.state.clone(),
            shutdown.clone(),
        ));
    }
    announce(&server, &listeners, config)?;
    for line in lines {
        say(&line);
    }
    server.run(listeners, shutdown).await;
    Ok(())
}

/// Listens on the server's ports and its further edges'.
fn listen<E: From<StartError>>(
    ports: Ports,
    edges: Vec<PendingEdge<E>>,
) -> Result<(Listeners, Vec<(String, super::Edge)>), E> {
    let listeners = ports.listen()?;
    let edges = edges
        .into_iter()
        .map(|listen| listen())
        .collect::<Result<_, E>>()?;
    Ok((listeners, edges))
}

/// `refused`, a socket that could not be bound, unless another process
/// holds `config.data_dir` (or its SQLite database): then the lock's
/// refusal, which explains it.
pub fn unless_locked<E: From<StartError>>(config: &ServerConfig, refused: E) -> E {
    use crate::data_lock::{DataDirLock, DatabaseLock};
    let free =
        DataDirLock::check_free(&config.data_dir).and_then(|()| match config.database_location() {
            crate::db::Location::Sqlite(path) => DatabaseLock::check_free(&path),
            crate::db::Location::Postgres(_) => Ok(()),
        });
    match free {
        Ok(()) => refused,
        Err(locked) => StartError::from(locked).into(),
    }
}

/// The lines an operator (and a script starting the server) reads.
fn announce(
    server: &Server,
    listeners: &Listeners,
    config: &ServerConfig,
) -> Result<(), StartError> {
    let unknown = |source| StartError::Listen {
        addr: format!("{}:{}", config.host, config.port),
        source,
    };
    let data = server.data_dir.display();
    if server.key_created {
        say(&format!("Created a new server key in {data}"));
    }
    say(&format!(
        "Carrier server fingerprint: {}",
        server.fingerprint()
    ));
    let client = listeners.client_addr().map_err(unknown)?;
    say(&format!("Listening on {client} (data in {data})"));
    if let Some(link) = listeners.link_addr().map_err(unknown)? {
        say(&format!("Listening for neighbour servers on {link}"));
    }
    if let Some(metrics) = &listeners.metrics {
        let addr = metrics.local_addr().map_err(unknown)?;
        say(&format!("Metrics on http://{addr}/metrics"));
    }
    Ok(())
}

/// Writes a line of the banner to standard output. Nobody reading it (a
/// closed pipe) is no reason to stop serving, so a failure is ignored,
/// where `println!` would panic.
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{line}");
}

/// A token cancelled on SIGINT or SIGTERM, for [`serve`]'s `shutdown`.
/// Call it inside the runtime that serves.
pub fn shutdown_on_signal() -> CancellationToken {
    use tokio::signal::unix::{SignalKind, signal};
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let mut term = signal(SignalKind::terminate()).expect("can install a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down: finishing in-flight requests");
        cancel.cancel();
    });
    token
}

/// File descriptors kept for the database, links and the listener itself.
const RESERVED_FDS: u64 = 128;

/// The configured connection limit, lowered to what the process's
/// open-file limit allows: past it, accepting would fail for everyone.
/// The warning is for an operator who chose the limit; the default is
/// lowered quietly (at `debug`).
pub(super) fn connection_limit(configured: usize, chosen: bool) -> usize {
    let Ok((fds, _)) = rlimit::getrlimit(rlimit::Resource::NOFILE) else {
        return configured;
    };
    let room = usize::try_from(fds.saturating_sub(RESERVED_FDS).max(1)).unwrap_or(usize::MAX);
    if configured > room && !chosen {
        tracing::debug!(
            default = configured,
            open_file_limit = fds,
            using = room,
            "connections limited by the open-file limit (ulimit -n)"
        );
        return room;
    }
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
