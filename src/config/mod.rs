//! Server configuration: a TOML file, overridden by command-line flags (and
//! their `CARRIER_…` environment variables), validated once at load. Errors
//! name the file and the key, or the flag. Relative paths in a file are
//! resolved against the file's directory, so the server does not depend on
//! where it is started.
//!
//! `file` is the TOML shape, `validate` checks it, `flags` puts the
//! command line over it, `check` reports a file's problem by line.

mod check;
mod file;
mod flags;
mod validate;
mod web;

use std::path::{Path, PathBuf};

use crate::auth::code_sink::CodeSink;
use crate::auth::otp::OtpPolicy;
use crate::db::Location;
use crate::db::quota::{Quota, Quotas};
use crate::domain::Fingerprint;
use crate::rate::Rate;
use crate::routing::Limits;

pub use check::check_file;
pub use flags::Flags;
pub use web::{WebConfig, WebTls};

/// A neighbour as configured: where to dial it and, if known, its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighbourConfig {
    /// `host:port` of its server-to-server listener.
    pub address: String,
    /// Its key fingerprint; `None` pins the key seen on first contact.
    pub fingerprint: Option<Fingerprint>,
}

/// How the server logs (`[log]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    pub format: crate::telemetry::LogFormat,
    /// The filter used when `RUST_LOG` is unset.
    pub filter: String,
}

/// Everything `carrier-server` needs to start.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    pub data_dir: PathBuf,
    pub max_connections: usize,
    /// Whether the file set `server.max_connections` (only then is its
    /// clash with the open-file limit worth a warning).
    pub max_connections_set: bool,
    /// Threads of the async runtime that runs sessions, links and the
    /// web server; `None` is the runtime's own default
    /// (`TOKIO_WORKER_THREADS`, else one per core the process may use).
    /// Read once, before the runtime starts.
    pub worker_threads: Option<usize>,
    pub log: LogConfig,
    /// Where `/metrics`, `/healthz` and `/readyz` are served, if anywhere.
    pub metrics_listen: Option<std::net::SocketAddr>,
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
    /// Where the browser client and `/ws` are served, if anywhere.
    pub web: Option<WebConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        validate::from_file(file::FileConfig::default(), Path::new("."))
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
    /// `at` is `:line:column` where the parser stopped, when it said.
    #[error("{path}{at}: {message}")]
    Parse {
        path: PathBuf,
        at: String,
        message: String,
    },
    /// `at` is `:line` where the key is set, when it is found: the same
    /// sentence at start, on reload and from `check-config`, so an editor
    /// can jump to it from any of them.
    #[error("{path}{at}: key '{key}': {message}")]
    Invalid {
        path: PathBuf,
        at: String,
        key: &'static str,
        message: String,
    },
    #[error("{flag}: {message}")]
    Flag { flag: &'static str, message: String },
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

    /// The queue limits the store enforces.
    pub fn quotas(&self) -> Quotas {
        Quotas {
            per_recipient: self.quota,
            per_sender: self.sender_quota,
            per_neighbour: self.neighbour_quota,
        }
    }

    /// Loads a TOML file; relative paths in it are taken from its directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let file: file::FileConfig =
            toml::from_str(&text).map_err(|e| parse_error(path, &text, &e))?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        validate::from_file(file, base).map_err(|(key, message)| ConfigError::Invalid {
            path: path.to_owned(),
            at: line_of(&text, key)
                .map(|line| format!(":{line}"))
                .unwrap_or_default(),
            key,
            message,
        })
    }
}

/// The parser's error on one line: its own rendering quotes the line over
/// several, which reads badly in a log and in `check-config`. What it
/// quoted is kept when its message does not name it (`duplicate key`).
fn parse_error(path: &Path, text: &str, e: &toml::de::Error) -> ConfigError {
    let mut message = e.message().trim_end().replace('\n', "; ");
    let span = e.span();
    let quoted = span
        .clone()
        .and_then(|span| text.get(span))
        .map(str::trim)
        .filter(|q| !q.is_empty() && q.len() <= 80 && !q.contains('\n'));
    if let Some(q) = quoted
        && !message.contains(q)
    {
        message = format!("{message}: `{q}`");
    }
    ConfigError::Parse {
        path: path.to_owned(),
        at: span
            .map(|span| position(text, span.start))
            .unwrap_or_default(),
        message,
    }
}

/// `:line:column` (both from 1, in characters; a byte-order mark, which
/// editors hide, is not counted) of the byte `offset` in `text`.
fn position(text: &str, offset: usize) -> String {
    let before = &text[..text.floor_char_boundary(offset)];
    let line = before.matches('\n').count() + 1;
    let current = before.rsplit('\n').next().unwrap_or("");
    let current = current.strip_prefix('\u{feff}').unwrap_or(current);
    format!(":{line}:{}", current.chars().count() + 1)
}

/// The 1-based line where the dotted `key` (`section.name`) is set.
fn line_of(text: &str, key: &str) -> Option<usize> {
    let (section, name) = key.split_once('.')?;
    let mut current = "";
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(header) = line.strip_prefix('[') {
            current = header.trim_start_matches('[').trim_end_matches(']').trim();
            continue;
        }
        let sets = line
            .strip_prefix(name)
            .is_some_and(|rest| rest.trim_start().starts_with('='));
        if current == section && sets {
            return Some(i + 1);
        }
    }
    None
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
    fn server_names_are_bounded_and_one_printable_line() {
        let longest = "n".repeat(255);
        let c = parse(&format!("[server]\nname = \"{longest}\"\n")).unwrap();
        assert_eq!(c.name.as_deref(), Some(longest.as_str()));
        // 128 two-byte characters: 256 bytes.
        let too_long = "é".repeat(128);
        for (case, name) in [
            ("too long", too_long.as_str()),
            ("empty", ""),
            ("a line break", "a\\nb"),
        ] {
            let err = parse(&format!("[server]\nname = \"{name}\"\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("server.name"), "{case}: {err}");
        }
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
