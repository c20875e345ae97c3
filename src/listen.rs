//! Accepting TCP connections without leaving any in the listen backlog.
//! A process out of file descriptors cannot accept, and connections then
//! wait unseen until their clients give up. [`Listener`] keeps one
//! descriptor in reserve: when accepting fails for want of descriptors, it
//! gives the reserve up for a moment to accept a waiting connection and
//! close it at once, so that client learns at once, and logs a warning at
//! most every [`WARN_EVERY`]. Connections past a server's own limits are
//! turned away by its accept loops in the same spirit.

use std::fs::File;
use std::net::SocketAddr;
use std::time::Duration;

use futures::FutureExt;
use tokio::net::{TcpListener, TcpStream};

use crate::telemetry::Throttle;

/// Shortest interval between two warnings about connections turned away.
pub const WARN_EVERY: Duration = Duration::from_secs(10);
/// Pause after an accept error that shedding cannot clear, so the loop does
/// not spin.
const BACK_OFF: Duration = Duration::from_millis(50);

/// A listening socket that never leaves connections waiting unseen.
pub struct Listener {
    inner: TcpListener,
    reserve: Option<File>,
    /// What the warnings call this listener ("client", "link").
    name: &'static str,
    warn: Throttle,
}

impl Listener {
    pub fn new(inner: TcpListener, name: &'static str) -> Self {
        Self {
            inner,
            reserve: open_reserve(),
            name,
            warn: Throttle::new(WARN_EVERY),
        }
    }

    /// The next connection. Those that cannot be served for want of file
    /// descriptors are accepted and closed here.
    pub async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            match self.inner.accept().await {
                Ok(accepted) => {
                    if self.reserve.is_none() {
                        self.reserve = open_reserve();
                    }
                    return accepted;
                }
                Err(e) if out_of_descriptors(&e) => self.shed(&e).await,
                Err(e) => {
                    if let Some(held_back) = self.warn.ready() {
                        tracing::warn!(listener = self.name, error = %e, held_back, "accept failed");
                    }
                    tokio::time::sleep(BACK_OFF).await;
                }
            }
        }
    }

    /// Accepts one waiting connection with the reserve descriptor and
    /// closes it.
    async fn shed(&mut self, e: &std::io::Error) {
        let freed = self.reserve.take().is_some();
        let closed = freed && matches!(self.inner.accept().now_or_never(), Some(Ok(_)));
        self.reserve = open_reserve();
        if let Some(held_back) = self.warn.ready() {
            tracing::warn!(
                listener = self.name,
                error = %e,
                held_back,
                "out of file descriptors: closing new connections at once (raise ulimit -n, or lower server.max_connections)"
            );
        }
        if !closed {
            tokio::time::sleep(BACK_OFF).await;
        }
    }
}

fn open_reserve() -> Option<File> {
    File::open("/dev/null").ok()
}

fn out_of_descriptors(e: &std::io::Error) -> bool {
    use rustix::io::Errno;
    matches!(
        Errno::from_io_error(e),
        Some(Errno::MFILE | Errno::NFILE | Errno::NOBUFS | Errno::NOMEM)
    )
}
