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
