//! The workloads W1–W6 and the state they share: the main server, the users
//! registered on it, and what W1 left queued for W2.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use super::load::{self, SealSpec, SendJob};
use super::procfs::{self, Measured, Meter};
use super::report::{Latencies, Row};
use super::server::{Neighbour, ServerBin, ServerProc, ServerSpec, free_port, prepare_key};
use super::users::{self, Endpoint, OtpReader, PhoneGen, User};
use super::{Args, emit};
use crate::client::Connection;
use crate::domain::{Fingerprint, MessageId};
use crate::protocol::{Request, Response};
use crate::tls::Pin;

/// Connections opened at once when logging many in.
const LOGIN_CONCURRENCY: usize = 64;
/// How long a W4 drain waits without progress for forwarded messages.
const W4_PATIENCE: Duration = Duration::from_secs(30);

/// The server most workloads run against.
struct MainServer {
    ep: Endpoint,
    pids: Vec<u32>,
    process: Option<ServerProc>,
}

/// Messages W1 left queued, for W2 to drain.
struct Stored {
    ids: HashSet<MessageId>,
}

/// What a store phase produced.
struct StoreOutcome {
    row: Row,
    ids: HashSet<MessageId>,
    per_recipient: Vec<usize>,
}

/// The bench's state across workloads.
pub struct Bench {
    args: Args,
    bin: Option<ServerBin>,
    root: PathBuf,
    root_is_ours: bool,
    phones: PhoneGen,
    text: Arc<String>,
    main: Option<MainServer>,
    senders: Arc<Vec<User>>,
    recipients: Arc<Vec<User>>,
    crowd: Arc<Vec<User>>,
    counters: HashMap<(String, String), u64>,
    stored: Option<Stored>,
    preloaded: u64,
    rows: Vec<Row>,
}

impl Bench {
    pub fn new(args: Args) -> Result<Self> {
        let (root, root_is_ours) = match &args.work_dir {
            Some(dir) => (dir.clone(), false),
            None => {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)?
                    .subsec_nanos();
                (
                    std::env::temp_dir()
                        .join(format!("carrier-bench-{}-{nanos:08x}", std::process::id())),
                    true,
                )
            }
        };
        std::fs::create_dir_all(&root)
            .with_context(|| format!("cannot create {}", root.display()))?;
        let text = Arc::new(load::text_of(args.text_bytes));
        Ok(Self {
            args,
            bin: None,
            root,
            root_is_ours,
            phones: PhoneGen::new(0),
            text,
            main: None,
            senders: Arc::default(),
            recipients: Arc::default(),
            crowd: Arc::default(),
            counters: HashMap::new(),
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

    pub async fn run(&mut self, selected: &[&str]) -> Result<()> {
        for &w in selected {
            eprintln!("== {w}");
            match w {
                "W1" => self.w1().await?,
                "W2" => self.w2().await?,
                "W3" => self.w3().await?,
                "W4" => self.w4().await?,
                "W5" => self.w5().await?,
                "W6" => self.w6().await?,
                "crypto" => self.crypto().await?,
                other => bail!("no such workload {other}"),
            }
        }
        if !selected.contains(&"crypto") {
            // The crypto line is always part of the report; keep it short
            // when it was not asked for.
            self.crypto_with(Duration::from_millis(200)).await?;
        }
        Ok(())
    }

    /// Stops the servers and removes the working directory (kept with
    /// --keep, or after a failure so the logs can be read).
    pub async fn finish(&mut self, succeeded: bool) -> Result<()> {
        let mut result = Ok(());
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
        if self.root_is_ours && !self.args.keep && succeeded {
            let _ = std::fs::remove_dir_all(&self.root);
        } else {
            eprintln!("Server data and logs are in {}", self.root.display());
        }
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
            ..Default::default()
        }
    }

    /// The main server: started on first use, or the one named by --server.
    async fn main(&mut self) -> Result<(Endpoint, Vec<u32>)> {
        if let Some(m) = &self.main {
            return Ok((m.ep.clone(), m.pids.clone()));
        }
        let main = match &self.args.server {
            Some(addr) => {
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
                        let conn = Connection::connect(addr, Pin::AcceptAny).await?;
                        let fp = conn.server_fingerprint();
                        eprintln!("note: {addr} presents key {fp}; pinned for this run");
                        Pin::Expect(fp)
                    }
                };
                let ep = Endpoint {
                    addr: addr.clone(),
                    pin,
                    otp: Arc::new(OtpReader::new(&otp_file, true)),
                };
                if self.args.server_pid.is_none() {
                    eprintln!("note: no --server-pid: server CPU and memory are not reported");
                }
                MainServer {
                    ep,
                    pids: self.args.server_pid.into_iter().collect(),
                    process: None,
                }
            }
            None => {
                let bin = self.server_bin()?;
                let p = ServerProc::start(
                    &bin,
                    &self.root.join("main"),
                    &self.spec(),
                    &self.args.server_log,
                )
                .await?;
                eprintln!(
                    "started server pid {} on {} (data in {})",
                    p.pid,
                    p.addr,
                    p.dir.display()
                );
                MainServer {
                    ep: p.endpoint(),
                    pids: vec![p.pid],
                    process: Some(p),
                }
            }
        };
        let out = (main.ep.clone(), main.pids.clone());
        self.main = Some(main);
        Ok(out)
    }

    /// Waits for the servers to finish earlier work before a timed phase.
    async fn settle(&self, pids: &[u32]) {
        let waited = procfs::settle(pids, Duration::from_secs(30)).await;
        if waited > Duration::from_secs(2) {
            eprintln!(
                "  waited {:.1} s for the server to go quiet",
                waited.as_secs_f64()
            );
        }
    }

    /// Registers `n` new users on `ep`, reporting the registration rate.
    async fn register(&mut self, ep: &Endpoint, n: usize) -> Result<Vec<User>> {
        let phones = self.phones.take(n);
        let started = Instant::now();
        let users = users::register_many(ep, phones, self.args.register_concurrency).await?;
        if n >= 100 {
            let secs = started.elapsed().as_secs_f64();
            eprintln!(
                "  registered {n} users in {secs:.1} s ({:.0}/s)",
                n as f64 / secs
            );
        }
        Ok(users)
    }

    /// The W1/W3 senders and recipients on the main server.
    async fn pairs(&mut self) -> Result<(Endpoint, Vec<u32>)> {
        let (ep, pids) = self.main().await?;
        if self.senders.is_empty() {
            let n = self.args.senders;
            self.senders = Arc::new(self.register(&ep, n).await?);
            self.recipients = Arc::new(self.register(&ep, n).await?);
        }
        Ok((ep, pids))
    }

    /// At least `n` further users on the main server (W5, W6).
    async fn crowd(&mut self, n: usize) -> Result<Arc<Vec<User>>> {
        let (ep, _) = self.main().await?;
        if self.crowd.len() < n {
            let more = n - self.crowd.len();
            eprintln!("  registering {more} users (one-time code, argon2 and proof each)");
            let started = Instant::now();
            let mut all = self.crowd.as_ref().clone();
            all.extend(self.register(&ep, more).await?);
            self.crowd = Arc::new(all);
            eprintln!(
                "  registration: {more} users in {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
        Ok(self.crowd.clone())
    }

    /// Seal specs for `n` messages, sender k % S to recipient (s + k / S) % R.
    fn spread(&mut self, senders: &[User], recipients: &[User], n: u64) -> Vec<SealSpec> {
        let (s_n, r_n) = (senders.len(), recipients.len());
        (0..n as usize)
            .map(|k| {
                let sender = k % s_n;
                let recipient = (sender + k / s_n) % r_n;
                let key = (
                    senders[sender].phone.to_string(),
                    recipients[recipient].phone.to_string(),
                );
                let counter = self.counters.entry(key).or_insert(0);
                *counter += 1;
                SealSpec {
                    sender,
                    recipient,
                    counter: *counter,
                }
            })
            .collect()
    }

    /// Seals `n` messages, logs the senders in on `ep`, and sends them as
    /// fast as they are acknowledged (the timed phase), measuring `pids`.
    async fn store_phase(
        &mut self,
        workload: &str,
        ep: &Endpoint,
        pids: &[u32],
        senders: &Arc<Vec<User>>,
        recipients: &Arc<Vec<User>>,
        n: u64,
    ) -> Result<StoreOutcome> {
        let specs = self.spread(senders, recipients, n);
        let mut per_recipient = vec![0usize; recipients.len()];
        specs.iter().for_each(|s| per_recipient[s.recipient] += 1);
        let owners: Vec<usize> = specs.iter().map(|s| s.sender).collect();
        let (jobs, seal_secs) = load::preseal(
            senders.clone(),
            recipients.clone(),
            specs,
            self.text.clone(),
        )
        .await?;
        let ids: HashSet<MessageId> = jobs.iter().map(|j| j.id).collect();
        let mut per_sender: Vec<Vec<SendJob>> = vec![Vec::new(); senders.len()];
        for (job, owner) in jobs.into_iter().zip(owners) {
            per_sender[owner].push(job);
        }
        let conns: Vec<Arc<Connection>> = users::login_many(ep, senders, LOGIN_CONCURRENCY)
            .await?
            .into_iter()
            .map(Arc::new)
            .collect();
        let window = self.args.window;
        self.settle(pids).await;
        let meter = Meter::start(pids);
        let tasks: Vec<_> = conns
            .iter()
            .zip(per_sender)
            .map(|(c, jobs)| {
                tokio::spawn(load::pipelined_send(c.clone(), jobs.into_iter(), window))
            })
            .collect();
        let mut latencies = Vec::with_capacity(n as usize);
        let (mut errors, mut first_error) = (0, None);
        for t in tasks {
            let sent = t.await??;
            latencies.extend(sent.latencies_us);
            errors += sent.errors;
            if first_error.is_none() {
                first_error = sent.first_error;
            }
        }
        let measured = meter.finish();
        close_all(conns).await;
        if errors > 0 {
            bail!(
                "{workload}: the server refused {errors} of {n} sends; the first: {}",
                first_error.unwrap_or_default()
            );
        }
        let mut row = Row::new(workload);
        fill(&mut row, n, &measured, &Latencies::from_micros(latencies));
        row.set("senders", senders.len() as u64);
        row.set("recipients", recipients.len() as u64);
        row.set("window", self.args.window as u64);
        row.set("text_bytes", self.args.text_bytes as u64);
        row.set("preseal_per_s", n as f64 / seal_secs);
        Ok(StoreOutcome {
            row,
            ids,
            per_recipient,
        })
    }

    /// Logs the recipients in on `ep` and fetches + acknowledges until every
    /// expected message came (the timed phase). Fails unless exactly the
    /// expected distinct messages arrived.
    #[allow(clippy::too_many_arguments)]
    async fn drain_phase(
        &mut self,
        workload: &str,
        ep: &Endpoint,
        pids: &[u32],
        recipients: &[User],
        expected: &HashSet<MessageId>,
        per_recipient: Option<&[usize]>,
        patience: Duration,
    ) -> Result<Row> {
        let conns = users::login_many(ep, recipients, LOGIN_CONCURRENCY).await?;
        self.settle(pids).await;
        let meter = Meter::start(pids);
        let tasks: Vec<_> = conns
            .into_iter()
            .enumerate()
            .map(|(i, mut conn)| {
                let expect = per_recipient.map(|p| p[i]);
                tokio::spawn(async move {
                    let d = load::drain(&mut conn, expect, patience).await;
                    (d, conn)
                })
            })
            .collect();
        let mut received = Vec::with_capacity(expected.len());
        let (mut fetches, mut deleted) = (0, 0);
        let mut conns = Vec::new();
        for t in tasks {
            let (d, conn) = t.await?;
            let d = d?;
            received.extend(d.ids);
            fetches += d.fetches;
            deleted += d.deleted;
            conns.push(Arc::new(conn));
        }
        let measured = meter.finish();
        close_all(conns).await;
        let distinct: HashSet<MessageId> = received.iter().copied().collect();
        let known = distinct.iter().filter(|id| expected.contains(id)).count();
        let unknown = distinct.len() - known;
        let duplicates = received.len() - distinct.len();
        if known != expected.len() || unknown != 0 {
            bail!(
                "{workload}: {} distinct messages were expected, {known} of them arrived \
                 ({unknown} unexpected, {duplicates} duplicates)",
                expected.len()
            );
        }
        let mut row = Row::new(workload);
        fill(&mut row, known as u64, &measured, &Latencies::default());
        row.set("recipients", recipients.len() as u64);
        row.set("fetches", fetches);
        row.set("deleted", deleted);
        row.set("duplicates", duplicates as u64);
        Ok(row)
    }

    async fn w1(&mut self) -> Result<()> {
        let (ep, pids) = self.pairs().await?;
        let (senders, recipients) = (self.senders.clone(), self.recipients.clone());
        let out = self
            .store_phase("W1", &ep, &pids, &senders, &recipients, self.args.messages)
            .await?;
        self.stored = Some(Stored { ids: out.ids });
        self.emit(out.row);
        Ok(())
    }

    async fn w2(&mut self) -> Result<()> {
        if self.stored.is_none() {
            eprintln!("  W2 drains what W1 stores: running W1 first (not reported)");
            let (ep, pids) = self.pairs().await?;
            let (senders, recipients) = (self.senders.clone(), self.recipients.clone());
            let out = self
                .store_phase("W1", &ep, &pids, &senders, &recipients, self.args.messages)
                .await?;
            self.stored = Some(Stored { ids: out.ids });
        }
        let (ep, pids) = self.pairs().await?;
        let stored = self.stored.take().expect("stored above");
        let recipients = self.recipients.clone();
        let row = self
            .drain_phase(
                "W2",
                &ep,
                &pids,
                &recipients,
                &stored.ids,
                None,
                Duration::ZERO,
            )
            .await?;
        self.emit(row);
        Ok(())
    }

    /// W3's traffic on the main server; returns the row without a name.
    async fn online_run(&mut self, workload: &str) -> Result<Row> {
        let (ep, pids) = self.pairs().await?;
        let (senders, recipients) = (self.senders.clone(), self.recipients.clone());
        let n = (self.args.w3_rate * self.args.w3_seconds).round().max(1.0) as usize;
        let pairs = senders.len().min(recipients.len());
        let specs: Vec<SealSpec> = (0..n)
            .map(|k| {
                let i = k % pairs;
                let key = (
                    senders[i].phone.to_string(),
                    recipients[i].phone.to_string(),
                );
                let counter = self.counters.entry(key).or_insert(0);
                *counter += 1;
                SealSpec {
                    sender: i,
                    recipient: i,
                    counter: *counter,
                }
            })
            .collect();
        let (jobs, _) = load::preseal(
            senders.clone(),
            recipients.clone(),
            specs,
            self.text.clone(),
        )
        .await?;
        let mut per_sender: Vec<Vec<SendJob>> = vec![Vec::new(); pairs];
        for (k, job) in jobs.into_iter().enumerate() {
            per_sender[k % pairs].push(job);
        }
        let sender_conns: Vec<Arc<Connection>> =
            users::login_many(&ep, &senders[..pairs], LOGIN_CONCURRENCY)
                .await?
                .into_iter()
                .map(Arc::new)
                .collect();
        let recipient_conns =
            users::login_many(&ep, &recipients[..pairs], LOGIN_CONCURRENCY).await?;
        self.settle(&pids).await;
        let meter = Meter::start(&pids);
        let (online, recipient_conns) = load::online(
            &sender_conns,
            recipient_conns,
            per_sender,
            self.args.w3_rate,
        )
        .await?;
        let measured = meter.finish();
        close_all(sender_conns).await;
        close_all(recipient_conns.into_iter().map(Arc::new).collect()).await;
        if online.send_errors > 0 {
            bail!(
                "{workload}: the server refused {} sends; the first: {}",
                online.send_errors,
                online.first_error.unwrap_or_default()
            );
        }
        let latencies = Latencies::from_micros(online.latencies_us);
        let mut row = Row::new(workload);
        fill(&mut row, online.sent, &measured, &latencies);
        row.rate_per_s = Some(online.sent as f64 / online.send_seconds);
        row.set("pairs", pairs as u64);
        row.set("target_rate_per_s", self.args.w3_rate);
        row.set("pushed", latencies.len() as u64);
        row.set("not_pushed", online.not_pushed);
        row.set("seconds", online.send_seconds);
        if online.not_pushed > 0 {
            row.note(&format!(
                "{} messages were not pushed (outbox full?) and were fetched instead",
                online.not_pushed
            ));
        }
        Ok(row)
    }

    async fn w3(&mut self) -> Result<()> {
        let row = self.online_run("W3").await?;
        self.emit(row);
        Ok(())
    }

    async fn w5(&mut self) -> Result<()> {
        let (ep, pids) = self.pairs().await?;
        let mut target = self.args.connections;
        let mut notes = Vec::new();
        if let Some(limit) = procfs::open_files_limit() {
            let room = limit.saturating_sub(256 + 4 * self.args.senders as u64) as usize;
            if target > room {
                notes.push(format!(
                    "open-file limit {limit} (ulimit -n): holding {room} connections instead of {target}"
                ));
                eprintln!("  note: {}", notes.last().expect("just pushed"));
                target = room;
            }
        }
        let users_wanted = self.args.w5_users.clamp(1, target.max(1));
        let crowd = self.crowd(users_wanted).await?;
        let logins: Vec<User> = (0..target)
            .map(|i| crowd[i % users_wanted].clone())
            .collect();
        let pid = pids.first().copied();
        self.settle(&pids).await;
        let rss_before = pid.and_then(procfs::rss_bytes);
        eprintln!("  opening {target} logged-in connections");
        let started = Instant::now();
        let idle = users::login_many(&ep, &logins, LOGIN_CONCURRENCY).await?;
        let login_secs = started.elapsed().as_secs_f64();
        self.settle(&pids).await;
        let rss_after = pid.and_then(procfs::rss_bytes);
        let mut row = self.online_run("W5").await?;
        row.set("connections", idle.len() as u64);
        row.set("distinct_users", users_wanted as u64);
        row.set("logins_per_s", idle.len() as f64 / login_secs);
        match (rss_before, rss_after) {
            (Some(b), Some(a)) => {
                row.set("rss_before_bytes", b);
                row.set("rss_held_bytes", a);
                row.set(
                    "rss_per_connection_bytes",
                    (a as f64 - b as f64) / idle.len().max(1) as f64,
                );
            }
            _ => row.set("rss_per_connection_bytes", serde_json::Value::Null),
        }
        for n in notes {
            row.note(&n);
        }
        drop(idle);
        // Let the server see the connections go before anything else runs.
        let started = Instant::now();
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.settle(&pids).await;
        row.set("teardown_seconds", started.elapsed().as_secs_f64());
        self.emit(row);
        Ok(())
    }

    async fn w6(&mut self) -> Result<()> {
        let (ep, pids) = self.pairs().await?;
        if self.stored.take().is_some() {
            // W1 ran without W2: empty the recipients' queues first, so each
            // level measures and drains only its own messages.
            let mut conns = users::login_many(&ep, &self.recipients, LOGIN_CONCURRENCY).await?;
            for conn in &mut conns {
                load::drain(conn, None, Duration::ZERO).await?;
            }
            close_all(conns.into_iter().map(Arc::new).collect()).await;
        }
        let s_n = self.args.senders;
        let wanted = (self.args.w6_recipients / s_n).max(1) * s_n;
        let crowd = self.crowd(wanted).await?;
        let crowd: Arc<Vec<User>> = Arc::new(crowd[..wanted].to_vec());
        let senders = self.senders.clone();
        let recipients = self.recipients.clone();
        // One real envelope per crowd recipient; the preload sends copies
        // with fresh ids (the server reads only the clear header, so its
        // work is that of any message of this size).
        let specs: Vec<SealSpec> = (0..wanted)
            .map(|r| SealSpec {
                sender: r % s_n,
                recipient: r,
                counter: 1,
            })
            .collect();
        let (templates, _) =
            load::preseal(senders.clone(), crowd.clone(), specs, self.text.clone()).await?;
        let templates = Arc::new(templates);
        let mut sizes = self.args.w6_sizes.clone();
        sizes.sort_unstable();
        sizes.dedup();
        for size in sizes {
            if self.preloaded < size {
                self.preload(&ep, &senders, &templates, size).await?;
            }
            let mut out = self
                .store_phase("W6", &ep, &pids, &senders, &recipients, self.args.messages)
                .await?;
            // Drain what was measured so every level measures the same W1.
            let started = Instant::now();
            let drained = self
                .drain_phase(
                    "W6-drain",
                    &ep,
                    &pids,
                    &recipients,
                    &out.ids,
                    None,
                    Duration::ZERO,
                )
                .await?;
            out.row.set("variant", format!("{size} queued"));
            out.row.set("queued_before", self.preloaded);
            out.row.set("queued_over_recipients", wanted as u64);
            out.row
                .set("drain_rate_per_s", drained.rate_per_s.unwrap_or_default());
            out.row
                .set("drain_seconds", started.elapsed().as_secs_f64());
            self.emit(out.row);
        }
        Ok(())
    }

    /// Queues messages until `size` wait for the crowd.
    async fn preload(
        &mut self,
        ep: &Endpoint,
        senders: &Arc<Vec<User>>,
        templates: &Arc<Vec<SendJob>>,
        size: u64,
    ) -> Result<()> {
        let from = self.preloaded;
        let count = size - from;
        let s_n = senders.len() as u64;
        let crowd_n = templates.len() as u64;
        eprintln!("  preloading {count} messages ({from} → {size} queued)");
        let conns: Vec<Arc<Connection>> = users::login_many(ep, senders, LOGIN_CONCURRENCY)
            .await?
            .into_iter()
            .map(Arc::new)
            .collect();
        let started = Instant::now();
        let tasks: Vec<_> = conns
            .iter()
            .enumerate()
            .map(|(s, conn)| {
                let templates = templates.clone();
                // Sender s takes every message g ≡ s (mod S); with the crowd
                // a multiple of S, its recipient g % crowd is also ≡ s.
                let first = from + (s as u64 + s_n - from % s_n) % s_n;
                let jobs = (first..size).step_by(s_n as usize).map(move |g| {
                    let t = &templates[(g % crowd_n) as usize];
                    let id = MessageId::random();
                    let mut envelope = t.envelope.clone();
                    envelope[4..20].copy_from_slice(id.as_bytes());
                    SendJob {
                        id,
                        to: t.to.clone(),
                        envelope,
                    }
                });
                tokio::spawn(load::pipelined_send(conn.clone(), jobs, 256))
            })
            .collect();
        let mut errors = 0;
        let mut first_error = None;
        let mut done = 0u64;
        for t in tasks {
            let sent = t.await??;
            done += sent.latencies_us.len() as u64;
            errors += sent.errors;
            if first_error.is_none() {
                first_error = sent.first_error;
            }
        }
        close_all(conns).await;
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "  preloaded {done} messages in {secs:.1} s ({:.0}/s)",
            done as f64 / secs
        );
        if errors > 0 {
            bail!(
                "W6 preload: the server refused {errors} sends; the first: {}",
                first_error.unwrap_or_default()
            );
        }
        self.preloaded = size;
        Ok(())
    }

    async fn w4(&mut self) -> Result<()> {
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
        let bin = self.server_bin()?;
        let base = self.root.join(format!("w4-{n}"));
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
            let spec = ServerSpec {
                link_port: Some(link_ports[i]),
                neighbours,
                ..self.spec()
            };
            match ServerProc::start(&bin, dir, &spec, &self.args.server_log).await {
                Ok(p) => procs.push(p),
                Err(e) => {
                    stop_all(procs).await;
                    let first = e.to_string();
                    let why = first
                        .lines()
                        .rev()
                        .find(|l| !l.trim().is_empty())
                        .unwrap_or(&first)
                        .trim()
                        .to_owned();
                    return Err(W4Error::Unavailable(format!(
                        "the server refused the [neighbourhood] configuration: {why}"
                    )));
                }
            }
        }
        let outcome = self.w4_run(n, &procs).await;
        stop_all(procs).await;
        outcome
    }

    async fn w4_run(&mut self, n: usize, procs: &[ServerProc]) -> Result<Vec<Row>, W4Error> {
        let pids: Vec<u32> = procs.iter().map(|p| p.pid).collect();
        let (first, last) = (procs[0].endpoint(), procs[n - 1].endpoint());
        let s_n = self.args.senders;
        let senders = Arc::new(self.register(&first, s_n).await?);
        let recipients = Arc::new(self.register(&last, s_n).await?);
        // The recipients must be known on the first server before sending.
        let probe = users::login(&first, &senders[0]).await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        for r in recipients.iter() {
            loop {
                match probe
                    .call(Request::Lookup {
                        phone: r.phone.to_string(),
                    })
                    .await
                {
                    Ok(Response::User(_)) => break,
                    _ if Instant::now() > deadline => {
                        return Err(W4Error::Unavailable(format!(
                            "{} (registered on server {n}) is still unknown on server 1 after 30 s",
                            r.phone
                        )));
                    }
                    _ => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        }
        probe.close().await;
        let store = self
            .store_phase(
                "W4",
                &first,
                &pids,
                &senders,
                &recipients,
                self.args.messages,
            )
            .await?;
        let mut rows = Vec::new();
        let mut store_row = store.row;
        store_row.set("variant", format!("{n} servers: store"));
        store_row.set("servers", n as u64);
        let drain = self
            .drain_phase(
                "W4",
                &last,
                &pids,
                &recipients,
                &store.ids,
                Some(&store.per_recipient),
                W4_PATIENCE,
            )
            .await?;
        let mut drain_row = drain;
        drain_row.set("variant", format!("{n} servers: drain"));
        drain_row.set("servers", n as u64);
        store_row.set("server_pids", pids.clone());
        drain_row.set("server_pids", pids.clone());
        rows.push(store_row);
        rows.push(drain_row);
        Ok(rows)
    }

    async fn crypto(&mut self) -> Result<()> {
        self.crypto_with(Duration::from_millis(500)).await
    }

    async fn crypto_with(&mut self, budget: Duration) -> Result<()> {
        let text_bytes = self.args.text_bytes;
        let row = tokio::task::spawn_blocking(move || super::envelopes::rates(text_bytes, budget))
            .await??;
        self.emit(row);
        Ok(())
    }
}

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

/// Fills the contract fields from a timed phase.
fn fill(row: &mut Row, messages: u64, m: &Measured, latencies: &Latencies) {
    row.messages = Some(messages);
    row.rate_per_s = Some(messages as f64 / m.seconds.max(1e-9));
    row.p50_ms = latencies.percentile_ms(50.0);
    row.p99_ms = latencies.percentile_ms(99.0);
    row.server_cpu_us_per_msg = m.cpu_us_per(messages);
    row.server_rss_bytes = m.peak_rss;
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
    }
    if m.peak_rss.is_some() && !m.peak_is_phase_only {
        row.note("peak RSS is since the server started (could not reset it)");
    }
}

async fn close_all(conns: Vec<Arc<Connection>>) {
    let closing = conns.into_iter().map(|c| async move {
        if let Ok(c) = Arc::try_unwrap(c) {
            c.close().await;
        }
    });
    futures::future::join_all(closing).await;
}

/// Stops W4's servers together; their data is thrown away, so one that is
/// slow to stop is killed after a few seconds.
async fn stop_all(procs: Vec<ServerProc>) {
    let stops = procs.into_iter().map(|p| p.stop(Duration::from_secs(5)));
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
