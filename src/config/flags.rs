//! The command-line flags (and their `CARRIER_…` environment variables)
//! and how they are put over the file.

use std::path::PathBuf;

use super::validate::neighbour;
use super::{ConfigError, NeighbourConfig, ServerConfig};
use crate::db::Location;

/// The flags of `carrier-server` that choose or override the configuration.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct Flags {
    /// TOML configuration file (see config/server.toml).
    #[arg(long, env = "CARRIER_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Address to listen on for clients (overrides the file).
    #[arg(long, env = "CARRIER_HOST")]
    pub host: Option<String>,
    /// Port to listen on for clients (overrides the file).
    #[arg(long, env = "CARRIER_PORT")]
    pub port: Option<u16>,
    /// Directory for the database and the server key (overrides the file).
    #[arg(long, env = "CARRIER_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// Port for links from neighbour servers (overrides the file).
    #[arg(
        long = "server_port",
        alias = "server-port",
        env = "CARRIER_SERVER_PORT"
    )]
    pub server_port: Option<u16>,
    /// Neighbour servers' link addresses, comma-separated host:port (their
    /// keys are pinned on first contact; added to those in the file).
    #[arg(long, env = "CARRIER_NEIGHBOURS")]
    pub neighbours: Option<String>,
    /// The database: postgres://user@host:port/database, or sqlite:PATH
    /// (overrides the file; without either, SQLite in the data directory).
    #[arg(long, env = "CARRIER_DATABASE_URL", global = true)]
    pub database_url: Option<String>,
    /// Port for the browser client and its WebSocket (overrides the file's
    /// web.listen port; without a [web] section, 127.0.0.1 on this port).
    #[arg(long, env = "CARRIER_WEB_PORT")]
    pub web_port: Option<u16>,
}

impl ServerConfig {
    /// The configuration `flags` describe: their file (or the defaults)
    /// with the flags' values put over it. `--neighbours` adds to the
    /// file's neighbours those it does not list already.
    pub fn from_flags(flags: Flags) -> Result<Self, ConfigError> {
        let mut config = match &flags.config {
            Some(path) => Self::load(path)?,
            None => Self::default(),
        };
        config.apply(flags)?;
        Ok(config)
    }

    fn apply(&mut self, flags: Flags) -> Result<(), ConfigError> {
        if let Some(h) = flags.host {
            self.host = h;
        }
        if let Some(p) = flags.port {
            self.port = p;
        }
        if let Some(d) = flags.data_dir {
            self.data_dir = d;
        }
        if let Some(p) = flags.server_port {
            self.server_port = Some(p);
        }
        if let Some(port) = flags.web_port {
            match &mut self.web {
                Some(web) => web.listen.set_port(port),
                None => self.web = Some(super::WebConfig::loopback(port)),
            }
        }
        if let Some(url) = &flags.database_url {
            let location = Location::parse(url).map_err(|e| ConfigError::Flag {
                flag: "--database-url",
                message: e.to_string(),
            })?;
            self.database = Some(location);
        }
        if let Some(list) = &flags.neighbours {
            let extra = parse_neighbours_flag(list).map_err(|message| ConfigError::Flag {
                flag: "--neighbours",
                message,
            })?;
            for n in extra {
                if !self.neighbours.iter().any(|c| c.address == n.address) {
                    self.neighbours.push(n);
                }
            }
        }
        Ok(())
    }
}

/// Parses the seeds' `--neighbours host:port,host:port` flag (keys are
/// pinned on first contact).
fn parse_neighbours_flag(list: &str) -> Result<Vec<NeighbourConfig>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(|a| neighbour(a, None).map_err(|(_, m)| m))
        .collect()
}
