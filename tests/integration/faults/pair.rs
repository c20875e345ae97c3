//! Two neighbour servers, A and B, in this process, whose link runs only
//! through fault proxies ([`Link`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use carrier::auth::code_sink::CodeSink;
use carrier::clock::Clock;
use carrier::config::{NeighbourConfig, ServerConfig};
use carrier::domain::Fingerprint;
use carrier::server::{Listeners, Server};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::proxy::Link;
use crate::common::Reachable;

/// One of the two servers.
pub struct Node {
    addr: SocketAddr,
    fingerprint: Fingerprint,
    otp_file: PathBuf,
    /// Holds the data directory and the code file; deleted on drop.
    _dir: TempDir,
    shutdown: CancellationToken,
}

impl Reachable for Node {
    fn addr(&self) -> String {
        self.addr.to_string()
    }
    fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }
    fn otp_file(&self) -> &Path {
        &self.otp_file
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A server's directory, key and sockets, before it knows its neighbour.
struct Unstarted {
    dir: TempDir,
    fingerprint: Fingerprint,
    client: TcpListener,
    link: TcpListener,
}

impl Unstarted {
    async fn new() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let key = dir.path().join("data").join(carrier::server::KEY_FILE);
        let (key, _) = carrier::crypto::load_or_create_server_key(&key).expect("a server key");
        let bind = || TcpListener::bind("127.0.0.1:0");
        Self {
            dir,
            fingerprint: key.fingerprint(),
            client: bind().await.expect("a client port"),
            link: bind().await.expect("a link port"),
        }
    }

    fn link_addr(&self) -> SocketAddr {
        self.link.local_addr().expect("bound")
    }

    /// Runs the server, linked to the neighbour at `address` (a proxy).
    async fn start(self, name: &str, address: SocketAddr, neighbour: Fingerprint) -> Node {
        let addr = self.client.local_addr().expect("bound");
        let otp_file = self.dir.path().join("otp.txt");
        let config = ServerConfig {
            host: addr.ip().to_string(),
            port: addr.port(),
            server_port: Some(self.link_addr().port()),
            name: Some(name.into()),
            data_dir: self.dir.path().join("data"),
            code_sink: CodeSink::File(otp_file.clone()),
            neighbours: vec![NeighbourConfig {
                address: address.to_string(),
                fingerprint: Some(neighbour),
            }],
            ..ServerConfig::default()
        };
        let server = Server::open(&config, Clock::System)
            .await
            .expect("the server opens");
        let shutdown = CancellationToken::new();
        let listeners = Listeners {
            client: self.client,
            link: Some(self.link),
            metrics: None,
        };
        tokio::spawn(server.run(listeners, shutdown.clone()));
        Node {
            addr,
            fingerprint: self.fingerprint,
            otp_file,
            _dir: self.dir,
            shutdown,
        }
    }
}

/// Two linked servers and the proxies between them.
pub struct Pair {
    pub a: Node,
    pub b: Node,
    pub link: Link,
}

impl Pair {
    pub async fn start() -> Self {
        let (a, b) = (Unstarted::new().await, Unstarted::new().await);
        let link = Link::start(a.link_addr(), b.link_addr())
            .await
            .expect("the proxies listen");
        let (to_a, to_b) = link.addrs();
        let (fa, fb) = (a.fingerprint, b.fingerprint);
        Self {
            a: a.start("server-a", to_b, fb).await,
            b: b.start("server-b", to_a, fa).await,
            link,
        }
    }
}
