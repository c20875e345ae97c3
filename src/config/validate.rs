//! From a parsed file to a [`ServerConfig`]: every value checked, each
//! problem returned as the key it is under and what is wrong with it.

use std::path::Path;

use super::file::{FileConfig, LimitsSection, LogSection, OtpSection};
use super::{LogConfig, NeighbourConfig, ServerConfig};
use crate::auth::code_sink::CodeSink;
use crate::auth::otp::OtpPolicy;
use crate::db::Location;
use crate::db::quota::Quota;
use crate::domain::Fingerprint;
use crate::rate::Rate;
use crate::routing::Limits;
use crate::telemetry::LogFormat;

/// Connections served at once when the file does not say.
const DEFAULT_MAX_CONNECTIONS: usize = 20_000;

/// A problem in the file: the dotted key and a message.
pub(super) type KeyError = (&'static str, String);

/// Checks `f`; relative paths in it are taken from `base`.
pub(super) fn from_file(f: FileConfig, base: &Path) -> Result<ServerConfig, KeyError> {
    let (max_codes_per_address, max_codes_per_phone) = code_caps(&f.otp)?;
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
    let max_connections = f.server.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
    positive("server.max_connections", max_connections as u64)?;
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
    Ok(ServerConfig {
        host: f.server.host,
        port: f.server.port,
        data_dir: base.join(f.server.data_dir),
        max_connections,
        max_connections_set: f.server.max_connections.is_some(),
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
        otp_policy: OtpPolicy {
            ttl_ms: secs_to_ms(f.otp.ttl_secs),
            max_tries: f.otp.max_tries,
            max_codes: f.otp.max_codes_per_window,
            max_codes_per_address,
            max_codes_per_phone,
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
        limits: limits(f.limits)?,
    })
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
    tracing_subscriber::EnvFilter::try_new(&s.level).map_err(|e| {
        (
            "log.level",
            format!("'{}' is not a log filter: {e}", s.level),
        )
    })?;
    Ok(LogConfig {
        format,
        filter: s.level,
    })
}

/// The counts of codes per address and per phone; when not set, they
/// follow `max_codes_per_window`.
fn code_caps(s: &OtpSection) -> Result<(u32, u32), KeyError> {
    let (per_address, per_phone) = OtpPolicy::default_caps(s.max_codes_per_window);
    let per_address = s.max_codes_per_address_per_window.unwrap_or(per_address);
    positive(
        "otp.max_codes_per_address_per_window",
        u64::from(per_address),
    )?;
    let per_phone = s.max_codes_per_phone_per_window.unwrap_or(per_phone);
    let key = "otp.max_codes_per_phone_per_window";
    if per_phone <= per_address {
        return Err((
            key,
            format!(
                "must be more than otp.max_codes_per_address_per_window ({per_address}), \
                 or one address alone could use up a phone's codes"
            ),
        ));
    }
    Ok((per_address, per_phone))
}

fn limits(s: LimitsSection) -> Result<Limits, KeyError> {
    positive(
        "limits.send_messages_per_second",
        s.send_messages_per_second,
    )?;
    positive("limits.send_message_burst", s.send_message_burst)?;
    positive("limits.send_bytes_per_second", s.send_bytes_per_second)?;
    positive(
        "limits.max_sessions_per_user",
        s.max_sessions_per_user as u64,
    )?;
    positive(
        "limits.max_devices_per_account",
        s.max_devices_per_account as u64,
    )?;
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
