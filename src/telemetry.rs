//! Logging set-up, one place for every binary: human-readable lines on
//! standard error (standard output carries what a binary prints for people
//! and scripts), filtered by `RUST_LOG`.

/// Installs the process's log subscriber. `default_filter` applies when
/// `RUST_LOG` is unset or unreadable (`"info"` for servers, `"warn"` for
/// the command-line client). A second call keeps the first set-up.
pub fn init(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| default_filter.into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
