//! A TCP balancer inside the bench, for `--members`: one address before
//! the cluster's members, handing each new connection to the next member
//! in turn and copying bytes both ways. TLS passes through untouched (every
//! member presents the cluster's one key), as it does through HAProxy in
//! TCP mode; the copying costs the bench's own CPU, not the members'.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A running balancer; stops when dropped.
pub struct Balancer {
    pub addr: String,
    task: JoinHandle<()>,
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Balancer {
    /// Listens on a free loopback port and spreads connections over
    /// `members` (client addresses) round-robin.
    pub async fn start(members: Vec<String>) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("the balancer cannot bind a local port")?;
        let addr = listener.local_addr()?.to_string();
        let members = Arc::new(members);
        let next = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let i = next.fetch_add(1, Ordering::Relaxed) % members.len();
                tokio::spawn(pass(client, members[i].clone()));
            }
        });
        Ok(Self { addr, task })
    }
}

/// Copies one client's bytes to `member` and back until either side closes.
async fn pass(mut client: TcpStream, member: String) {
    let Ok(mut upstream) = TcpStream::connect(&member).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A member that answers each connection with its own name.
    async fn member(name: &'static [u8]) -> String {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let _ = s.write_all(name).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn connections_take_turns() {
        let members = vec![member(b"a").await, member(b"b").await];
        let balancer = Balancer::start(members).await.unwrap();
        let mut names = Vec::new();
        for _ in 0..4 {
            let mut s = TcpStream::connect(&balancer.addr).await.unwrap();
            let mut name = [0u8; 1];
            s.read_exact(&mut name).await.unwrap();
            names.push(name[0]);
        }
        assert_eq!(names, b"abab");
    }
}
