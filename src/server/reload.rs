//! SIGHUP: read the configuration again and apply what can change while
//! sessions stay up (limits on sessions, unsent bytes and send rates, the
//! one-time code delivery, the log filter, the neighbours: each one added
//! is dialled and each one removed has its link ended, while every other
//! link stays up).
//! A file with errors is refused and the running configuration kept; every
//! change is logged, and a change that needs a restart says so.

use std::sync::Arc;

use tokio::signal::unix::Signal;
use tokio_util::sync::CancellationToken;

use crate::auth::code_sink::CodeSink;
use crate::config::{Flags, ServerConfig};
use crate::routing::Limits;
use crate::telemetry::LogFilter;

use super::ServerState;

/// What a reload needs: the flags the server started with (naming the
/// file) and the handle on the log filter.
pub struct Reload {
    pub flags: Flags,
    pub log: Option<LogFilter>,
}

/// Reloads on each SIGHUP in `hangups` until `shutdown`.
pub(super) async fn on_hangup(
    mut hangups: Signal,
    reload: Reload,
    mut current: ServerConfig,
    state: Arc<ServerState>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            got = hangups.recv() => if got.is_none() { return },
        }
        match ServerConfig::from_flags(reload.flags.clone()) {
            Err(e) => tracing::error!(
                error = %e,
                "configuration reload refused; the running configuration stays in force"
            ),
            Ok(mut new) => {
                apply(&current, &new, &state, reload.log.as_ref());
                if current.neighbours != new.neighbours
                    && !change_neighbours(&state, new.neighbours.clone()).await
                {
                    // Not applied: the next reload compares with what runs.
                    new.neighbours = current.neighbours.clone();
                }
                current = new;
                tracing::info!("configuration reloaded");
            }
        }
    }
}

fn apply(old: &ServerConfig, new: &ServerConfig, state: &ServerState, log: Option<&LogFilter>) {
    if old.limits != new.limits {
        state.router.apply_limits(new.limits);
        let (before, after) = (by_key(&old.limits), by_key(&new.limits));
        for ((key, from), (_, to)) in before.into_iter().zip(after) {
            if from != to {
                tracing::info!(key, from, to, "limit changed");
            }
        }
    }
    if old.code_sink != new.code_sink {
        state.otp.set_sink(new.code_sink.clone());
        log_code_delivery(&new.code_sink);
    }
    if old.log.filter != new.log.filter {
        match log {
            Some(handle) => match handle.set(&new.log.filter) {
                Ok(()) => tracing::info!(level = %new.log.filter, "log level changed"),
                Err(e) => tracing::error!(error = %e, "the new log level could not be set"),
            },
            None => {
                tracing::warn!("log.level changed, but RUST_LOG sets the level of this process")
            }
        }
    }
    let restart_needed = [
        ("log.format", old.log.format != new.log.format),
        (
            "otp (other than delivery)",
            format!("{:?}", old.otp_policy) != format!("{:?}", new.otp_policy),
        ),
        (
            "queue",
            format!(
                "{:?}{:?}{:?}",
                old.quota, old.sender_quota, old.neighbour_quota
            ) != format!(
                "{:?}{:?}{:?}",
                new.quota, new.sender_quota, new.neighbour_quota
            ) || old.message_ttl_ms != new.message_ttl_ms,
        ),
        (
            "neighbourhood.server_port",
            old.server_port != new.server_port,
        ),
        ("web", old.web != new.web),
        (
            "server.worker_threads",
            old.worker_threads != new.worker_threads,
        ),
        (
            "server, database or metrics addresses",
            (
                &old.host,
                old.port,
                &old.data_dir,
                &old.database,
                old.metrics_listen,
            ) != (
                &new.host,
                new.port,
                &new.data_dir,
                &new.database,
                new.metrics_listen,
            ),
        ),
    ];
    for (section, changed) in restart_needed {
        if changed {
            tracing::warn!(section, "this change takes effect at the next restart");
        }
    }
}

/// The limits under the `[limits]` keys that set them, so a change is
/// logged as an operator wrote it. Taken apart field by field, so a limit
/// added later cannot be left out unnoticed; `claim_devices` has no key.
fn by_key(limits: &Limits) -> [(&'static str, u64); 8] {
    let Limits {
        send_messages,
        send_bytes,
        sessions_per_user,
        session_backlog_bytes,
        user_backlog_bytes,
        devices_per_account,
        claim_devices: _,
    } = *limits;
    [
        (
            "limits.send_messages_per_second",
            send_messages.whole_per_second(),
        ),
        ("limits.send_message_burst", send_messages.burst),
        (
            "limits.send_bytes_per_second",
            send_bytes.whole_per_second(),
        ),
        ("limits.send_byte_burst", send_bytes.burst),
        ("limits.max_sessions_per_user", sessions_per_user as u64),
        (
            "limits.max_session_backlog_bytes",
            session_backlog_bytes as u64,
        ),
        ("limits.max_user_backlog_bytes", user_backlog_bytes as u64),
        ("limits.max_devices_per_account", devices_per_account as u64),
    ]
}

/// Where codes go now, in the `[otp]` keys that say so. The file is
/// quoted: a path with spaces must not split the line for whatever reads
/// the log. The command is not logged at all: operators put gateway
/// credentials in it, and the info log is read more widely than the
/// configuration file.
fn log_code_delivery(sink: &CodeSink) {
    match sink {
        CodeSink::Console => {
            tracing::info!(delivery = "console", "one-time code delivery changed")
        }
        CodeSink::File(file) => tracing::info!(
            delivery = "file",
            file = ?file,
            "one-time code delivery changed"
        ),
        CodeSink::Command(_) => {
            tracing::info!(delivery = "command", "one-time code delivery changed")
        }
    }
}

/// Adds and removes neighbours; returns whether it could. Before the links
/// run (a hangup during start-up) it cannot: the links start with the
/// neighbours the server started with, and a later reload applies the
/// change.
async fn change_neighbours(
    state: &ServerState,
    wanted: Vec<crate::config::NeighbourConfig>,
) -> bool {
    match state.links.get() {
        Some(links) => {
            links.reconcile(wanted).await;
            true
        }
        None => {
            tracing::warn!(
                "neighbourhood.neighbours changed before the links started; send SIGHUP again once they run, or it takes effect at the next restart"
            );
            false
        }
    }
}
