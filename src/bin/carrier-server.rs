//! `carrier-server`: parse flags, load the configuration, start tracing, run
//! (or, with `migrate`, copy a server's database into a new one).

use std::io::Write;

use carrier::admin::cli::AdminArgs;
use carrier::config::{Flags, ServerConfig};
use carrier::db::{self, Location};
use carrier::{server, telemetry};
use clap::Parser;

/// Carrier's store-and-forward messaging server.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    flags: Flags,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Copy a server's whole state (users, code limits, queues, outbound
    /// queues, directory and withdrawals, pins, devices) into an empty
    /// database, and check the counts. Stop the server first: a copy from
    /// SQLite is refused while a server uses its data directory.
    Migrate {
        /// The database to copy: sqlite:PATH (or a postgres:// URL).
        #[arg(long)]
        from: String,
        /// The empty database to copy into: postgres://user@host:port/db.
        #[arg(long)]
        to: String,
    },
    /// Look after a server, running or stopped: users, codes, queues,
    /// links, pins, backups, configuration checks.
    Admin(AdminArgs),
}

/// A failure to start is one line naming its causes, whatever
/// `RUST_BACKTRACE` says: it is the operator's to act on, not a crash.
fn main() -> std::process::ExitCode {
    match run(Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("carrier-server: {}", one_line(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and each cause its message does not already quote (many of
/// ours name their cause in their own sentence).
fn one_line(e: &anyhow::Error) -> String {
    let mut line = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !line.contains(&cause) {
            line = format!("{line}: {cause}");
        }
    }
    line
}

fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Some(Command::Admin(admin)) => {
            telemetry::init("warn");
            runtime(None, ONLY_THE_VARIABLE)?.block_on(admin_main(args.flags, admin))
        }
        Some(Command::Migrate { from, to }) => {
            telemetry::init(telemetry::SERVER_FILTER);
            runtime(None, ONLY_THE_VARIABLE)?.block_on(migrate(&from, &to))
        }
        None => {
            // The configuration comes first: it sizes the runtime.
            let config = ServerConfig::from_flags(args.flags.clone())?;
            let log = telemetry::init_with(&config.log.filter, config.log.format);
            let reload = server::Reload {
                flags: args.flags,
                log,
            };
            runtime(config.worker_threads, THE_KEY)?.block_on(async {
                carrier::web::serve(&config, server::shutdown_on_signal(), Some(reload)).await
            })?;
            Ok(())
        }
    }
}

/// How the server asks for fewer runtime threads.
const THE_KEY: &str =
    "lower [server] worker_threads (or TOKIO_WORKER_THREADS, used when the key is not set)";
/// How `admin` and `migrate` do: they read no `worker_threads`.
const ONLY_THE_VARIABLE: &str = "set TOKIO_WORKER_THREADS lower";

/// The multi-threaded runtime, with `worker_threads` threads or the
/// runtime's own default (`TOKIO_WORKER_THREADS`, else one per core).
///
/// When the system refuses one of its threads (a limit on processes or on
/// memory), the runtime panics while building, and the threads it had
/// started wait for ever: the process would hang instead of exiting. So a
/// panic while it builds ends the process at once, with a sentence and
/// exit code 1. `fewer` says how to ask for fewer threads: the server reads
/// its configuration's key, `admin` and `migrate` only the variable.
fn runtime(
    worker_threads: Option<usize>,
    fewer: &'static str,
) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = worker_threads {
        builder.worker_threads(n);
    }
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let reason = info
            .payload_as_str()
            .unwrap_or("the runtime could not start");
        eprintln!(
            "carrier-server: cannot start the runtime's threads ({reason}): {fewer}, \
             or raise the system's limits on processes and memory"
        );
        std::process::exit(1);
    }));
    let built = builder.enable_all().build();
    std::panic::set_hook(hook);
    built
}

/// An admin command: its answer on standard output, or one line on
/// standard error and exit code 1.
async fn admin_main(flags: Flags, admin: AdminArgs) -> anyhow::Result<()> {
    let outcome = match ServerConfig::from_flags(flags) {
        Ok(config) => carrier::admin::cli::run(&config, admin)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(line) = outcome {
        eprintln!("carrier-server admin: {line}");
        std::process::exit(1);
    }
    Ok(())
}

async fn migrate(from: &str, to: &str) -> anyhow::Result<()> {
    let (from, to) = (Location::parse(from)?, Location::parse(to)?);
    let copied = db::copy::migrate(&from, &to).await?;
    let mut report = format!("Copied {from} into {to}:\n");
    for (table, rows) in copied {
        report.push_str(&format!("  {table}: {rows} rows\n"));
    }
    // Written, not `println!`: a closed pipe is an error, not a panic.
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(report.as_bytes())?;
    stdout.flush()?;
    Ok(())
}
