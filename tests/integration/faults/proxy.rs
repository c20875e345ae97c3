//! A TCP proxy that puts faults on a link between two servers: each
//! connection it accepts is forwarded to its target, and on command it
//! delays every chunk, stalls (forwards nothing, holds the connections),
//! cuts a connection in the middle of a chunk (so in the middle of a TLS
//! record and of the link frame inside it), or partitions (closes every
//! connection and turns new ones away).
//!
//! It counts what it forwards, so that whoever drives it can wait for
//! traffic instead of sleeping. A [`Link`] is the pair of proxies that
//! carries everything between two neighbours. The crash loop
//! (`examples/crashloop`) uses this file too, to time its kills.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{RwLock, RwLockReadGuard, watch};

/// Bytes read from one side before they are written to the other.
const CHUNK: usize = 16 * 1024;

/// Which way bytes go through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Towards {
    /// From the side that connected to the proxy's target.
    Target,
    /// From the target back to the side that connected.
    Client,
}

/// What the proxy does to what it forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forwards everything at once.
    None,
    /// Holds every chunk this long before forwarding it, in order.
    Delay(Duration),
    /// Forwards nothing and keeps every connection open, as a network that
    /// silently drops packets would; new connections wait too.
    Stall,
    /// Forwards the first half of the next chunk of at least `min` bytes
    /// going `towards`, then closes that connection both ways; then the
    /// proxy forwards normally again.
    Cut { towards: Towards, min: usize },
    /// Closes every connection and closes each new one at once.
    Partition,
}

/// What the proxy has done since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Bytes forwarded to the target.
    pub to_target: u64,
    /// Bytes forwarded back to the side that connected.
    pub to_client: u64,
    /// Connections forwarded to the target.
    pub connections: u64,
    /// Connections cut in the middle of a chunk.
    pub cuts: u64,
    /// Connections closed at once because of a partition.
    pub turned_away: u64,
}

impl Traffic {
    pub fn bytes(&self, towards: Towards) -> u64 {
        match towards {
            Towards::Target => self.to_target,
            Towards::Client => self.to_client,
        }
    }
}

struct Shared {
    target: SocketAddr,
    fault: watch::Sender<Fault>,
    traffic: watch::Sender<Traffic>,
    /// Held (shared) by each chunk from its fault check to its count, and
    /// taken (exclusive) by [`FaultProxy::set`], so that once `set`
    /// returns no chunk passes under the fault it replaced.
    gate: RwLock<()>,
}

/// A running proxy; dropping it closes everything it holds.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on the target's IP address, on a port of its choosing.
    pub async fn start(target: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind((target.ip(), 0)).await?;
        let shared = Arc::new(Shared {
            target,
            fault: watch::Sender::new(Fault::None),
            traffic: watch::Sender::new(Traffic::default()),
            gate: RwLock::new(()),
        });
        let addr = listener.local_addr()?;
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(Self {
            addr,
            shared,
            accept,
        })
    }

    /// Where to connect instead of the target.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Applies `fault` from now on (a partition also closes what is open).
    pub async fn set(&self, fault: Fault) {
        self.shared.fault.send_replace(fault);
        drop(self.shared.gate.write().await);
    }

    /// What has been forwarded so far, updated as it happens.
    pub fn traffic(&self) -> watch::Receiver<Traffic> {
        self.shared.traffic.subscribe()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.shared.fault.send_replace(Fault::Partition);
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        if *shared.fault.borrow() == Fault::Partition {
            shared.traffic.send_modify(|t| t.turned_away += 1);
            drop(client);
            continue;
        }
        tokio::spawn(forward(client, shared.clone()));
    }
}

/// Forwards one connection both ways until either side closes it or a
/// fault ends it; then closes both.
async fn forward(client: TcpStream, shared: Arc<Shared>) {
    let Ok(target) = TcpStream::connect(shared.target).await else {
        return;
    };
    for s in [&client, &target] {
        let _ = s.set_nodelay(true);
    }
    shared.traffic.send_modify(|t| t.connections += 1);
    let (client_in, client_out) = client.into_split();
    let (target_in, target_out) = target.into_split();
    tokio::select! {
        _ = pump(client_in, target_out, Towards::Target, &shared) => {}
        _ = pump(target_in, client_out, Towards::Client, &shared) => {}
    }
}

/// Copies one direction, applying the faults as they are set. Returns when
/// the connection is to be closed.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, towards: Towards, shared: &Shared) {
    let mut faults = shared.fault.subscribe();
    let mut buf = vec![0; CHUNK];
    loop {
        if passable(&mut faults).await.is_none() {
            return;
        }
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            // A stall or a partition takes effect on idle connections too.
            _ = faults.changed() => continue,
        };
        // The fault may have changed while the bytes were on their way.
        let Some((gate, fault)) = cleared(shared, &mut faults).await else {
            return;
        };
        let mut len = n;
        match fault {
            Fault::Delay(d) => {
                tokio::time::sleep(d).await;
                if *faults.borrow() == Fault::Partition {
                    return;
                }
            }
            Fault::Cut { towards: t, min } if t == towards && n >= min.max(2) => {
                // Only one connection takes the cut, the first to get here.
                let took = shared.fault.send_if_modified(|f| {
                    let mine = *f == fault;
                    if mine {
                        *f = Fault::None;
                    }
                    mine
                });
                if took {
                    len = n / 2;
                }
            }
            _ => {}
        }
        if to.write_all(&buf[..len]).await.is_err() {
            return;
        }
        shared.traffic.send_modify(|t| match towards {
            Towards::Target => t.to_target += len as u64,
            Towards::Client => t.to_client += len as u64,
        });
        drop(gate);
        if len < n {
            shared.traffic.send_modify(|t| t.cuts += 1);
            return;
        }
    }
}

/// Waits out a stall, then holds the gate for one chunk; `None` once
/// partitioned.
async fn cleared<'a>(
    shared: &'a Shared,
    faults: &mut watch::Receiver<Fault>,
) -> Option<(RwLockReadGuard<'a, ()>, Fault)> {
    loop {
        let gate = shared.gate.read().await;
        let fault = *faults.borrow_and_update();
        match fault {
            Fault::Partition => return None,
            Fault::Stall => {
                drop(gate);
                faults.changed().await.ok()?;
            }
            fault => return Some((gate, fault)),
        }
    }
}

/// Waits out a stall; `None` once partitioned (or the proxy is gone).
async fn passable(faults: &mut watch::Receiver<Fault>) -> Option<Fault> {
    loop {
        let fault = *faults.borrow_and_update();
        match fault {
            Fault::Partition => return None,
            Fault::Stall => faults.changed().await.ok()?,
            other => return Some(other),
        }
    }
}

/// One of two neighbours, A and B.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    A,
    B,
}

/// The proxies between neighbours A and B: A dials B through `to_b`, B
/// dials A through `to_a`. Whichever dial wins carries the link, so a
/// fault is set on both.
pub struct Link {
    to_b: FaultProxy,
    to_a: FaultProxy,
}

impl Link {
    /// Proxies to A's and B's link ports.
    pub async fn start(a: SocketAddr, b: SocketAddr) -> std::io::Result<Self> {
        Ok(Self {
            to_a: FaultProxy::start(a).await?,
            to_b: FaultProxy::start(b).await?,
        })
    }

    /// Where B should dial A, and where A should dial B.
    pub fn addrs(&self) -> (SocketAddr, SocketAddr) {
        (self.to_a.addr(), self.to_b.addr())
    }

    /// Applies `fault` to the link, whichever way it was dialled.
    pub async fn set(&self, fault: Fault) {
        self.to_b.set(fault).await;
        self.to_a.set(fault).await;
    }

    /// Cuts the link in the middle of the next chunk of at least `min`
    /// bytes on its way to `side`.
    pub async fn cut_towards(&self, side: Side, min: usize) {
        let (to_b, to_a) = match side {
            Side::B => (Towards::Target, Towards::Client),
            Side::A => (Towards::Client, Towards::Target),
        };
        self.to_b.set(Fault::Cut { towards: to_b, min }).await;
        self.to_a.set(Fault::Cut { towards: to_a, min }).await;
    }

    /// What crosses the link, updated as it happens.
    pub fn traffic(&self) -> LinkTraffic {
        LinkTraffic {
            to_b: self.to_b.traffic(),
            to_a: self.to_a.traffic(),
        }
    }
}

/// What crossed the link, whichever proxy carried it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Crossed {
    pub towards_a: u64,
    pub towards_b: u64,
    /// Link connections made through the proxies.
    pub connections: u64,
    pub cuts: u64,
    /// Dials closed at once during a partition.
    pub turned_away: u64,
}

impl Crossed {
    pub fn towards(&self, side: Side) -> u64 {
        match side {
            Side::A => self.towards_a,
            Side::B => self.towards_b,
        }
    }
}

/// Watches what crosses the link.
pub struct LinkTraffic {
    to_b: watch::Receiver<Traffic>,
    to_a: watch::Receiver<Traffic>,
}

impl LinkTraffic {
    /// The two proxies' counts, by the server the bytes went to.
    pub fn now(&self) -> Crossed {
        let (b, a) = (*self.to_b.borrow(), *self.to_a.borrow());
        Crossed {
            towards_a: a.bytes(Towards::Target) + b.bytes(Towards::Client),
            towards_b: b.bytes(Towards::Target) + a.bytes(Towards::Client),
            connections: b.connections + a.connections,
            cuts: b.cuts + a.cuts,
            turned_away: b.turned_away + a.turned_away,
        }
    }

    /// Waits until `check` holds.
    pub async fn wait_for(&mut self, mut check: impl FnMut(&Crossed) -> bool) -> Crossed {
        loop {
            let now = self.now();
            if check(&now) {
                return now;
            }
            tokio::select! {
                _ = self.to_b.changed() => {}
                _ = self.to_a.changed() => {}
            }
        }
    }
}
