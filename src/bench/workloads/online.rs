//! W3 (online latency: pairs of logged-in users, a steady rate, send to
//! receipt) and W5 (the same while the server holds many idle logged-in
//! connections, and what each of them costs in memory).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use futures::StreamExt;

use super::store::Envelopes;
use super::{Bench, LOGIN_CONCURRENCY, close_all, fill, login_shared, settle};
use crate::bench::load::{self, SealSpec, SendJob};
use crate::bench::meter::{self, Meter};
use crate::bench::report::{Latencies, Row};
use crate::bench::users::{self, User};
use crate::client::Connection;
use crate::protocol::{Request, Response};

/// Descriptors the bench keeps for itself beside W5's connections.
const SPARE_FILES: u64 = 256;

/// How long an idle connection has to answer W5's closing ping.
const PING_PATIENCE: Duration = Duration::from_secs(10);

impl Bench {
    pub(super) async fn w3(&mut self) -> Result<()> {
        let row = self.online_run("W3").await?;
        self.emit(row);
        Ok(())
    }

    /// W3's traffic on the main server, reported as `workload`.
    async fn online_run(&mut self, workload: &str) -> Result<Row> {
        let target = self.pairs().await?;
        let (senders, recipients) = (self.users.senders.clone(), self.users.recipients.clone());
        let n = (self.args.w3_rate * self.args.w3_seconds).round().max(1.0) as usize;
        let pairs = senders.len().min(recipients.len());
        let specs: Vec<SealSpec> = (0..n)
            .map(|k| {
                let i = k % pairs;
                SealSpec {
                    sender: i,
                    recipient: i,
                    counter: self.users.counters.next(&senders[i], &recipients[i]),
                }
            })
            .collect();
        let (jobs, _) = load::preseal(
            senders.clone(),
            recipients.clone(),
            specs,
            self.text.clone(),
            self.contact(),
        )
        .await?;
        let envelopes = Envelopes::of(self.contact(), &jobs);
        let mut per_sender: Vec<Vec<SendJob>> = vec![Vec::new(); pairs];
        for (k, job) in jobs.into_iter().enumerate() {
            per_sender[k % pairs].push(job);
        }
        let (sending, receiving) = self.w3_endpoints(&target);
        let sender_conns = login_shared(&sending, &senders[..pairs]).await?;
        let recipient_conns =
            users::login_many(&receiving, &recipients[..pairs], LOGIN_CONCURRENCY).await?;
        settle(&target.pids).await;
        let meter = Meter::start(&target.pids);
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
        if sending.addr != receiving.addr {
            row.note("senders on the first member, recipients on the second");
        }
        row.set("target_rate_per_s", self.args.w3_rate);
        row.set("pushed", latencies.len() as u64);
        row.set("not_pushed", online.not_pushed);
        row.set("seconds", online.send_seconds);
        envelopes.describe(&mut row);
        if online.not_pushed > 0 {
            row.note(&format!(
                "{} messages were not pushed (outbox full?) and were fetched instead",
                online.not_pushed
            ));
        }
        Ok(row)
    }

    pub(super) async fn w5(&mut self) -> Result<()> {
        let target = self.pairs().await?;
        let (target_conns, notes) = self.connections_within_limit();
        let users_wanted = self.args.w5_users.clamp(1, target_conns.max(1));
        let crowd = self.crowd(users_wanted).await?;
        let logins: Vec<User> = (0..target_conns)
            .map(|i| crowd[i % users_wanted].clone())
            .collect();
        let pid = target.pids.first().copied();
        settle(&target.pids).await;
        let rss_before = pid.and_then(meter::rss_bytes);
        eprintln!("  opening {target_conns} logged-in connections");
        let started = Instant::now();
        let idle = users::login_many(&target.ep, &logins, LOGIN_CONCURRENCY).await?;
        let login_secs = started.elapsed().as_secs_f64();
        settle(&target.pids).await;
        let rss_after = pid.and_then(meter::rss_bytes);
        // How long W5 watches the server hold its idle connections with
        // nothing to do.
        let window = self.args.w5_idle_seconds;
        let idle_cpu = idle_cpu_percent(&target.pids, window).await;
        let mut row = self.online_run("W5").await?;
        // Counted after the idle window and the latency run: a server that
        // dropped idle sessions to save memory would answer fewer.
        row.set("connections_alive", answering(&idle).await);
        row.set("idle_cpu_percent", idle_cpu);
        row.set("idle_seconds", window.as_secs_f64());
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
        settle(&target.pids).await;
        row.set("teardown_seconds", started.elapsed().as_secs_f64());
        self.emit(row);
        Ok(())
    }

    /// `--connections`, or fewer if this process's open-file limit (soft,
    /// `ulimit -n`) cannot hold them; with a note saying so.
    fn connections_within_limit(&self) -> (usize, Vec<String>) {
        let wanted = self.args.connections;
        let Ok(limit) = rlimit::Resource::NOFILE.get_soft() else {
            return (wanted, Vec::new());
        };
        let room = limit.saturating_sub(SPARE_FILES + 4 * self.args.senders as u64);
        let room = usize::try_from(room).unwrap_or(usize::MAX);
        if wanted <= room {
            return (wanted, Vec::new());
        }
        let note = format!(
            "open-file limit {limit} (ulimit -n): holding {room} connections instead of {wanted}"
        );
        eprintln!("  note: {note}");
        (room, vec![note])
    }
}

/// How many of `conns` still answer a ping within [`PING_PATIENCE`]: a
/// server that stopped reading a connection without closing it counts
/// that one as lost, rather than holding the bench forever.
async fn answering(conns: &[Connection]) -> u64 {
    let mut answers = futures::stream::iter(conns)
        .map(|c| async move {
            let answer = tokio::time::timeout(PING_PATIENCE, c.call(Request::Ping)).await;
            matches!(answer, Ok(Ok(Response::Pong)))
        })
        .buffer_unordered(LOGIN_CONCURRENCY);
    let mut alive = 0;
    while let Some(answered) = answers.next().await {
        alive += u64::from(answered);
    }
    alive
}

/// The servers' CPU, in percent of one core, over `window` in which the
/// bench sends nothing: what holding the connections alone costs.
async fn idle_cpu_percent(pids: &[u32], window: Duration) -> Option<f64> {
    let before: Option<f64> = pids.iter().map(|&p| meter::cpu_seconds(p)).sum();
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let after: Option<f64> = pids.iter().map(|&p| meter::cpu_seconds(p)).sum();
    Some((after? - before?) / started.elapsed().as_secs_f64() * 100.0)
}
