//! The workloads and the state they share: the main server, the users
//! registered on it, and what one workload leaves queued for the next.
//! One file per family of workloads: `store` (W1 offline store, W2 drain),
//! `online` (W3 online latency, W5 the same beside many idle connections),
//! `neighbourhood` (W4), `growth` (W6) and `fanout` (W7).

mod fanout;
mod growth;
mod neighbourhood;
mod online;
mod store;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};

use super::balancer::Balancer;
use super::load::{self, SealSpec};
use super::meter::{self, Measured};
use super::report::{Latencies, Row};
use super::server::{self, ServerBin, ServerProc, ServerSpec};
use super::users::{self, Endpoint, OtpReader, PhoneGen, User};
use super::{Args, Workload, emit};
use crate::client::Connection;
use crate::domain::{Fingerprint, PhoneNumber};
use crate::tls::Pin;

/// Connections opened at once when logging many in.
const LOGIN_CONCURRENCY: usize = 64;

/// The bench's state across workloads.
pub struct Bench {
    args: Args,
    work_dir: WorkDir,
    /// How servers are started, found on first need.
    bin: Option<ServerBin>,
    main: Option<MainServer>,
    users: Users,
    text: Arc<String>,
    /// What W1 stored and W2 has not drained yet.
    stored: Option<store::Stored>,
    /// Messages W6 has queued for the crowd so far.
    preloaded: u64,
    rows: Vec<Row>,
}

/// Where a timed phase sends, and the server processes it measures.
#[derive(Clone)]
struct Target {
    ep: Endpoint,
    pids: Vec<u32>,
}

/// The server most workloads run against.
struct MainServer {
    target: Target,
    /// `None` for a server someone else runs (`--server`).
    process: Option<ServerProc>,
    /// With `--members`: the other members, each member's own address
    /// (W3 sends through the first and receives through the second), and
    /// the balancer `target` goes through.
    cluster: Option<Cluster>,
}

struct Cluster {
    others: Vec<ServerProc>,
    members: Vec<Endpoint>,
    _balancer: Balancer,
}

/// The directory for the servers' data.
struct WorkDir {
    path: PathBuf,
    /// Made by the bench (not `--work-dir`), so the bench removes it.
    ours: bool,
}

/// The bench's users: the phone numbers it hands out, the envelope counter
/// of each sender towards each recipient, and the groups on the main server.
#[derive(Default)]
struct Users {
    phones: PhoneGen,
    counters: Counters,
    /// W1–W3's senders and recipients, `--senders` of each.
    senders: Arc<Vec<User>>,
    recipients: Arc<Vec<User>>,
    /// Further users for W5's idle connections and W6's queues.
    crowd: Arc<Vec<User>>,
}

/// The last envelope counter from each sender to each recipient.
#[derive(Default)]
struct Counters(HashMap<(PhoneNumber, PhoneNumber), u64>);

impl Counters {
    fn next(&mut self, from: &User, to: &User) -> u64 {
        let counter = self
            .0
            .entry((from.phone.clone(), to.phone.clone()))
            .or_insert(0);
        *counter += 1;
        *counter
    }

    /// Seal specs for `n` messages, sender k % S to recipient (s + k / S) % R.
    fn spread(&mut self, senders: &[User], recipients: &[User], n: u64) -> Vec<SealSpec> {
        let (s_n, r_n) = (senders.len(), recipients.len());
        (0..n as usize)
            .map(|k| {
                let sender = k % s_n;
                let recipient = (sender + k / s_n) % r_n;
                SealSpec {
                    sender,
                    recipient,
                    counter: self.next(&senders[sender], &recipients[recipient]),
                }
            })
            .collect()
    }
}

impl WorkDir {
    /// `--work-dir`, or a new directory under the system's temporary one.
    fn create(requested: Option<&Path>) -> Result<Self> {
        let (path, ours) = match requested {
            Some(dir) => (dir.to_owned(), false),
            None => {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)?
                    .subsec_nanos();
                let name = format!("carrier-bench-{}-{nanos:08x}", std::process::id());
                (std::env::temp_dir().join(name), true)
            }
        };
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Self { path, ours })
    }

    /// Removes the directory if the bench made it and it is not wanted;
    /// otherwise says where it is.
    fn finish(&self, wanted: bool) {
        if self.ours && !wanted {
            let _ = std::fs::remove_dir_all(&self.path);
        } else {
            eprintln!("Server data and logs are in {}", self.path.display());
        }
    }
}

impl Bench {
    pub fn new(args: Args) -> Result<Self> {
        let work_dir = WorkDir::create(args.work_dir.as_deref())?;
        let text = Arc::new(load::text_of(args.text_bytes));
        Ok(Self {
            args,
            work_dir,
            bin: None,
            main: None,
            users: Users::default(),
            text,
            stored: None,
            preloaded: 0,
            rows: Vec::new(),
        })
    }

    pub fn rows(&self) -> &[Row] {
        &self.rows
    }

    fn emit(&mut self, row: Row) {
        emit(&row, self.args.json);
        self.rows.push(row);
    }

    pub async fn run(&mut self, selected: &[Workload]) -> Result<()> {
        for &w in selected {
            eprintln!("== {w}");
            match w {
                Workload::W1 => self.w1().await?,
                Workload::W2 => self.w2().await?,
                Workload::W3 => self.w3().await?,
                Workload::W4 => self.w4().await?,
                Workload::W5 => self.w5().await?,
                Workload::W6 => self.w6().await?,
                Workload::W7 => self.w7().await?,
                Workload::Floor => self.floor().await?,
                Workload::Crypto => self.crypto(Duration::from_millis(500)).await?,
            }
        }
        if !selected.contains(&Workload::Crypto) {
            // The crypto line is always part of the report; keep it short
            // when it was not asked for.
            self.crypto(Duration::from_millis(200)).await?;
        }
        Ok(())
    }

    /// Stops the servers and removes the working directory (kept with
    /// --keep, or after a failure so the logs can be read).
    pub async fn finish(&mut self, succeeded: bool) -> Result<()> {
        let mut result = Ok(());
        let others = self
            .main
            .as_mut()
            .and_then(|m| m.cluster.take())
            .map(|c| c.others)
            .unwrap_or_default();
        for p in others {
            if let Err(e) = p.stop(Duration::from_secs(self.args.stop_grace)).await {
                result = Err(e);
            }
        }
        if let Some(main) = self.main.take()
            && let Some(p) = main.process
        {
            match p.stop(Duration::from_secs(self.args.stop_grace)).await {
                Ok(s) if s.killed => eprintln!(
                    "note: the server did not stop within {:.0} s of SIGTERM; killed",
                    s.seconds
                ),
                Ok(s) if s.seconds > 5.0 => eprintln!(
                    "note: the server took {:.1} s to stop after SIGTERM",
                    s.seconds
                ),
                Ok(_) => {}
                Err(e) => result = Err(e),
            }
        }
        self.work_dir.finish(self.args.keep || !succeeded);
        result
    }

    fn server_bin(&mut self) -> Result<ServerBin> {
        if let Some(b) = &self.bin {
            return Ok(b.clone());
        }
        let (bin, warning) = ServerBin::locate(self.args.server_bin.clone())?;
        if let Some(w) = warning {
            eprintln!("note: {w}");
        }
        self.bin = Some(bin.clone());
        Ok(bin)
    }

    fn spec(&self) -> ServerSpec {
        ServerSpec {
            max_connections: self.args.connections + 1000,
            database_url: self.args.database_url.clone(),
            ..Default::default()
        }
    }

    /// The main server: started on first use, or the one named by --server.
    async fn main(&mut self) -> Result<Target> {
        if let Some(m) = &self.main {
            return Ok(m.target.clone());
        }
        let main = match self.args.server.clone() {
            Some(addr) => self.running_server(addr).await?,
            None => self.start_main().await?,
        };
        let target = main.target.clone();
        self.main = Some(main);
        Ok(target)
    }

    /// The server named by `--server`, pinned by `--server-fingerprint` or
    /// by the key it presents now.
    async fn running_server(&self, addr: String) -> Result<MainServer> {
        let otp_file = self
            .args
            .otp_file
            .clone()
            .ok_or_else(|| anyhow!("--server needs --otp-file"))?;
        let pin = match &self.args.server_fingerprint {
            Some(fp) => Pin::Expect(
                Fingerprint::parse(fp)
                    .ok_or_else(|| anyhow!("--server-fingerprint is not a fingerprint"))?,
            ),
            None => {
                let conn = Connection::connect(&addr, Pin::AcceptAny).await?;
                let fp = conn.server_fingerprint();
                eprintln!("note: {addr} presents key {fp}; pinned for this run");
                Pin::Expect(fp)
            }
        };
        if self.args.server_pid.is_none() {
            eprintln!("note: no --server-pid: server CPU and memory are not reported");
        }
        let ep = Endpoint {
            addr,
            pin,
            otp: Arc::new(OtpReader::new(&otp_file, true)),
        };
        Ok(MainServer {
            target: Target {
                ep,
                pids: self.args.server_pid.into_iter().collect(),
            },
            process: None,
            cluster: None,
        })
    }

    async fn start_main(&mut self) -> Result<MainServer> {
        if self.args.members > 1 {
            return self.start_members().await;
        }
        let bin = self.server_bin()?;
        let dir = self.work_dir.path.join("main");
        let p = ServerProc::start(&bin, &dir, &self.spec(), &self.args.server_log).await?;
        eprintln!(
            "started server pid {} on {} (data in {})",
            p.pid,
            p.addr,
            p.dir.display()
        );
        Ok(MainServer {
            target: Target {
                ep: p.endpoint(),
                pids: vec![p.pid],
            },
            process: Some(p),
            cluster: None,
        })
    }

    /// `--members` servers on one database behind the bench's balancer.
    async fn start_members(&mut self) -> Result<MainServer> {
        let bin = self.server_bin()?;
        let n = self.args.members;
        let dir = self.work_dir.path.join("main");
        let mut all =
            server::start_members(&bin, &dir, &self.spec(), &self.args.server_log, n).await?;
        let balancer = Balancer::start(all.iter().map(|p| p.addr.clone()).collect()).await?;
        for p in &all {
            eprintln!("started member pid {} on {}", p.pid, p.addr);
        }
        eprintln!("balancing {n} members on {}", balancer.addr);
        let first = all.remove(0);
        // Codes go to the first member's file, whichever member sends them.
        let otp = first.endpoint().otp;
        let members = std::iter::once(first.endpoint())
            .chain(all.iter().map(|p| Endpoint {
                otp: otp.clone(),
                ..p.endpoint()
            }))
            .collect();
        let target = Target {
            ep: Endpoint {
                addr: balancer.addr.clone(),
                ..first.endpoint()
            },
            pids: std::iter::once(first.pid)
                .chain(all.iter().map(|p| p.pid))
                .collect(),
        };
        Ok(MainServer {
            target,
            process: Some(first),
            cluster: Some(Cluster {
                others: all,
                members,
                _balancer: balancer,
            }),
        })
    }

    /// Where W3 logs its senders and its recipients in: the first and the
    /// second member of a cluster, so every message crosses members, or
    /// the main server for both.
    fn w3_endpoints(&self, target: &Target) -> (Endpoint, Endpoint) {
        match self.main.as_ref().and_then(|m| m.cluster.as_ref()) {
            Some(c) if c.members.len() > 1 => (c.members[0].clone(), c.members[1].clone()),
            _ => (target.ep.clone(), target.ep.clone()),
        }
    }

    /// Registers `n` new users on `ep`, reporting the registration rate.
    async fn register(&mut self, ep: &Endpoint, n: usize) -> Result<Vec<User>> {
        let phones = self.users.phones.take(n);
        let started = Instant::now();
        let users = users::register_many(ep, phones, self.args.register_concurrency, 1).await?;
        if n >= 100 {
            let secs = started.elapsed().as_secs_f64();
            eprintln!(
                "  registered {n} users in {secs:.1} s ({:.0}/s)",
                n as f64 / secs
            );
        }
        Ok(users)
    }

    /// The main server with W1–W3's senders and recipients on it.
    async fn pairs(&mut self) -> Result<Target> {
        let target = self.main().await?;
        if self.users.senders.is_empty() {
            let n = self.args.senders;
            self.users.senders = Arc::new(self.register(&target.ep, n).await?);
            self.users.recipients = Arc::new(self.register(&target.ep, n).await?);
        }
        Ok(target)
    }

    /// At least `n` further users on the main server (W5, W6).
    async fn crowd(&mut self, n: usize) -> Result<Arc<Vec<User>>> {
        let target = self.main().await?;
        if self.users.crowd.len() < n {
            let more = n - self.users.crowd.len();
            eprintln!("  registering {more} users (one-time code and proof each)");
            let started = Instant::now();
            let mut all = self.users.crowd.as_ref().clone();
            all.extend(self.register(&target.ep, more).await?);
            self.users.crowd = Arc::new(all);
            eprintln!(
                "  registration: {more} users in {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
        Ok(self.users.crowd.clone())
    }

    /// The machine's floor, once the server left from earlier workloads
    /// has gone quiet (its checkpoints would share the disk).
    async fn floor(&mut self) -> Result<()> {
        if let Some(main) = &self.main {
            settle(&main.target.pids).await;
        }
        let row = super::floor::measure(&self.work_dir.path).await?;
        self.emit(row);
        Ok(())
    }

    /// Envelope sealing and opening rates, each run for `budget`.
    async fn crypto(&mut self, budget: Duration) -> Result<()> {
        let text_bytes = self.args.text_bytes;
        let row = tokio::task::spawn_blocking(move || super::envelopes::rates(text_bytes, budget))
            .await??;
        self.emit(row);
        Ok(())
    }
}

/// Waits for the servers to finish earlier work before a timed phase.
async fn settle(pids: &[u32]) {
    let waited = meter::settle(pids, Duration::from_secs(30)).await;
    if waited > Duration::from_secs(2) {
        eprintln!(
            "  waited {:.1} s for the server to go quiet",
            waited.as_secs_f64()
        );
    }
}

/// Fills the contract fields from a timed phase.
fn fill(row: &mut Row, messages: u64, m: &Measured, latencies: &Latencies) {
    row.messages = Some(messages);
    row.rate_per_s = Some(messages as f64 / m.seconds.max(1e-9));
    row.p50_ms = latencies.percentile_ms(50.0);
    row.p99_ms = latencies.percentile_ms(99.0);
    row.server_cpu_us_per_msg = m.cpu_us_per(messages);
    row.server_rss_bytes = m.peak_rss;
    row.server_rss_anon_bytes = m.peak_anon;
    row.set("seconds", m.seconds);
    if let Some(own) = m.own_cpu_seconds
        && messages > 0
    {
        row.set("loadgen_cpu_us_per_msg", own * 1e6 / messages as f64);
    }
    if m.cpu_each.len() > 1 {
        row.set(
            "server_cpu_us_per_msg_each",
            m.cpu_each
                .iter()
                .map(|c| c.map(|c| c * 1e6 / messages.max(1) as f64))
                .collect::<Vec<_>>(),
        );
        row.set("server_rss_bytes_each", m.peak_each.clone());
        row.set("server_rss_anon_bytes_each", m.peak_anon_each.clone());
    }
    if m.peak_rss.is_some() && !m.peak_is_phase_only {
        row.note("peak RSS is since the server started (could not reset it)");
    }
}

/// Logs `users` in on `ep`, for sending from many tasks.
async fn login_shared(ep: &Endpoint, users: &[User]) -> Result<Vec<Arc<Connection>>> {
    let conns = users::login_many(ep, users, LOGIN_CONCURRENCY).await?;
    Ok(conns.into_iter().map(Arc::new).collect())
}

/// The timed phase of a store: once the server is quiet, each connection
/// sends its jobs `window` deep while the meter reads the server's CPU and
/// memory; then the connections are closed.
async fn timed_sends(
    target: &Target,
    conns: Vec<Arc<Connection>>,
    per_sender: Vec<Vec<load::SendJob>>,
    window: usize,
) -> Result<(load::Sent, Measured)> {
    settle(&target.pids).await;
    let meter = meter::Meter::start(&target.pids);
    let tasks: Vec<_> = conns
        .iter()
        .zip(per_sender)
        .map(|(c, jobs)| tokio::spawn(load::pipelined_send(c.clone(), jobs.into_iter(), window)))
        .collect();
    let sent = load::joined(tasks).await;
    let measured = meter.finish();
    close_all(conns).await;
    Ok((sent?, measured))
}

async fn close_all(conns: Vec<Arc<Connection>>) {
    let closing = conns.into_iter().map(|c| async move {
        if let Ok(c) = Arc::try_unwrap(c) {
            c.close().await;
        }
    });
    futures::future::join_all(closing).await;
}
