//! Accepting TCP connections without leaving any in the listen backlog.
//! A process out of file descriptors cannot accept, and connections then
//! wait unseen until their clients give up. [`Listener`] keeps one
//! descriptor in reserve: when accepting fails for want of descriptors, it
//! gives the reserve up for a moment to accept a waiting connection and
//! close it at once, so that client learns at once, and logs a warning at
//! most every [`WARN_EVERY`]. Connections past a server's own limits are
//! turned away by its accept loops in the same spirit, and
//! [`PerAddress`] keeps one address from taking every slot a listener has.

use std::collections::HashMap;
use std::fs::File;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use tokio::net::{TcpListener, TcpStream};

use crate::domain::ClientPrefix;
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

/// Counts a listener's connections per client address (an IPv4 address,
/// an IPv6 /64: [`ClientPrefix`]) while they have not proved who they are:
/// on the client port until they log in, on the link port until their TLS
/// handshake ends. One address, or one host choosing addresses in its /64,
/// then cannot hold every slot of the listener without ever proving who it
/// is, and peers at other addresses still get in.
pub struct PerAddress {
    max: usize,
    by_prefix: Mutex<HashMap<ClientPrefix, usize>>,
}

impl PerAddress {
    /// A count that admits at most `max` connections per address at once.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            by_prefix: Mutex::default(),
        })
    }

    /// Counts a new connection from `peer`, or refuses it when its address
    /// already has the most allowed.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<AddressSlot> {
        let prefix = ClientPrefix::of(peer);
        let mut map = self.by_prefix.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(prefix).or_default();
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            owner: self.clone(),
            prefix,
        })
    }
}

/// One connection counted against its address; given back when dropped.
pub struct AddressSlot {
    owner: Arc<PerAddress>,
    prefix: ClientPrefix,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut map = self
            .owner
            .by_prefix
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.prefix) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.prefix);
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A host that picks a new address in its /64 for each connection
    /// still counts as one address; other addresses are not held back.
    #[test]
    fn counts_by_address_and_gives_slots_back() {
        let counts = PerAddress::new(2);
        let first = counts.admit(ip("2001:db8:1:2::1")).unwrap();
        let _second = counts.admit(ip("2001:db8:1:2::2")).unwrap();
        assert!(counts.admit(ip("2001:db8:1:2:ffff::3")).is_none());
        assert!(counts.admit(ip("2001:db8:1:3::1")).is_some());
        assert!(counts.admit(ip("192.0.2.7")).is_some());
        drop(first);
        assert!(counts.admit(ip("2001:db8:1:2::4")).is_some());
    }
}
