//! From a parsed file to a [`ServerConfig`]: every value checked, each
//! problem returned as the key it is under and what is wrong with it.

use std::path::Path;

use super::file::{FileConfig, LimitsSection, LogSection, OtpSection, QueueSection};
use super::{LogConfig, NeighbourConfig, ServerConfig};
use crate::auth::code_sink::CodeSink;
use crate::auth::otp::OtpPolicy;
use crate::db::Location;
use crate::db::quota::Quota;
use crate::domain::Fingerprint;
use crate::protocol::link::MAX_SERVER_NAME;
use crate::rate::Rate;
use crate::routing::Limits;
use crate::telemetry::LogFormat;

/// Connections served at once when the file does not say.
const DEFAULT_MAX_CONNECTIONS: usize = 20_000;

// The largest value each kind of number may be set to. A file is checked
// here whether it is loaded at start or on SIGHUP, so a reload cannot bring
// in what a start would refuse. The maxima are far beyond any real need
// (the benchmark's own configuration stays within them) and well inside
// what the arithmetic on them can hold: a limit in the trillions is a typo,
// and one meant as "no limit" only hides how much a user may take.

/// Counts of messages (queues, send rates) and `register` rates.
const MAX_COUNT: u64 = 1_000_000_000;
/// Sizes in bytes (queues, send rates, unsent bytes): 1 TiB.
const MAX_BYTES: u64 = 1 << 40;
/// Connections per server, and sessions per user.
const MAX_CONNECTIONS: u64 = 1_000_000;
/// Threads of the runtime: far more than any machine has cores.
const MAX_WORKER_THREADS: u64 = 1024;
/// Devices per account: the protocol's own limit on a device list.
const MAX_DEVICES: u64 = 32;
/// Wrong tries at one code: beyond a hundred, six digits protect little.
const MAX_TRIES: u64 = 100;
/// Codes per key and window.
const MAX_CODES: u64 = 1_000_000;
/// Codes per address or per phone and window.
const MAX_CODES_IN_ALL: u64 = 100_000_000;
/// Shortest and longest time a message may wait: a second, ten years.
const MESSAGE_TTL_DAYS: std::ops::RangeInclusive<f64> = (1.0 / 86_400.0)..=3650.0;

/// A problem in the file: the dotted key and a message.
pub(super) type KeyError = (&'static str, String);

/// Checks `f`; relative paths in it are taken from `base`.
pub(super) fn from_file(f: FileConfig, base: &Path) -> Result<ServerConfig, KeyError> {
    let otp_policy = otp_policy(&f.otp)?;
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
    let q = &f.queue;
    for (key, value, max) in [
        (
            "otp.register_per_address_per_minute",
            f.otp.register_per_address_per_minute,
            MAX_COUNT,
        ),
        (
            "otp.register_burst_per_address",
            f.otp.register_burst_per_address,
            MAX_COUNT,
        ),
        (
            "queue.max_messages_per_recipient",
            q.max_messages_per_recipient,
            MAX_COUNT,
        ),
        (
            "queue.max_bytes_per_recipient",
            q.max_bytes_per_recipient,
            MAX_BYTES,
        ),
        (
            "queue.max_messages_per_neighbour",
            q.max_messages_per_neighbour,
            MAX_COUNT,
        ),
        (
            "queue.max_bytes_per_neighbour",
            q.max_bytes_per_neighbour,
            MAX_BYTES,
        ),
    ] {
        within(key, value, max)?;
    }
    let max_connections = f.server.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
    within(
        "server.max_connections",
        max_connections as u64,
        MAX_CONNECTIONS,
    )?;
    if let Some(threads) = f.server.worker_threads {
        within("server.worker_threads", threads as u64, MAX_WORKER_THREADS)?;
    }
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
    let message_ttl_ms = message_ttl_ms(f.queue.message_ttl_days)?;
    Ok(ServerConfig {
        host: f.server.host,
        port: f.server.port,
        data_dir: base.join(f.server.data_dir),
        max_connections,
        max_connections_set: f.server.max_connections.is_some(),
        worker_threads: f.server.worker_threads,
        log: log(f.log)?,
        metrics_listen: f
            .metrics
            .listen
            .map(|a| {
                a.parse().map_err(|_| {
                    (
                        "metrics.listen",
                        format!("'{a}' is not an address such as 127.0.0.1:9464"),
                    )
                })
            })
            .transpose()?,
        register_per_address: Rate::per_minute(
            f.otp.register_per_address_per_minute,
            f.otp.register_burst_per_address,
        ),
        otp_policy,
        code_sink,
        message_ttl_ms,
        quota: Quota {
            max_messages: f.queue.max_messages_per_recipient,
            max_bytes: f.queue.max_bytes_per_recipient,
        },
        sender_quota: sender_quota(&f.queue)?,
        neighbour_quota: Quota {
            max_messages: f.queue.max_messages_per_neighbour,
            max_bytes: f.queue.max_bytes_per_neighbour,
        },
        name: f.server.name.map(server_name).transpose()?,
        server_port: f.neighbourhood.server_port,
        neighbours,
        database,
        web: super::web::from_section(f.web, base)?,
        limits: limits(f.limits)?,
    })
}

/// `[server] name`: shown to people in `list` across the neighbourhood and
/// signed into every directory entry, so it must be one that neighbours
/// take (at most [`MAX_SERVER_NAME`] bytes) and that prints as one line.
fn server_name(name: String) -> Result<String, KeyError> {
    if name.trim().is_empty() {
        return Err(("server.name", "is empty".into()));
    }
    if name.len() > MAX_SERVER_NAME {
        return Err((
            "server.name",
            format!(
                "is {} bytes long; a server name is at most {MAX_SERVER_NAME} bytes of UTF-8",
                name.len()
            ),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err((
            "server.name",
            "holds a control character (a line break, a tab…); use one printable line".into(),
        ));
    }
    Ok(name)
}

fn log(s: LogSection) -> Result<LogConfig, KeyError> {
    let format = match s.format.as_str() {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            return Err((
                "log.format",
                format!("'{other}' is not one of \"text\", \"json\""),
            ));
        }
    };
    log_filter(&s.level)?;
    Ok(LogConfig {
        format,
        filter: s.level,
    })
}

/// A log filter as `RUST_LOG` writes it, but each part either a level or
/// `target=level`: a bare word is taken by the filter as a target to log
/// at every level, with nothing else logged, so a misspelt level would
/// silence the server.
fn log_filter(level: &str) -> Result<(), KeyError> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    let refuse = |why: String| Err(("log.level", format!("'{level}' is not a log filter: {why}")));
    if level.trim().is_empty() {
        return refuse("name a level, such as \"info\"".into());
    }
    // Empty parts (a trailing comma) are skipped by the filter; a part with
    // `=` or a `[span]` names what it filters; a bare part must be a level,
    // by name or by number as the filter reads them.
    let level_alone = |part: &str| {
        LEVELS.iter().any(|l| l.eq_ignore_ascii_case(part))
            || part
                .parse::<tracing_subscriber::filter::LevelFilter>()
                .is_ok()
    };
    for part in level.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if !part.contains('=') && !part.contains('[') && !level_alone(part) {
            return refuse(format!(
                "'{part}' is not a level (one of {}), nor target=level",
                LEVELS.join(", ")
            ));
        }
    }
    tracing_subscriber::EnvFilter::try_new(level)
        .map(drop)
        .or_else(|e| refuse(e.to_string()))
}

/// What one sender may hold in one recipient's queue: a quarter of the
/// queue when not set, so lowering the queue lowers it too. A share set
/// above the queue counts as the whole queue: files copied from the
/// example before the share followed the queue set 25000 and 64 MiB
/// whatever their queue, and must still start.
fn sender_quota(q: &QueueSection) -> Result<Quota, KeyError> {
    let share = |key, set: Option<u64>, queue: u64, max| {
        let Some(value) = set else {
            return Ok((queue / 4).max(1));
        };
        within(key, value, max)?;
        Ok(value.min(queue))
    };
    Ok(Quota {
        max_messages: share(
            "queue.max_messages_per_sender",
            q.max_messages_per_sender,
            q.max_messages_per_recipient,
            MAX_COUNT,
        )?,
        max_bytes: share(
            "queue.max_bytes_per_sender",
            q.max_bytes_per_sender,
            q.max_bytes_per_recipient,
            MAX_BYTES,
        )?,
    })
}

/// The `[otp]` limits; the counts per address and per phone, when not
/// set, follow `max_codes_per_window`.
fn otp_policy(s: &OtpSection) -> Result<OtpPolicy, KeyError> {
    at_most_a_day("otp.ttl_secs", s.ttl_secs)?;
    at_most_a_day("otp.window_secs", s.window_secs)?;
    within("otp.max_tries", u64::from(s.max_tries), MAX_TRIES)?;
    let max_codes = s.max_codes_per_window;
    within("otp.max_codes_per_window", u64::from(max_codes), MAX_CODES)?;
    let (per_address, per_phone) = OtpPolicy::default_caps(max_codes);
    let per_address = s.max_codes_per_address_per_window.unwrap_or(per_address);
    let key = "otp.max_codes_per_address_per_window";
    within(key, u64::from(per_address), MAX_CODES_IN_ALL)?;
    let per_phone = s.max_codes_per_phone_per_window.unwrap_or(per_phone);
    let key = "otp.max_codes_per_phone_per_window";
    within(key, u64::from(per_phone), MAX_CODES_IN_ALL)?;
    if per_phone <= per_address {
        return Err((
            key,
            format!(
                "must be more than otp.max_codes_per_address_per_window ({per_address}), \
                 or one address alone could use up a phone's codes"
            ),
        ));
    }
    Ok(OtpPolicy {
        ttl_ms: secs_to_ms(s.ttl_secs),
        max_tries: s.max_tries,
        max_codes,
        max_codes_per_address: per_address,
        max_codes_per_phone: per_phone,
        window_ms: secs_to_ms(s.window_secs),
    })
}

/// A message waits at least a second (a shorter life would expire it
/// before its recipient could fetch it) and at most ten years.
fn message_ttl_ms(days: f64) -> Result<i64, KeyError> {
    if !MESSAGE_TTL_DAYS.contains(&days) {
        return Err((
            "queue.message_ttl_days",
            "must be at least 1 second (0.0000116 days) and at most 3650 days".into(),
        ));
    }
    // At least 1000 and at most 3.2e11: exact enough, never out of range.
    Ok((days * 86_400_000.0).round() as i64)
}

fn limits(s: LimitsSection) -> Result<Limits, KeyError> {
    for (key, value, max) in [
        (
            "limits.send_messages_per_second",
            s.send_messages_per_second,
            MAX_COUNT,
        ),
        ("limits.send_message_burst", s.send_message_burst, MAX_COUNT),
        (
            "limits.send_bytes_per_second",
            s.send_bytes_per_second,
            MAX_BYTES,
        ),
        ("limits.send_byte_burst", s.send_byte_burst, MAX_BYTES),
        (
            "limits.max_sessions_per_user",
            s.max_sessions_per_user as u64,
            MAX_CONNECTIONS,
        ),
        (
            "limits.max_session_backlog_bytes",
            s.max_session_backlog_bytes as u64,
            MAX_BYTES,
        ),
        (
            "limits.max_user_backlog_bytes",
            s.max_user_backlog_bytes as u64,
            MAX_BYTES,
        ),
        (
            "limits.max_devices_per_account",
            s.max_devices_per_account as u64,
            MAX_DEVICES,
        ),
    ] {
        within(key, value, max)?;
    }
    let limits = Limits {
        send_messages: Rate::per_second(s.send_messages_per_second, s.send_message_burst),
        send_bytes: Rate::per_second(s.send_bytes_per_second, s.send_byte_burst),
        sessions_per_user: s.max_sessions_per_user,
        session_backlog_bytes: s.max_session_backlog_bytes,
        user_backlog_bytes: s.max_user_backlog_bytes,
        devices_per_account: s.max_devices_per_account,
        ..Limits::default()
    };
    limits.check()?;
    Ok(limits)
}

/// A neighbour's address and optional pinned fingerprint, checked.
pub(super) fn neighbour(
    address: &str,
    fingerprint: Option<&str>,
) -> Result<NeighbourConfig, KeyError> {
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
fn at_most_a_day(key: &'static str, secs: u64) -> Result<(), KeyError> {
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

fn positive(key: &'static str, v: u64) -> Result<(), KeyError> {
    if v == 0 {
        Err((key, "must be greater than 0".into()))
    } else {
        Ok(())
    }
}

/// A count or size: at least 1, at most `max`.
fn within(key: &'static str, v: u64, max: u64) -> Result<(), KeyError> {
    positive(key, v)?;
    if v > max {
        return Err((key, format!("must be at most {max}")));
    }
    Ok(())
}
