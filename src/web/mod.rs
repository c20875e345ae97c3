//! The browser's edge: the built web client (`web/dist`, embedded) at `/`
//! and the client protocol over a WebSocket at `/ws`, on the address of
//! `[web] listen`.
//!
//! Code map: `assets` (the embedded bundle, content types, caching, the
//! Content-Security-Policy), `http` (accept loop, routes, the WebSocket
//! handshake), `origin` (which pages may open `/ws`), `binding` (the
//! `hello` frame and the 32 bytes login proofs bind to instead of a TLS
//! exporter), `socket` (a session over WebSocket messages), `tls` (HTTPS
//! from the operator's PEM files).
//!
//! [`serve`] is `carrier-server`'s start-up path: the server's own, with
//! the web port as one more edge ([`Endpoint::edge`]); tests bind an
//! [`Endpoint`] on port 0 and hand its edge to `Server::with_edge`.
//!
//! Architecture invariant: a WebSocket session runs the TCP port's session
//! code (`server::run_session`); no request kind is handled here.

mod assets;
pub mod binding;
mod http;
mod origin;
mod socket;

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};

use crate::config::{ServerConfig, WebConfig};
use crate::server::{Edge, PendingEdge, Reload, StartError};

/// Why the web endpoint cannot start.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("web.listen: {0}")]
    PlainHttp(String),
    #[error(transparent)]
    Https(#[from] crate::tls::HttpsError),
    #[error(transparent)]
    Server(#[from] StartError),
    #[error("cannot listen for the web client on {addr} (is another server running there?)")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The web port, bound and ready to serve.
pub struct Endpoint {
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    origins: origin::Origins,
}

/// The web port bound but not yet listening (`server::Ports` says why),
/// with the TLS set-up it will serve with.
pub struct Reserved {
    socket: TcpSocket,
    addr: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    origins: origin::Origins,
}

impl Reserved {
    /// Binds `config.listen` (port 0 takes any free port), refusing plain
    /// HTTP off loopback and loading the TLS files if any.
    pub async fn bind(config: &WebConfig) -> Result<Self, WebError> {
        config.check().map_err(WebError::PlainHttp)?;
        let tls = config
            .tls
            .as_ref()
            .map(|files| crate::tls::https_acceptor(&files.cert, &files.key))
            .transpose()?;
        let addr = config.listen;
        let listen_err = |source| WebError::Listen { addr, source };
        let socket = crate::server::reserve_port(addr)
            .await
            .map_err(listen_err)?;
        let port = socket.local_addr().map_err(listen_err)?.port();
        Ok(Self {
            socket,
            addr,
            tls,
            origins: origin::Origins::of(config, port),
        })
    }

    /// Starts listening.
    pub fn listen(self) -> Result<Endpoint, WebError> {
        let addr = self.addr;
        let listener = self
            .socket
            .listen(crate::server::BACKLOG)
            .map_err(|source| WebError::Listen { addr, source })?;
        Ok(Endpoint {
            listener,
            tls: self.tls,
            origins: self.origins,
        })
    }
}

impl Endpoint {
    /// Binds `config.listen` as [`Reserved::bind`] does, and listens.
    pub async fn bind(config: &WebConfig) -> Result<Self, WebError> {
        Reserved::bind(config).await?.listen()
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Where a browser opens the client.
    pub fn url(&self) -> String {
        format!("{}/", self.origins.primary())
    }
}

impl Endpoint {
    /// The edge that serves this endpoint with a server's state.
    pub fn edge(self) -> Edge {
        Box::new(move |state, shutdown, tracker| {
            tracker.spawn(http::serve(self, state, shutdown, tracker.clone()));
        })
    }
}

/// Runs a server as `carrier-server` does (`server::serve`), with the web
/// port too when the configuration has one; a web port that cannot start
/// stops the start. The web port is reserved first, and listens only once
/// the server can serve, as the server's own ports do
/// (`server::serve_with`).
pub async fn serve(
    config: &ServerConfig,
    shutdown: tokio_util::sync::CancellationToken,
    reload: Option<Reload>,
) -> Result<(), WebError> {
    let mut edges: Vec<PendingEdge<WebError>> = Vec::new();
    if let Some(web) = &config.web {
        let reserved = Reserved::bind(web).await.map_err(|e| match e {
            WebError::Listen { .. } => crate::server::unless_locked(config, e),
            other => other,
        })?;
        edges.push(Box::new(move || {
            let endpoint = reserved.listen()?;
            Ok((format!("Web client on {}", endpoint.url()), endpoint.edge()))
        }));
    }
    crate::server::serve_with(config, shutdown, reload, edges).await
}
