//! The request budget of a connection that has not logged in yet: a small
//! token bucket per connection. Logging in takes a handful of requests
//! (`register` and `verify`, or `challenge` and a login, perhaps a
//! `link_request`); a connection that sends many more before it has proved
//! who it is only costs the server work that no account answers for, and a
//! flood of them on one connection slowed the pushes to everyone else. Past
//! the budget the connection is answered `rate_limited` and closed. Every
//! frame read counts, malformed ones included. Logged-in sessions have
//! their own, per-user limits instead.

use std::time::{Duration, Instant};

/// Requests a connection may send before login at once.
pub(super) const PRE_LOGIN_BURST: u32 = 32;
/// Requests the budget regains per second before login.
pub(super) const PRE_LOGIN_PER_SECOND: u32 = 1;

/// One connection's remaining budget.
pub(super) struct PreLoginBudget {
    /// Whole requests left; a further one is regained each step after
    /// `since`.
    left: u32,
    since: Instant,
}

impl PreLoginBudget {
    pub(super) fn new(now: Instant) -> Self {
        Self {
            left: PRE_LOGIN_BURST,
            since: now,
        }
    }

    /// Takes one request at `now`; false once the budget is spent.
    pub(super) fn take(&mut self, now: Instant) -> bool {
        let step = Duration::from_secs(1) / PRE_LOGIN_PER_SECOND;
        let elapsed = now.saturating_duration_since(self.since);
        let regained = u32::try_from(elapsed.as_nanos() / step.as_nanos()).unwrap_or(u32::MAX);
        if regained > 0 {
            self.left = self.left.saturating_add(regained).min(PRE_LOGIN_BURST);
            // Below a full budget, fewer than a burst were regained.
            self.since = match self.left {
                PRE_LOGIN_BURST => now,
                _ => self.since + step * regained,
            };
        }
        match self.left.checked_sub(1) {
            Some(left) => {
                self.left = left;
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_one_a_second() {
        let start = Instant::now();
        let mut budget = PreLoginBudget::new(start);
        assert!((0..PRE_LOGIN_BURST).all(|_| budget.take(start)));
        assert!(!budget.take(start), "the burst is spent");
        let later = start + Duration::from_millis(1_500);
        assert!(budget.take(later), "one regained after a second");
        assert!(!budget.take(later));
        let much_later = start + Duration::from_secs(3_600);
        let taken = (0..PRE_LOGIN_BURST * 2)
            .take_while(|_| budget.take(much_later))
            .count();
        assert_eq!(taken, PRE_LOGIN_BURST as usize, "never more than a burst");
    }
}
