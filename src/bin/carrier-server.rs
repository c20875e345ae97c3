//! `carrier-server`: parse flags, load the configuration, start tracing, run.

use carrier::config::{Flags, ServerConfig};
use carrier::{server, telemetry};
use clap::Parser;

/// Carrier's store-and-forward messaging server.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    flags: Flags,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init("info");
    let args = Args::parse();
    let config = ServerConfig::from_flags(args.flags)?;
    server::serve(&config, server::shutdown_on_signal()).await?;
    Ok(())
}
