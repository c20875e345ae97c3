//! `carrier-server`: parse flags, load the configuration, start tracing, run
//! (or, with `migrate`, copy a server's database into a new one).

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
    /// Copy a server's whole state (users, queues, outbound queues,
    /// directory, pins, code limits) into an empty database, and check the
    /// counts. Stop the server first.
    Migrate {
        /// The database to copy: sqlite:PATH (or a postgres:// URL).
        #[arg(long)]
        from: String,
        /// The empty database to copy into: postgres://user@host:port/db.
        #[arg(long)]
        to: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init("info");
    let args = Args::parse();
    match args.command {
        Some(Command::Migrate { from, to }) => migrate(&from, &to).await,
        None => {
            let config = ServerConfig::from_flags(args.flags)?;
            server::serve(&config, server::shutdown_on_signal()).await?;
            Ok(())
        }
    }
}

async fn migrate(from: &str, to: &str) -> anyhow::Result<()> {
    let (from, to) = (Location::parse(from)?, Location::parse(to)?);
    let copied = db::copy::migrate(&from, &to).await?;
    println!("Copied {from} into {to}:");
    for (table, rows) in copied {
        println!("  {table}: {rows} rows");
    }
    Ok(())
}
