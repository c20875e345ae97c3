//! Logging set-up, one place for every binary: lines on standard error
//! (standard output carries what a binary prints for people and scripts),
//! human-readable or JSON, filtered by `RUST_LOG`. Colour only when
//! standard error is a terminal and `NO_COLOR` is unset, so files and
//! journals get plain text.

use std::io::IsTerminal;

/// The server's default: Carrier's own events from `info`, libraries'
/// from `warn` (their `info` lines are about their internals).
pub const SERVER_FILTER: &str = "warn,carrier=info";

/// The command-line client's default: no log lines at all. Its standard
/// error is for the person at the terminal (an error, a warning, a notice,
/// each one line in the command's own words); a log line there, with its
/// time stamp and module path, would repeat one of them or break the line
/// being edited in `carrier chat`. `RUST_LOG` still turns diagnostics on.
pub const CLIENT_FILTER: &str = "off";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One readable line per event.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Installs the process's log subscriber as text. `default_filter` applies
/// when `RUST_LOG` is unset or unreadable ([`SERVER_FILTER`] for servers,
/// [`CLIENT_FILTER`] for the command-line client). A second call keeps the first
/// set-up.
pub fn init(default_filter: &str) {
    let _ = init_with(default_filter, LogFormat::Text);
}

/// [`init`] in the given format. Returns the handle that changes the
/// filter later (a configuration reload), unless `RUST_LOG` chose it.
pub fn init_with(default_filter: &str, format: LogFormat) -> Option<LogFilter> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let from_env = tracing_subscriber::EnvFilter::try_from_default_env().ok();
    let chosen_by_env = from_env.is_some();
    let filter = from_env.unwrap_or_else(|| default_filter.into());
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let lines = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(filter);
    let installed = match format {
        LogFormat::Text => registry.with(lines.with_ansi(colour())).try_init(),
        LogFormat::Json => registry.with(lines.json()).try_init(),
    };
    (installed.is_ok() && !chosen_by_env).then_some(LogFilter(handle))
}

/// Changes the log filter of a running process.
pub struct LogFilter(
    tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>,
);

impl LogFilter {
    /// Replaces the filter with `filter` (a `RUST_LOG`-style string).
    pub fn set(&self, filter: &str) -> Result<(), String> {
        let parsed = tracing_subscriber::EnvFilter::try_new(filter).map_err(|e| e.to_string())?;
        self.0.reload(parsed).map_err(|e| e.to_string())
    }
}

/// Colour codes only for a person at a terminal who has not asked for none
/// (<https://no-color.org>: any non-empty `NO_COLOR`).
fn colour() -> bool {
    let refused = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !refused && std::io::stderr().is_terminal()
}

/// A warning that may repeat often (every refused connection, say) but is
/// logged at most once per interval, with the number held back since.
pub struct Throttle {
    every: std::time::Duration,
    state: std::sync::Mutex<(Option<std::time::Instant>, u64)>,
}

impl Throttle {
    pub const fn new(every: std::time::Duration) -> Self {
        Self {
            every,
            state: std::sync::Mutex::new((None, 0)),
        }
    }

    /// `Some(held back)` when the event is to be logged now, counting it;
    /// `None` (and one more held back) while the interval runs.
    pub fn ready(&self) -> Option<u64> {
        // A std mutex: nothing awaits while it is held.
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (last, held) = &mut *state;
        let now = std::time::Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < self.every) {
            *held += 1;
            return None;
        }
        *last = Some(now);
        Some(std::mem::take(held))
    }
}

#[cfg(test)]
mod tests {
    use super::Throttle;

    #[test]
    fn a_throttle_logs_once_per_interval_and_counts_the_rest() {
        let throttle = Throttle::new(std::time::Duration::from_secs(3600));
        assert_eq!(throttle.ready(), Some(0));
        assert_eq!(throttle.ready(), None);
        assert_eq!(throttle.ready(), None);
        let always = Throttle::new(std::time::Duration::ZERO);
        assert_eq!(always.ready(), Some(0));
        assert_eq!(always.ready(), Some(0));
    }
}
