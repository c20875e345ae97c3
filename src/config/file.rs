//! The shape of the TOML file: one struct per `[section]`, each with the
//! defaults a missing key takes. Nothing here is checked; `validate` turns
//! a parsed file into a [`ServerConfig`](super::ServerConfig).
//!
//! To add a key: a field in its section (and its default), then its check
//! and its place in `validate::from_file`.

use std::path::PathBuf;

use serde::Deserialize;

use crate::auth::otp::OtpPolicy;
use crate::rate::Rate;
use crate::routing::Limits;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub otp: OtpSection,
    #[serde(default)]
    pub queue: QueueSection,
    #[serde(default)]
    pub neighbourhood: NeighbourhoodSection,
    #[serde(default)]
    pub database: DatabaseSection,
    #[serde(default)]
    pub limits: LimitsSection,
    #[serde(default)]
    pub log: LogSection,
    #[serde(default)]
    pub metrics: MetricsSection,
    #[serde(default)]
    pub web: WebSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct WebSection {
    /// `host:port` of the browser client and `/ws`; none serves neither.
    pub listen: Option<String>,
    /// PEM certificate chain and private key for HTTPS.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Further allowed `Origin`s (a reverse proxy's public address).
    pub origins: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct MetricsSection {
    /// `host:port` of the HTTP endpoint; none serves no metrics.
    pub listen: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct LogSection {
    /// "text" or "json".
    pub format: String,
    /// A `RUST_LOG`-style filter; `RUST_LOG` itself wins when set.
    pub level: String,
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            format: "text".into(),
            level: crate::telemetry::SERVER_FILTER.into(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct DatabaseSection {
    pub url: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct LimitsSection {
    pub send_messages_per_second: u64,
    pub send_message_burst: u64,
    pub send_bytes_per_second: u64,
    pub send_byte_burst: u64,
    pub max_sessions_per_user: usize,
    pub max_session_backlog_bytes: usize,
    pub max_user_backlog_bytes: usize,
    pub max_devices_per_account: usize,
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
            max_devices_per_account: l.devices_per_account,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct NeighbourhoodSection {
    pub server_port: Option<u16>,
    pub neighbours: Vec<NeighbourEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NeighbourEntry {
    pub address: String,
    pub fingerprint: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct ServerSection {
    pub host: String,
    pub port: u16,
    pub data_dir: PathBuf,
    /// `None` when the operator left it out (the default applies).
    pub max_connections: Option<usize>,
    pub name: Option<String>,
    /// `None`: the runtime's own default.
    pub worker_threads: Option<usize>,
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 5000,
            data_dir: "data".into(),
            max_connections: None,
            name: None,
            worker_threads: None,
        }
    }
}

/// `register` requests per address by default: a burst of 20, then 10 a
/// minute, so one address cannot flood registration (or a phone with codes)
/// while a few people behind one address can still register.
const REGISTER_PER_ADDRESS: Rate = Rate::per_minute(10, 20);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct OtpSection {
    pub delivery: String,
    pub file: Option<PathBuf>,
    pub command: Option<String>,
    pub ttl_secs: u64,
    pub max_tries: u32,
    pub max_codes_per_window: u32,
    /// `None` follows `max_codes_per_window` (see `OtpPolicy::default_caps`).
    pub max_codes_per_address_per_window: Option<u32>,
    pub max_codes_per_phone_per_window: Option<u32>,
    pub window_secs: u64,
    pub register_per_address_per_minute: u64,
    pub register_burst_per_address: u64,
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
            max_codes_per_address_per_window: None,
            max_codes_per_phone_per_window: None,
            window_secs: (p.window_ms / 1000) as u64,
            register_per_address_per_minute: REGISTER_PER_ADDRESS.per_minute,
            register_burst_per_address: REGISTER_PER_ADDRESS.burst,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct QueueSection {
    pub message_ttl_days: f64,
    pub max_messages_per_recipient: u64,
    pub max_bytes_per_recipient: u64,
    /// A quarter of `max_messages_per_recipient` when not set.
    pub max_messages_per_sender: Option<u64>,
    /// A quarter of `max_bytes_per_recipient` when not set.
    pub max_bytes_per_sender: Option<u64>,
    pub max_messages_per_neighbour: u64,
    pub max_bytes_per_neighbour: u64,
}

impl Default for QueueSection {
    fn default() -> Self {
        Self {
            message_ttl_days: 30.0,
            max_messages_per_recipient: 100_000,
            max_bytes_per_recipient: 256 << 20,
            max_messages_per_sender: None,
            max_bytes_per_sender: None,
            max_messages_per_neighbour: 10_000_000,
            max_bytes_per_neighbour: 4 << 30,
        }
    }
}
