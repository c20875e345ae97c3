//! Server configuration: a TOML file, overridden by command-line flags (and
//! their `CARRIER_…` environment variables), validated once at load. Errors
//! name the file and the key, or the flag. Relative paths in a file are
//! resolved against the file's directory, so the server does not depend on
//! where it is started.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::auth::code_sink::CodeSink;
use crate::auth::otp::OtpPolicy;
use crate::db::Location;
use crate::db::quota::Quota;
use crate::domain::Fingerprint;
use crate::rate::Rate;
use crate::routing::Limits;

/// The flags of `carrier-server` that choose or override the configuration.
#[derive(Debug, Default, clap::Args)]
pub struct Flags {
    /// TOML configuration file (see config/server.toml).
    #[arg(long, env = "CARRIER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on for clients (overrides the file).
    #[arg(long, env = "CARRIER_HOST")]
    pub host: Option<String>,
    /// Port to listen on for clients (overrides the file).
    #[arg(long, env = "CARRIER_PORT")]
    pub port: Option<u16>,
    /// Directory for the database and the server key (overrides the file).
    #[arg(long, env = "CARRIER_DATA_DIR")]
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
    #[arg(long, env = "CARRIER_DATABASE_URL")]
    pub database_url: Option<String>,
}

/// A neighbour as configured: where to dial it and, if known, its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighbourConfig {
    /// `host:port` of its server-to-server listener.
    pub address: String,
    /// Its key fingerprint; `None` pins the key seen on first contact.
    pub fingerprint: Option<Fingerprint>,
}

/// Everything `carrier-server` needs to start.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    pub data_dir: PathBuf,
    pub max_connections: usize,
    pub otp_policy: OtpPolicy,
    /// `register` requests one address (an IPv6 /64) may make.
    pub register_per_address: Rate,
    pub code_sink: CodeSink,
    pub message_ttl_ms: i64,
    /// Limits on each recipient's queue.
    pub quota: Quota,
    /// Limits on what one sender may hold in one recipient's queue, so no
    /// single sender can fill it.
    pub sender_quota: Quota,
    /// Limits on each neighbour's outbound queue.
    pub neighbour_quota: Quota,
    /// How this server is named to people (`list`); defaults to `host:port`.
    pub name: Option<String>,
    /// Port of the server-to-server listener; `None` runs without one.
    pub server_port: Option<u16>,
    pub neighbours: Vec<NeighbourConfig>,
    /// Where the database is; `None` is SQLite in the data directory.
    pub database: Option<Location>,
    /// What one user may take: send rates, sessions, unsent bytes.
    pub limits: Limits,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self::from_file_contents(FileConfig::default(), Path::new("."))
            .expect("the built-in defaults are valid")
    }
}

/// A configuration problem, naming where it is.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: key '{key}': {message}")]
    Invalid {
        path: PathBuf,
        key: &'static str,
        message: String,
    },
    #[error("{flag}: {message}")]
    Flag { flag: &'static str, message: String },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    server: ServerSection,
    #[serde(default)]
    otp: OtpSection,
    #[serde(default)]
    queue: QueueSection,
    #[serde(default)]
    neighbourhood: NeighbourhoodSection,
    #[serde(default)]
    database: DatabaseSection,
    #[serde(default)]
    limits: LimitsSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct DatabaseSection {
    url: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct LimitsSection {
    send_messages_per_second: u64,
    send_message_burst: u64,
    send_bytes_per_second: u64,
    send_byte_burst: u64,
    max_sessions_per_user: usize,
    max_session_backlog_bytes: usize,
    max_user_backlog_bytes: usize,
}

impl Default for LimitsSection {
    fn default() -> Self {
        let l = Limits::default();
        Self {
            send_messages_per_second: l.send_messages.whole_per_second(),
            send_message_burst: l.send_messages.burst,
            send_bytes_per_second: l.send_bytes.whole_per_second(),
            send_byte_burst: l.send_bytes.burst,
            max_sessions_per_user: l.sessions_per_user,
            max_session_backlog_bytes: l.session_backlog_bytes,
            max_user_backlog_bytes: l.user_backlog_bytes,
        }
    }
}

impl LimitsSection {
    fn parse(self) -> Result<Limits, (&'static str, String)> {
        positive(
            "limits.send_messages_per_second",
            self.send_messages_per_second,
        )?;
        positive("limits.send_message_burst", self.send_message_burst)?;
        positive("limits.send_bytes_per_second", self.send_bytes_per_second)?;
        positive(
            "limits.max_sessions_per_user",
            self.max_sessions_per_user as u64,
        )?;
        let limits = Limits {
            send_messages: Rate::per_second(self.send_messages_per_second, self.send_message_burst),
            send_bytes: Rate::per_second(self.send_bytes_per_second, self.send_byte_burst),
            sessions_per_user: self.max_sessions_per_user,
            session_backlog_bytes: self.max_session_backlog_bytes,
            user_backlog_bytes: self.max_user_backlog_bytes,
        };
        limits.check()?;
        Ok(limits)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct NeighbourhoodSection {
    server_port: Option<u16>,
    neighbours: Vec<NeighbourEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NeighbourEntry {
    address: String,
    fingerprint: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ServerSection {
    host: String,
    port: u16,
    data_dir: PathBuf,
    max_connections: usize,
    name: Option<String>,
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 5000,
            data_dir: "data".into(),
            max_connections: 20_000,
            name: None,
        }
    }
}

/// `register` requests per address by default: a burst of 20, then 10 a
/// minute, so one address cannot flood registration (or a phone with codes)
/// while a few people behind one address can still register.
const REGISTER_PER_ADDRESS: Rate = Rate::per_minute(10, 20);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct OtpSection {
    delivery: String,
    file: Option<PathBuf>,
    command: Option<String>,
    ttl_secs: u64,
    max_tries: u32,
    max_codes_per_window: u32,
    window_secs: u64,
    register_per_address_per_minute: u64,
    register_burst_per_address: u64,
}

impl Default for OtpSection {
    fn default() -> Self {
        let p = OtpPolicy::default();
        Self {
            delivery: "console".into(),
            file: None,
            command: None,
            ttl_secs: (p.ttl_ms / 1000) as u64,
            max_tries: p.max_tries,
            max_codes_per_window: p.max_codes,
            window_secs: (p.window_ms / 1000) as u64,
            register_per_address_per_minute: REGISTER_PER_ADDRESS.per_minute,
            register_burst_per_address: REGISTER_PER_ADDRESS.burst,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct QueueSection {
    message_ttl_days: f64,
    max_messages_per_recipient: u64,
    max_bytes_per_recipient: u64,
    max_messages_per_sender: u64,
    max_bytes_per_sender: u64,
    max_messages_per_neighbour: u64,
    max_bytes_per_neighbour: u64,
}

impl Default for QueueSection {
    fn default() -> Self {
        Self {
            message_ttl_days: 30.0,
            max_messages_per_recipient: 100_000,
            max_bytes_per_recipient: 256 << 20,
            max_messages_per_sender: 25_000,
            max_bytes_per_sender: 64 << 20,
            max_messages_per_neighbour: 10_000_000,
            max_bytes_per_neighbour: 4 << 30,
        }
    }
}

impl ServerConfig {
    /// Where the database is: as configured, or SQLite in the data
    /// directory.
    pub fn database_location(&self) -> Location {
        match &self.database {
            Some(location) => location.clone(),
            None => Location::in_data_dir(&self.data_dir),
        }
    }

    /// The configuration `flags` describe: their file (or the defaults)
    /// with the flags' values put over it. `--neighbours` adds to the
    /// file's neighbours those it does not list already.
    pub fn from_flags(flags: Flags) -> Result<Self, ConfigError> {
        let mut config = match &flags.config {
            Some(path) => Self::load(path)?,
            None => Self::default(),
        };
        if let Some(h) = flags.host {
            config.host = h;
        }
        if let Some(p) = flags.port {
            config.port = p;
        }
        if let Some(d) = flags.data_dir {
            config.data_dir = d;
        }
        if let Some(p) = flags.server_port {
            config.server_port = Some(p);
        }
        if let Some(url) = &flags.database_url {
            let location = Location::parse(url).map_err(|e| ConfigError::Flag {
                flag: "--database-url",
                message: e.to_string(),
            })?;
            config.database = Some(location);
        }
        if let Some(list) = &flags.neighbours {
            let extra = parse_neighbours_flag(list).map_err(|message| ConfigError::Flag {
                flag: "--neighbours",
                message,
            })?;
            for n in extra {
                if !config.neighbours.iter().any(|c| c.address == n.address) {
                    config.neighbours.push(n);
                }
            }
        }
        Ok(config)
    }

    /// Loads a TOML file; relative paths in it are taken from its directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let file: FileConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        Self::from_file_contents(file, base).map_err(|(key, message)| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            message,
        })
    }

    fn from_file_contents(f: FileConfig, base: &Path) -> Result<Self, (&'static str, String)> {
        let code_sink = match f.otp.delivery.as_str() {
            "console" => CodeSink::Console,
            "file" => CodeSink::File(base.join(f.otp.file.ok_or((
                "otp.file",
                "delivery = \"file\" needs otp.file = \"path\"".to_string(),
            ))?)),
            "command" => CodeSink::Command(f.otp.command.ok_or((
                "otp.command",
                "delivery = \"command\" needs otp.command = \"shell command\"".to_string(),
            ))?),
            other => {
                return Err((
                    "otp.delivery",
                    format!("'{other}' is not one of \"console\", \"file\", \"command\""),
                ));
            }
        };
        at_most_a_day("otp.ttl_secs", f.otp.ttl_secs)?;
        positive("otp.max_tries", u64::from(f.otp.max_tries))?;
        positive(
            "otp.max_codes_per_window",
            u64::from(f.otp.max_codes_per_window),
        )?;
        at_most_a_day("otp.window_secs", f.otp.window_secs)?;
        positive(
            "otp.register_per_address_per_minute",
            f.otp.register_per_address_per_minute,
        )?;
        positive(
            "otp.register_burst_per_address",
            f.otp.register_burst_per_address,
        )?;
        positive(
            "queue.max_messages_per_recipient",
            f.queue.max_messages_per_recipient,
        )?;
        positive(
            "queue.max_bytes_per_recipient",
            f.queue.max_bytes_per_recipient,
        )?;
        positive(
            "queue.max_messages_per_sender",
            f.queue.max_messages_per_sender,
        )?;
        positive("queue.max_bytes_per_sender", f.queue.max_bytes_per_sender)?;
        positive("server.max_connections", f.server.max_connections as u64)?;
        positive(
            "queue.max_messages_per_neighbour",
            f.queue.max_messages_per_neighbour,
        )?;
        positive(
            "queue.max_bytes_per_neighbour",
            f.queue.max_bytes_per_neighbour,
        )?;
        let neighbours = f
            .neighbourhood
            .neighbours
            .into_iter()
            .map(|n| neighbour(&n.address, n.fingerprint.as_deref()))
            .collect::<Result<Vec<_>, _>>()?;
        let database = f
            .database
            .url
            .map(|url| match Location::parse(&url) {
                Ok(Location::Sqlite(path)) => Ok(Location::Sqlite(base.join(path))),
                Ok(postgres) => Ok(postgres),
                Err(e) => Err(("database.url", e.to_string())),
            })
            .transpose()?;
        if !(f.queue.message_ttl_days > 0.0 && f.queue.message_ttl_days <= 3650.0) {
            return Err((
                "queue.message_ttl_days",
                "must be more than 0 and at most 3650".into(),
            ));
        }
        Ok(Self {
            host: f.server.host,
            port: f.server.port,
            data_dir: base.join(f.server.data_dir),
            max_connections: f.server.max_connections,
            register_per_address: Rate::per_minute(
                f.otp.register_per_address_per_minute,
                f.otp.register_burst_per_address,
            ),
            otp_policy: OtpPolicy {
                ttl_ms: secs_to_ms(f.otp.ttl_secs),
                max_tries: f.otp.max_tries,
                max_codes: f.otp.max_codes_per_window,
                window_ms: secs_to_ms(f.otp.window_secs),
            },
            code_sink,
            message_ttl_ms: (f.queue.message_ttl_days * 86_400_000.0) as i64,
            quota: Quota {
                max_messages: f.queue.max_messages_per_recipient,
                max_bytes: f.queue.max_bytes_per_recipient,
            },
            sender_quota: Quota {
                max_messages: f.queue.max_messages_per_sender,
                max_bytes: f.queue.max_bytes_per_sender,
            },
            neighbour_quota: Quota {
                max_messages: f.queue.max_messages_per_neighbour,
                max_bytes: f.queue.max_bytes_per_neighbour,
            },
            name: f.server.name,
            server_port: f.neighbourhood.server_port,
            neighbours,
            database,
            limits: f.limits.parse()?,
        })
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

fn neighbour(
    address: &str,
    fingerprint: Option<&str>,
) -> Result<NeighbourConfig, (&'static str, String)> {
    let key = "neighbourhood.neighbours";
    let well_formed = address
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
    if !well_formed {
        return Err((key, format!("'{address}' is not host:port")));
    }
    let fingerprint = match fingerprint {
        Some(f) => Some(Fingerprint::parse(f).ok_or((
            key,
            format!("the fingerprint of {address} is not 64 hex characters"),
        ))?),
        None => None,
    };
    Ok(NeighbourConfig {
        address: address.to_owned(),
        fingerprint,
    })
}

/// A code lives, and a code window lasts, between a second and a day: longer
/// serves no user, and the bound keeps the conversion to milliseconds exact.
fn at_most_a_day(key: &'static str, secs: u64) -> Result<(), (&'static str, String)> {
    positive(key, secs)?;
    if secs > 86_400 {
        return Err((key, "must be at most 86400 (one day)".into()));
    }
    Ok(())
}

/// Only called on values [`at_most_a_day`] has bounded.
fn secs_to_ms(secs: u64) -> i64 {
    i64::try_from(secs).map_or(i64::MAX, |s| s.saturating_mul(1000))
}

fn positive(key: &'static str, v: u64) -> Result<(), (&'static str, String)> {
    if v == 0 {
        Err((key, "must be greater than 0".into()))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ServerConfig, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.toml");
        std::fs::write(&path, text).unwrap();
        ServerConfig::load(&path)
    }

    #[test]
    fn defaults_and_relative_paths() {
        let c = parse("[otp]\ndelivery = \"file\"\nfile = \"codes.txt\"\n").unwrap();
        assert_eq!(c.port, 5000);
        match c.code_sink {
            CodeSink::File(p) => assert!(p.ends_with("codes.txt") && p.is_absolute()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors_name_the_key() {
        let err = parse("[otp]\ndelivery = \"pigeon\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("otp.delivery"), "{err}");
        let err = parse("[server]\nprot = 1\n").unwrap_err().to_string();
        assert!(err.contains("prot"), "{err}");
        let err = parse("[queue]\nmax_messages_per_recipient = 0\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("queue.max_messages_per_recipient"), "{err}");
    }

    #[test]
    fn code_lifetimes_beyond_a_day_are_refused_not_overflowed() {
        for key in ["ttl_secs", "window_secs"] {
            for value in ["86401", "9223372036854775807"] {
                let err = parse(&format!("[otp]\n{key} = {value}\n"))
                    .unwrap_err()
                    .to_string();
                assert!(err.contains(&format!("otp.{key}")), "{err}");
            }
        }
        let c = parse("[otp]\nttl_secs = 86400\nwindow_secs = 86400\n").unwrap();
        assert_eq!(c.otp_policy.ttl_ms, 86_400_000);
        assert_eq!(c.otp_policy.window_ms, 86_400_000);
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.toml");
        std::fs::write(
            &path,
            "[server]\nport = 6000\n\n[neighbourhood]\nneighbours = [{ address = \"a:1\" }]\n",
        )
        .unwrap();
        let flags = Flags {
            config: Some(path),
            host: Some("127.0.0.9".into()),
            server_port: Some(7000),
            neighbours: Some("a:1, b:2,".into()),
            ..Flags::default()
        };
        let c = ServerConfig::from_flags(flags).unwrap();
        assert_eq!((c.host.as_str(), c.port), ("127.0.0.9", 6000));
        assert_eq!(c.server_port, Some(7000));
        let addresses: Vec<&str> = c.neighbours.iter().map(|n| n.address.as_str()).collect();
        assert_eq!(
            addresses,
            ["a:1", "b:2"],
            "a listed neighbour is not added twice"
        );
        let bad = Flags {
            neighbours: Some("nowhere".into()),
            ..Flags::default()
        };
        let err = ServerConfig::from_flags(bad).unwrap_err().to_string();
        assert!(err.starts_with("--neighbours: "), "{err}");
    }
}
