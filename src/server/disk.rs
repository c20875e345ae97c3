//! A warning before the data directory's disk fills: checked every
//! [`CHECK_EVERY`], logged when free space falls below [`LOW_PERCENT`],
//! reminded every [`REMIND_EVERY`] while it stays low, and once more when
//! there is room again. (A full disk itself is reported by the store.)

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// How often free space is looked at.
pub const CHECK_EVERY: Duration = Duration::from_secs(60);
/// Below this share of free space the disk counts as nearly full.
pub const LOW_PERCENT: u64 = 10;
/// How often a disk that stays nearly full is mentioned again.
pub const REMIND_EVERY: Duration = Duration::from_secs(3600);

/// What a check found worth logging.
#[derive(Debug, PartialEq, Eq)]
enum Event {
    Low,
    StillLow,
    Recovered,
}

/// Whether the disk was low at the last check, and when that was last said.
#[derive(Debug, Default)]
struct Watch {
    low_since_said: Option<Instant>,
}

impl Watch {
    fn observe(&mut self, free: u64, total: u64, now: Instant) -> Option<Event> {
        let low = total > 0 && free.saturating_mul(100) < total.saturating_mul(LOW_PERCENT);
        match (low, self.low_since_said) {
            (true, None) => {
                self.low_since_said = Some(now);
                Some(Event::Low)
            }
            (true, Some(said)) if now.duration_since(said) >= REMIND_EVERY => {
                self.low_since_said = Some(now);
                Some(Event::StillLow)
            }
            (false, Some(_)) => {
                self.low_since_said = None;
                Some(Event::Recovered)
            }
            _ => None,
        }
    }
}

/// Watches the disk under `dir` until `shutdown`.
pub(super) async fn watch(dir: PathBuf, shutdown: CancellationToken) {
    let mut watch = Watch::default();
    let mut tick = tokio::time::interval(CHECK_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Ok(stat) = rustix::fs::statvfs(&dir) else {
            continue;
        };
        let free = stat.f_bavail.saturating_mul(stat.f_frsize);
        let total = stat.f_blocks.saturating_mul(stat.f_frsize);
        let free_mib = free >> 20;
        match watch.observe(free, total, Instant::now()) {
            Some(Event::Low) => tracing::warn!(
                dir = %dir.display(), free_mib,
                "the data directory's disk is nearly full; free space before writes are refused"
            ),
            Some(Event::StillLow) => tracing::warn!(
                dir = %dir.display(), free_mib,
                "the data directory's disk is still nearly full"
            ),
            Some(Event::Recovered) => tracing::info!(
                dir = %dir.display(), free_mib,
                "the data directory's disk has room again"
            ),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn low_is_said_once_then_reminded_hourly_and_recovery_once() {
        let t = Instant::now();
        let mut w = Watch::default();
        assert_eq!(w.observe(50, 100, t), None);
        assert_eq!(w.observe(9, 100, t), Some(Event::Low));
        assert_eq!(w.observe(5, 100, t + CHECK_EVERY), None);
        assert_eq!(w.observe(5, 100, t + REMIND_EVERY), Some(Event::StillLow));
        assert_eq!(
            w.observe(10, 100, t + REMIND_EVERY + CHECK_EVERY),
            Some(Event::Recovered)
        );
        assert_eq!(w.observe(10, 100, t + REMIND_EVERY * 2), None);
    }
}
