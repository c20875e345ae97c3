//! `carrier-bench`: starts servers (or targets a running one), registers
//! its users through the one-time-code file, runs the workloads of the
//! benchmark and reports rate, latency, server CPU per message and peak RSS.
//!
//! The servers run as separate processes so that their CPU time and memory
//! can be read from `/proc`; the load generator seals every envelope before
//! a timed phase begins. See `carrier-bench --help` for the flags.

pub mod balancer;
pub mod envelopes;
pub mod floor;
pub mod load;
pub mod meter;
pub mod plot;
pub mod report;
pub mod server;
pub mod users;
mod workloads;

use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::{Parser, ValueEnum};

use report::Row;

/// A workload of the benchmark, as `--workloads` names it and the report
/// labels it; they run in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
#[value(rename_all = "verbatim")]
pub enum Workload {
    W1,
    W2,
    W3,
    W4,
    W5,
    W6,
    W7,
    #[value(name = "floor")]
    Floor,
    #[value(name = "crypto")]
    Crypto,
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = self.to_possible_value().expect("no workload is skipped");
        f.write_str(value.get_name())
    }
}

/// Benchmark of a Carrier server: store, drain, online latency, a
/// neighbourhood of servers, many connections, and growth with the queue.
#[derive(Parser, Debug, Clone)]
#[command(name = "carrier-bench", version, about)]
pub struct Args {
    /// Workloads to run, comma-separated: W1 (offline store), W2 (drain),
    /// W3 (online latency), W4 (across a neighbourhood), W5 (many
    /// connections), W6 (growth with the queue), W7 (multi-device
    /// fan-out), floor (what a durable commit and a wake-up cost this
    /// machine with no server), crypto. Default: all.
    #[arg(long, value_delimiter = ',', ignore_case = true)]
    pub workloads: Option<Vec<Workload>>,
    /// Messages in W1/W2, in each W4 run and in each W6 measurement.
    #[arg(long, default_value_t = 10_000)]
    pub messages: u64,
    /// One JSON object per workload per line on standard output.
    #[arg(long)]
    pub json: bool,
    /// Sender connections (and recipients, and W3 pairs).
    #[arg(long, default_value_t = 10)]
    pub senders: usize,
    /// Sends awaiting their acknowledgment per sender connection.
    #[arg(long, default_value_t = 128)]
    pub window: usize,
    /// Bytes of text per message.
    #[arg(long, default_value_t = 256)]
    pub text_bytes: usize,
    /// Seal every timed message as a sender's first contact (kind 1
    /// envelopes repeating the PQXDH set-up) instead of a running
    /// conversation's (kind 2, the default: each pair exchanges one message
    /// each way before the timed phase, on the load generator alone).
    #[arg(long)]
    pub first_contact: bool,
    /// W3: messages per second, in total.
    #[arg(long, default_value_t = 200.0)]
    pub w3_rate: f64,
    /// W3 (and W5's latency run): seconds of sending.
    #[arg(long, default_value_t = 20.0)]
    pub w3_seconds: f64,
    /// W5: logged-in idle connections to hold.
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// W5: distinct users behind the idle connections (each logs in
    /// connections/users times; registering costs more than logging in).
    #[arg(long, default_value_t = 10_000)]
    pub w5_users: usize,
    /// W5: seconds the idle server's CPU is watched with nothing sent (10
    /// resolve a tenth of a percent of a core; fewer keep a smoke run short;
    /// at most 600, well inside the 15 minutes after which the server
    /// closes a connection that sends nothing).
    #[arg(long, default_value = "10", value_parser = idle_window)]
    pub w5_idle_seconds: std::time::Duration,
    /// W6: queue sizes to measure at, comma-separated, e.g. 10000,1000000,5000000.
    #[arg(long, value_delimiter = ',', default_values_t = [10_000u64, 1_000_000])]
    pub w6_sizes: Vec<u64>,
    /// W6: recipients the preloaded messages are spread over.
    #[arg(long, default_value_t = 10_000)]
    pub w6_recipients: usize,
    /// Concurrent registrations while creating users.
    #[arg(long, default_value_t = 16)]
    pub register_concurrency: usize,
    /// Target a running server (HOST:PORT) instead of starting one. Needs
    /// --otp-file; W4 is skipped.
    #[arg(long, requires = "otp_file")]
    pub server: Option<String>,
    /// The running server's one-time-code file ([otp] delivery = "file").
    #[arg(long)]
    pub otp_file: Option<PathBuf>,
    /// The running server's process id, for its CPU time and memory.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// The running server's key fingerprint (default: trust on first use).
    #[arg(long)]
    pub server_fingerprint: Option<String>,
    /// The started server's database (postgres://…, or sqlite:PATH); it
    /// should be empty, since the bench registers its users anew. Default:
    /// SQLite in the server's data directory. W4's servers stay on SQLite.
    #[arg(long)]
    pub database_url: Option<String>,
    /// Members of the started server: more than 1 starts a cluster on
    /// --database-url (PostgreSQL) behind a round-robin TCP balancer in the
    /// bench; W1 and W2 go through the balancer, W3's senders to the first
    /// member and its recipients to the second.
    #[arg(
        long,
        default_value_t = 1,
        requires = "database_url",
        conflicts_with = "server"
    )]
    pub members: usize,
    /// The server executable (default: carrier-server next to this one).
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
    /// RUST_LOG for the servers the bench starts.
    #[arg(long, default_value = "warn")]
    pub server_log: String,
    /// Directory for the servers' data (default: a new one under the
    /// system's temporary directory, removed at the end).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Keep the working directory (databases, logs, configurations).
    #[arg(long)]
    pub keep: bool,
    /// Seconds the main server may take to stop after SIGTERM before it is
    /// killed (W4's servers get 5).
    #[arg(long, default_value_t = 60)]
    pub stop_grace: u64,
    /// Run the selected W1 and W2 once per number of sender connections
    /// listed here, comma-separated (e.g. 1,10,100,1000), each on a server
    /// of its own, then the other selected workloads once: the scaling
    /// curve's data.
    #[arg(long, value_delimiter = ',')]
    pub scaling_senders: Option<Vec<usize>>,
    /// Draw the scaling plot (SVG) of W1, W2 and W6 from this run's rows
    /// and those of --plot-from into FILE.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Rows of earlier runs (files of --json lines) to draw as well; with
    /// --plot and without --workloads or --scaling-senders, nothing runs.
    #[arg(long, requires = "plot")]
    pub plot_from: Vec<PathBuf>,
    /// Serve with this configuration instead (used by the bench itself
    /// when no carrier-server binary is at hand).
    #[arg(long, hide = true)]
    pub serve_config: Option<PathBuf>,
}

/// Entry point of the `carrier-bench` binary.
pub fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(config) = &args.serve_config {
        return match server::serve_in_process(config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("Error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("Error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("carrier-bench failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workloads `--workloads` names (all by default), once each, in run order.
pub fn select(requested: Option<&[Workload]>) -> Vec<Workload> {
    let mut chosen = requested.map_or_else(|| Workload::value_variants().to_vec(), <[_]>::to_vec);
    chosen.sort_unstable();
    chosen.dedup();
    chosen
}

async fn run(args: Args) -> Result<()> {
    let mut drawn = Vec::new();
    for file in &args.plot_from {
        drawn.extend(plot::read_rows(file)?);
    }
    let redraw_only =
        !args.plot_from.is_empty() && args.workloads.is_none() && args.scaling_senders.is_none();
    if !redraw_only {
        for rows in runs(&args) {
            let rows = run_once(rows).await?;
            drawn.extend(rows.iter().map(Row::to_value));
        }
    }
    if let Some(out) = &args.plot {
        plot::draw(&drawn, out)?;
        eprintln!("scaling plot written to {}", out.display());
    }
    Ok(())
}

/// The runs `args` asks for: one, or with --scaling-senders one per
/// number of senders (W1 and W2) and one for the other workloads.
fn runs(args: &Args) -> Vec<Args> {
    let Some(counts) = &args.scaling_senders else {
        return vec![args.clone()];
    };
    let selected = select(args.workloads.as_deref());
    let (per_count, rest): (Vec<Workload>, Vec<Workload>) = selected
        .into_iter()
        .partition(|w| matches!(w, Workload::W1 | Workload::W2));
    let mut runs: Vec<Args> = Vec::new();
    if !per_count.is_empty() {
        for &senders in counts {
            let mut a = args.clone();
            a.senders = senders;
            a.workloads = Some(per_count.clone());
            runs.push(a);
        }
    }
    if !rest.is_empty() {
        let mut a = args.clone();
        a.workloads = Some(rest);
        runs.push(a);
    }
    runs
}

/// One run of the bench on servers of its own; returns its rows.
async fn run_once(args: Args) -> Result<Vec<Row>> {
    let selected = select(args.workloads.as_deref());
    if args.senders == 0 || args.messages == 0 {
        bail!("--senders and --messages must be at least 1");
    }
    crate::tls::install_crypto_provider();
    let json = args.json;
    let mut bench = workloads::Bench::new(args)?;
    let outcome = bench.run(&selected).await;
    let rows = bench.rows().to_vec();
    let cleanup = bench.finish(outcome.is_ok()).await;
    if !json && !rows.is_empty() {
        println!("{}", report::table(&rows));
    }
    outcome?;
    cleanup?;
    Ok(rows)
}

/// Prints a row at once in JSON mode (so partial runs still report), or a
/// one-line progress note on standard error.
fn emit(row: &Row, json: bool) {
    if json {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", row.to_json());
        let _ = out.flush();
    } else if let Some(line) = report::side_line(row) {
        eprintln!("{line}");
    } else {
        let variant = row
            .extra
            .get("variant")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        let f = |v: Option<f64>| v.map(|x| format!("{x:.2}")).unwrap_or_else(|| "-".into());
        eprintln!(
            "{} {variant}: rate {}/s, p50 {} ms, p99 {} ms, cpu {} µs/msg",
            row.workload,
            f(row.rate_per_s),
            f(row.p50_ms),
            f(row.p99_ms),
            f(row.server_cpu_us_per_msg)
        );
    }
}

/// `--w5-idle-seconds`: a number of seconds from 0.1 to 600, refused
/// otherwise rather than replaced by a default. Longer, the server's idle
/// time-out (15 minutes) would close W5's connections while it watches.
fn idle_window(s: &str) -> Result<std::time::Duration, String> {
    let seconds: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(0.1..=600.0).contains(&seconds) {
        return Err(format!(
            "{s} seconds is outside 0.1 to 600 (the server closes connections idle for 15 minutes)"
        ));
    }
    Ok(std::time::Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_selection() {
        let parse = |list: &str| Args::try_parse_from(["carrier-bench", "--workloads", list]);
        assert_eq!(select(None).len(), Workload::value_variants().len());
        let a = parse("w3,W1,W3").unwrap();
        assert_eq!(
            select(a.workloads.as_deref()),
            vec![Workload::W1, Workload::W3]
        );
        assert!(parse("W9").is_err());
        let names: Vec<String> = select(None).iter().map(Workload::to_string).collect();
        assert_eq!(
            names,
            ["W1", "W2", "W3", "W4", "W5", "W6", "W7", "floor", "crypto"]
        );
        assert_eq!(
            parse("CRYPTO").unwrap().workloads,
            Some(vec![Workload::Crypto])
        );
    }

    #[test]
    fn flags_parse() {
        let a = Args::try_parse_from([
            "carrier-bench",
            "--messages",
            "200",
            "--workloads",
            "W1,W2,W3",
            "--w3-seconds",
            "1",
            "--json",
            "--w6-sizes",
            "10000,1000000,5000000",
        ])
        .unwrap();
        assert_eq!(a.messages, 200);
        assert_eq!(a.w6_sizes, vec![10_000, 1_000_000, 5_000_000]);
        assert!(Args::try_parse_from(["carrier-bench", "--server", "127.0.0.1:1"]).is_err());
        let two = ["--members", "2", "--database-url", "postgres://b@h/db"];
        let a = Args::try_parse_from(["carrier-bench"].into_iter().chain(two)).unwrap();
        assert_eq!(a.members, 2);
        assert!(Args::try_parse_from(["carrier-bench", "--members", "2"]).is_err());
        let idle = |v: &str| Args::try_parse_from(["carrier-bench", "--w5-idle-seconds", v]);
        assert_eq!(
            idle("1.5").unwrap().w5_idle_seconds,
            std::time::Duration::from_millis(1500)
        );
        assert_eq!(
            idle("600").unwrap().w5_idle_seconds,
            std::time::Duration::from_secs(600)
        );
        for bad in ["0", "inf", "NaN", "-1", "ten", "601"] {
            assert!(idle(bad).is_err(), "{bad}");
        }
    }
}
