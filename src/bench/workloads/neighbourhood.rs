//! W4: W1 and W2 across a line of two and of three servers linked as
//! neighbours, senders on the first server and recipients on the last, so
//! every message is relayed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::store::{InFlight, drain_phase};
use super::{Bench, Target};
use crate::bench::report::Row;
use crate::bench::server::{Neighbour, ServerProc, ServerSpec, free_port, prepare_key};
use crate::bench::users::{self, User};
use crate::domain::Fingerprint;
use crate::protocol::{Request, Response};

/// How long a W4 drain waits without progress for forwarded messages.
const W4_PATIENCE: Duration = Duration::from_secs(30);
/// How long a recipient may take to become known on the first server.
const DIRECTORY_PATIENCE: Duration = Duration::from_secs(30);
/// Seconds a W4 server may take to stop; its data is thrown away.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// W4 either could not run (the neighbourhood is not there) or failed.
enum W4Error {
    Unavailable(String),
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for W4Error {
    fn from(e: anyhow::Error) -> Self {
        W4Error::Failed(e)
    }
}

impl Bench {
    pub(super) async fn w4(&mut self) -> Result<()> {
        if self.args.server.is_some() {
            let mut row = Row::new("W4").with(
                "skipped",
                "needs servers the bench starts (not with --server)",
            );
            row.set("variant", "skipped");
            self.emit(row);
            return Ok(());
        }
        for n in [2usize, 3] {
            match self.w4_line(n).await {
                Ok(rows) => rows.into_iter().for_each(|r| self.emit(r)),
                Err(W4Error::Unavailable(why)) => {
                    eprintln!("  W4 with {n} servers skipped: neighbourhood not available: {why}");
                    let mut row = Row::new("W4").with("servers", n as u64);
                    row.set("variant", format!("{n} servers"));
                    row.set("skipped", format!("neighbourhood not available: {why}"));
                    self.emit(row);
                }
                Err(W4Error::Failed(e)) => return Err(e.context(format!("W4 with {n} servers"))),
            }
        }
        Ok(())
    }

    /// W1 and W2 with senders on the first server of a line of `n` and
    /// recipients on the last.
    async fn w4_line(&mut self, n: usize) -> Result<Vec<Row>, W4Error> {
        let procs = self.start_line(n).await?;
        let outcome = self.w4_run(&procs).await;
        stop_all(procs).await;
        outcome
    }

    /// Starts `n` servers in a line, each the neighbour of the next.
    async fn start_line(&mut self, n: usize) -> Result<Vec<ServerProc>, W4Error> {
        let bin = self.server_bin()?;
        let base = self.work_dir.path.join(format!("w4-{n}"));
        let dirs: Vec<PathBuf> = (0..n).map(|i| base.join(format!("s{}", i + 1))).collect();
        // Each server's key is made beforehand, so the neighbours can pin it.
        let fingerprints: Vec<Fingerprint> =
            dirs.iter().map(|d| prepare_key(d)).collect::<Result<_>>()?;
        let link_ports: Vec<u16> = (0..n).map(|_| free_port()).collect::<Result<_>>()?;
        let mut procs = Vec::new();
        for (i, dir) in dirs.iter().enumerate() {
            let neighbours = [i.checked_sub(1), Some(i + 1).filter(|&j| j < n)]
                .into_iter()
                .flatten()
                .map(|j| Neighbour {
                    link_addr: format!("127.0.0.1:{}", link_ports[j]),
                    fingerprint: Some(fingerprints[j]),
                })
                .collect();
            // Each server of the neighbourhood is a server of its own, on
            // SQLite: a shared --database-url would make them one.
            let spec = ServerSpec {
                link_port: Some(link_ports[i]),
                neighbours,
                database_url: None,
                ..self.spec()
            };
            match ServerProc::start(&bin, dir, &spec, &self.args.server_log).await {
                Ok(p) => procs.push(p),
                Err(e) => {
                    stop_all(procs).await;
                    return Err(W4Error::Unavailable(format!(
                        "the server refused the [neighbourhood] configuration: {}",
                        last_line(&e.to_string())
                    )));
                }
            }
        }
        Ok(procs)
    }

    async fn w4_run(&mut self, procs: &[ServerProc]) -> Result<Vec<Row>, W4Error> {
        let n = procs.len();
        let pids: Vec<u32> = procs.iter().map(|p| p.pid).collect();
        let first = Target {
            ep: procs[0].endpoint(),
            pids: pids.clone(),
        };
        let last = Target {
            ep: procs[n - 1].endpoint(),
            pids: pids.clone(),
        };
        let s_n = self.args.senders;
        let senders = Arc::new(self.register(&first.ep, s_n).await?);
        let recipients = Arc::new(self.register(&last.ep, s_n).await?);
        known_on_first(&first, &senders[0], &recipients, n).await?;
        let store = self
            .store_phase("W4", &first, &senders, &recipients, self.args.messages)
            .await?;
        let in_flight = InFlight {
            per_recipient: &store.per_recipient,
            patience: W4_PATIENCE,
        };
        let mut drain_row =
            drain_phase("W4", &last, &recipients, &store.ids, Some(in_flight)).await?;
        let mut store_row = store.row;
        for (row, phase) in [(&mut store_row, "store"), (&mut drain_row, "drain")] {
            row.set("variant", format!("{n} servers: {phase}"));
            row.set("servers", n as u64);
        }
        store_row.set("server_pids", pids.clone());
        drain_row.set("server_pids", pids);
        Ok(vec![store_row, drain_row])
    }
}

/// Waits until every recipient (registered on server `n`) is known on the
/// first server, as a sender there must find them.
async fn known_on_first(
    first: &Target,
    sender: &User,
    recipients: &[User],
    n: usize,
) -> Result<(), W4Error> {
    let probe = users::login(&first.ep, sender).await?;
    let deadline = Instant::now() + DIRECTORY_PATIENCE;
    for r in recipients {
        loop {
            let lookup = Request::Lookup {
                phone: r.phone.to_string(),
            };
            match probe.call(lookup).await {
                Ok(Response::User(_)) => break,
                _ if Instant::now() > deadline => {
                    return Err(W4Error::Unavailable(format!(
                        "{} (registered on server {n}) is still unknown on server 1 after {} s",
                        r.phone,
                        DIRECTORY_PATIENCE.as_secs()
                    )));
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
    probe.close().await;
    Ok(())
}

/// The last non-empty line of an error, which names its cause.
fn last_line(text: &str) -> String {
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(text)
        .trim()
        .to_owned()
}

/// Stops W4's servers together; their data is thrown away, so one that is
/// slow to stop is killed after a few seconds.
async fn stop_all(procs: Vec<ServerProc>) {
    let stops = procs.into_iter().map(|p| p.stop(STOP_GRACE));
    for outcome in futures::future::join_all(stops).await {
        match outcome {
            Ok(s) if s.killed => {
                eprintln!("  note: a W4 server did not stop within 5 s of SIGTERM; killed")
            }
            Ok(_) => {}
            Err(e) => eprintln!("  note: {e:#}"),
        }
    }
}
