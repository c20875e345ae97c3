//! `crashloop`: kills the real `carrier-server` with SIGKILL, cycle after
//! cycle, while users send and fetch, then checks Jepsen's total-queue
//! rule over everything that happened: every message acknowledged to its
//! sender is received (lost = 0), nothing is received that no sender tried
//! (unexpected = 0), and duplicates are counted, as the server delivered
//! them and as the client kept them (see `ledger`).
//!
//! With `--servers 2`, senders use server A and recipients its neighbour
//! B, the link between them runs through a proxy that counts its bytes,
//! and each cycle kills A or B at a seeded byte of link traffic towards
//! it: B with a relayed message on its way in, A with B's acknowledgement
//! on its way back.
//!
//! ```text
//! cargo build --release --bins --example crashloop
//! target/release/examples/crashloop --cycles 200 --seed 1
//! target/release/examples/crashloop --servers 2 --cycles 100 --seed 1
//! ```
//!
//! The last line is a summary; the exit status is 0 only if nothing was
//! lost or unexpected and every database is intact. docs/RELIABILITY.md
//! has the figures of the last runs.

#![forbid(unsafe_code)]

mod cycle;
mod ledger;
mod plan;
// The tests' proxy, whose faults the crash loop does not use.
#[allow(dead_code)]
#[path = "../../tests/integration/faults/proxy.rs"]
mod proxy;
mod servers;
mod users;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use carrier::bench::users::{OtpReader, PhoneGen};
use clap::Parser;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use cycle::World;
use ledger::{Ledger, Tally};
use servers::{HeldPorts, Server};
use users::{Shared, User};

/// Kills `carrier-server` with SIGKILL at seeded moments under load and
/// checks that nothing acknowledged is lost.
#[derive(Parser, Debug)]
#[command(name = "crashloop")]
struct Args {
    /// 1: one server. 2: senders on server A, recipients on its neighbour
    /// B, either one killed in the middle of a hop.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
    servers: u8,
    /// Kill-and-restart cycles.
    #[arg(long, default_value_t = 200)]
    cycles: u32,
    /// Seed of the schedule (random unless given; printed either way).
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long, default_value_t = 3)]
    senders: usize,
    #[arg(long, default_value_t = 3)]
    recipients: usize,
    /// Messages each sender sends per cycle.
    #[arg(long, default_value_t = 8)]
    messages: usize,
    /// The `carrier-server` to run (default: the one built beside this
    /// program, in the same profile).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Where to keep the servers' and clients' directories (default: a
    /// temporary directory, deleted unless the check fails).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// How long to wait at the end for every accepted message.
    #[arg(long, default_value_t = 120)]
    drain_secs: u64,
}

fn main() -> ExitCode {
    carrier::telemetry::init("warn");
    let args = Args::parse();
    let seed = args.seed.unwrap_or_else(rand::random);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    match runtime.block_on(run(&args, seed)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("crashloop: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs the cycles and the check; `Ok(false)` if the check failed.
async fn run(args: &Args, seed: u64) -> Result<bool> {
    let bin = server_bin(args.server_bin.as_deref())?;
    let (dir, temporary) = match &args.dir {
        Some(d) => (d.clone(), None),
        None => {
            let t = tempfile::tempdir()?;
            (t.path().to_owned(), Some(t))
        }
    };
    let shape = plan::Shape {
        senders: args.senders.max(1),
        recipients: args.recipients.max(1),
        messages: args.messages.max(1),
        pair: args.servers == 2,
    };
    println!(
        "crashloop: {} server(s), {} cycles, {} senders and {} recipients, {} messages per \
         sender per cycle, seed {seed}; data in {}",
        args.servers,
        args.cycles,
        shape.senders,
        shape.recipients,
        shape.messages,
        dir.display()
    );
    let started = Instant::now();
    let mut world = set_up(&bin, &dir, shape).await?;
    let stop = CancellationToken::new();
    let receiving = receive_all(&world, &stop);
    let mut planner = plan::Planner::new(seed, shape);
    let mut on_time = 0;
    let mut in_flight = 0;
    for c in 0..args.cycles {
        let plan = planner.next_cycle();
        let kill = cycle::run(&mut world, c, &plan).await?;
        on_time += usize::from(kill.on_time);
        in_flight += usize::from(kill.in_flight > 0);
        println!(
            "cycle {}/{}: {}",
            c + 1,
            args.cycles,
            cycle::describe(&plan, &kill)
        );
    }
    let drained = drain(&world, Duration::from_secs(args.drain_secs)).await;
    stop.cancel();
    for r in futures::future::join_all(receiving).await {
        r??;
    }
    let (intact, log_notes) = stop_servers(&mut world).await?;
    let histories = histories(&world).await?;
    let tally = world.shared.ledger().check(&histories);
    let ok = drained && intact && tally.lost() == 0 && tally.unexpected() == 0;
    report(&tally, &log_notes);
    println!(
        "crashloop servers={} seed={seed} cycles={} kills={} kills_at_event={on_time} \
         kills_with_messages_in_flight={in_flight} {tally} databases={} seconds={:.0} result={}",
        args.servers,
        args.cycles,
        args.cycles,
        if intact { "ok" } else { "damaged" },
        started.elapsed().as_secs_f64(),
        if ok { "PASS" } else { "FAIL" }
    );
    if !ok && let Some(t) = temporary {
        println!("kept for inspection: {}", t.keep().display());
    }
    Ok(ok)
}

/// `carrier-server` beside this program's directory (`target/<profile>/`).
fn server_bin(given: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = given {
        return Ok(p.to_owned());
    }
    let me = std::env::current_exe()?;
    let bin = me
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("carrier-server"))
        .ok_or_else(|| anyhow!("cannot tell where {} lives", me.display()))?;
    if !bin.is_file() {
        return Err(anyhow!(
            "no {}: build it in the same profile (cargo build --bins, with --release for a \
             release crashloop) or pass --server-bin",
            bin.display()
        ));
    }
    Ok(bin)
}

/// Starts the servers and registers the users: senders on A, recipients
/// on B (on A too with one server).
async fn set_up(bin: &Path, dir: &Path, shape: plan::Shape) -> Result<World> {
    let mut ports = HeldPorts::default();
    let mut servers = vec![Server::prepare(bin, dir.join("server-a"), "A", &mut ports)?];
    let mut link = None;
    if shape.pair {
        servers.push(Server::prepare(bin, dir.join("server-b"), "B", &mut ports)?);
        let l = proxy::Link::start(servers[0].link_addr, servers[1].link_addr).await?;
        let (to_a, to_b) = l.addrs();
        servers[0].configure(&[(to_b, servers[1].fingerprint)])?;
        servers[1].configure(&[(to_a, servers[0].fingerprint)])?;
        link = Some(l);
    } else {
        servers[0].configure(&[])?;
    }
    drop(ports);
    for s in &mut servers {
        s.start().await?;
    }
    let mut phones = PhoneGen::new(0).take(shape.senders + shape.recipients);
    let recipient_phones = phones.split_off(shape.senders);
    let home = servers.last().expect("a server");
    let otp = OtpReader::new(&home.otp_file(), false);
    let mut recipients = Vec::new();
    for p in &recipient_phones {
        let user = users::register(home, &otp, p.clone(), &dir.join(format!("home-{p}"))).await?;
        recipients.push(Arc::new(user));
    }
    let otp = OtpReader::new(&servers[0].otp_file(), false);
    let mut senders = Vec::new();
    for p in phones {
        let home = dir.join(format!("home-{p}"));
        senders.push(Arc::new(
            users::register(&servers[0], &otp, p, &home).await?,
        ));
    }
    wait_for_routes(&senders[0], &recipient_phones).await?;
    Ok(World {
        servers,
        senders,
        recipients,
        recipient_phones: Arc::new(recipient_phones),
        shared: Arc::new(Shared {
            ledger: Mutex::new(Ledger::default()),
            progress: watch::Sender::new(Default::default()),
        }),
        link,
    })
}

/// Waits until the senders' server lists every recipient (at once with
/// one server; once the directory has spread with two).
async fn wait_for_routes(sender: &User, recipients: &[carrier::domain::PhoneNumber]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let session = sender.client.login().await?;
        let listed = session.list().await?;
        session.close().await;
        if recipients
            .iter()
            .all(|r| listed.iter().any(|u| u.phone == r.as_str()))
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(anyhow!(
                "the senders' server never learnt the recipients' routes"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts every recipient's receiving task.
fn receive_all(
    world: &World,
    stop: &CancellationToken,
) -> Vec<tokio::task::JoinHandle<Result<()>>> {
    world
        .recipients
        .iter()
        .map(|user| {
            let (user, stop, shared) = (user.clone(), stop.clone(), world.shared.clone());
            tokio::spawn(async move { users::receive_until(&user, &stop, &shared).await })
        })
        .collect()
}

/// Waits until every accepted message has been delivered and then every
/// recipient has found its queue empty; false if that takes longer than
/// `patience`.
async fn drain(world: &World, patience: Duration) -> bool {
    let shared = &world.shared;
    let mut progress = shared.progress.subscribe();
    let all_delivered = async {
        loop {
            let (delivered, accepted) = shared.ledger().accepted_delivered();
            if delivered == accepted {
                break;
            }
            if progress.changed().await.is_err() {
                break;
            }
        }
        let quiet = progress.borrow().empty_fetches + world.recipients.len() as u64;
        let _ = progress.wait_for(|p| p.empty_fetches >= quiet).await;
    };
    let drained = tokio::time::timeout(patience, all_delivered).await.is_ok();
    if !drained {
        let (delivered, accepted) = shared.ledger().accepted_delivered();
        println!(
            "drain: only {delivered} of {accepted} accepted messages delivered within {patience:?}"
        );
    }
    drained
}

/// Stops every server with SIGTERM and checks its database; returns
/// whether all are intact, and notes from their logs.
async fn stop_servers(world: &mut World) -> Result<(bool, Vec<String>)> {
    let mut intact = true;
    let mut notes = Vec::new();
    for s in &mut world.servers {
        s.stop().await?;
        let check = servers::integrity_check(&s.database()).await?;
        let (errors, panicked) = s.log_errors();
        notes.push(format!(
            "server {}: integrity_check {check}, {errors} ERROR lines in its log{}",
            s.name,
            if panicked { ", and a PANIC" } else { "" }
        ));
        intact &= check == "ok" && !panicked;
    }
    Ok((intact, notes))
}

/// Each recipient's stored history, by phone.
async fn histories(world: &World) -> Result<HashMap<String, Vec<carrier::client::HistoryEntry>>> {
    let mut out = HashMap::new();
    for user in &world.recipients {
        let history = user
            .client
            .home
            .history()
            .await
            .with_context(|| format!("{}'s history", user.phone))?;
        out.insert(user.phone.to_string(), history);
    }
    Ok(out)
}

/// Prints what went wrong, at most a few lines of each kind.
fn report(tally: &Tally, log_notes: &[String]) {
    const SHOWN: usize = 20;
    for note in log_notes {
        println!("{note}");
    }
    if !tally.refused.is_empty() {
        println!(
            "attempts refused with a code (each tried again): {:?}",
            tally.refused
        );
    }
    for (what, notes) in [
        ("lost", &tally.lost_notes),
        ("unexpected", &tally.unexpected_notes),
    ] {
        for n in notes.iter().take(SHOWN) {
            println!("{what}: {n}");
        }
        if notes.len() > SHOWN {
            println!("{what}: … and {} more", notes.len() - SHOWN);
        }
    }
}
