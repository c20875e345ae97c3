//! `carrier-server`: parse flags, load the configuration, start tracing, run.

use std::path::PathBuf;

use anyhow::Context;
use carrier::clock::Clock;
use carrier::config::ServerConfig;
use carrier::server::Server;
use clap::Parser;
use tokio_util::sync::CancellationToken;

/// Carrier's store-and-forward messaging server.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// TOML configuration file (see config/server.toml).
    #[arg(long, env = "CARRIER_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on for clients (overrides the file).
    #[arg(long, env = "CARRIER_HOST")]
    host: Option<String>,
    /// Port to listen on for clients (overrides the file).
    #[arg(long, env = "CARRIER_PORT")]
    port: Option<u16>,
    /// Directory for the database and the server key (overrides the file).
    #[arg(long, env = "CARRIER_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Port for links from neighbour servers (overrides the file).
    #[arg(
        long = "server_port",
        alias = "server-port",
        env = "CARRIER_SERVER_PORT"
    )]
    server_port: Option<u16>,
    /// Neighbour servers' link addresses, comma-separated host:port (their
    /// keys are pinned on first contact; added to those in the file).
    #[arg(long, env = "CARRIER_NEIGHBOURS")]
    neighbours: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mut config = match &args.config {
        Some(path) => ServerConfig::load(path)?,
        None => ServerConfig::default(),
    };
    if let Some(h) = args.host {
        config.host = h;
    }
    if let Some(p) = args.port {
        config.port = p;
    }
    if let Some(d) = args.data_dir {
        config.data_dir = d;
    }
    if let Some(p) = args.server_port {
        config.server_port = Some(p);
    }
    if let Some(list) = &args.neighbours {
        let extra = ServerConfig::parse_neighbours_flag(list)
            .map_err(|e| anyhow::anyhow!("--neighbours: {e}"))?;
        for n in extra {
            if !config.neighbours.iter().any(|c| c.address == n.address) {
                config.neighbours.push(n);
            }
        }
    }
    let server = Server::open(&config, Clock::System).await?;
    let addr = format!("{}:{}", config.host, config.port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (is another server running there?)"))?;
    let local = listener.local_addr()?;
    let link_listener = match config.server_port {
        Some(port) => {
            let addr = format!("{}:{port}", config.host);
            let l = tokio::net::TcpListener::bind(&addr)
                .await
                .with_context(|| format!("cannot listen for neighbour servers on {addr}"))?;
            Some(l)
        }
        None => None,
    };
    if server.key_created() {
        println!(
            "Created a new server key in {}",
            server.data_dir().display()
        );
    }
    println!("Carrier server fingerprint: {}", server.fingerprint());
    println!(
        "Listening on {local} (data in {})",
        server.data_dir().display()
    );
    let server = match link_listener {
        Some(l) => {
            println!("Listening for neighbour servers on {}", l.local_addr()?);
            server.with_link_listener(l)
        }
        None => server,
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    server.run(listener, shutdown).await;
    Ok(())
}

/// Cancels `token` on SIGINT or SIGTERM.
async fn cancel_on_signal(token: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("can install a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down: finishing in-flight requests");
    token.cancel();
}
