//! Telling the operator that a neighbour stays unreachable: a warning once
//! it has been down for [`FIRST_WARNING`], with the messages waiting for
//! it, then again after twice as long each time (at most every
//! [`LONGEST_GAP`]), so an outage of days is a few lines, not thousands.

use std::time::{Duration, Instant};

/// How long a neighbour may be unreachable before the first warning
/// (restarts and brief network trouble stay quiet).
pub const FIRST_WARNING: Duration = Duration::from_secs(30);
/// The longest gap between two warnings about one outage.
pub const LONGEST_GAP: Duration = Duration::from_secs(3600);

/// One neighbour's current outage, if any.
#[derive(Debug, Default)]
pub struct Outage {
    /// When it started, and when the next warning is due.
    current: Option<(Instant, Duration)>,
}

impl Outage {
    /// Notes a failed attempt at `now`; returns how long the neighbour has
    /// been unreachable when a warning is due.
    pub fn failed(&mut self, now: Instant) -> Option<Duration> {
        let (since, due) = self.current.get_or_insert((now, FIRST_WARNING));
        let down = now.saturating_duration_since(*since);
        if down < *due {
            return None;
        }
        *due = (down * 2).min(down + LONGEST_GAP);
        Some(down)
    }

    /// Notes that the neighbour answered; returns how long it was down
    /// when its outage was warned about, so that "reachable again" only
    /// ever ends a warning the operator has seen.
    pub fn reached(&mut self, now: Instant) -> Option<Duration> {
        self.current
            .take()
            .filter(|(_, due)| *due > FIRST_WARNING)
            .map(|(since, _)| now.saturating_duration_since(since))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_come_at_a_falling_rate() {
        let start = Instant::now();
        let mut outage = Outage::default();
        let mut warned = Vec::new();
        for s in (0..20_000).step_by(5) {
            if let Some(down) = outage.failed(start + Duration::from_secs(s)) {
                warned.push(down.as_secs());
            }
        }
        assert_eq!(warned[..5], [30, 60, 120, 240, 480], "{warned:?}");
        let gaps: Vec<u64> = warned.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.iter().all(|g| *g <= 3600), "{gaps:?}");
        assert!(
            outage
                .reached(start + Duration::from_secs(20_000))
                .is_some()
        );
        assert_eq!(outage.failed(start + Duration::from_secs(20_001)), None);
    }

    #[test]
    fn an_outage_too_short_to_warn_about_ends_quietly() {
        let start = Instant::now();
        let mut outage = Outage::default();
        assert_eq!(outage.reached(start), None, "no outage at all");
        assert_eq!(outage.failed(start), None);
        assert_eq!(outage.failed(start + Duration::from_secs(29)), None);
        assert_eq!(outage.reached(start + Duration::from_secs(29)), None);
        assert_eq!(
            outage.failed(start + Duration::from_secs(40)),
            None,
            "a new outage"
        );
        assert!(outage.failed(start + Duration::from_secs(70)).is_some());
        assert_eq!(
            outage.reached(start + Duration::from_secs(75)),
            Some(Duration::from_secs(35))
        );
    }
}
