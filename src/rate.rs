//! Token buckets keyed by whoever is limited (a sender, an address): each
//! key has one bucket per measure (messages, bytes, requests), refilled
//! continuously at its rate up to its burst. Time comes from the injected
//! [`Clock`], so tests move it instead of sleeping. Keys whose buckets are
//! full again are forgotten, so memory follows the active keys only.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, RwLock};

use crate::clock::Clock;

/// One bucket's refill rate and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Tokens added per minute; at least 1.
    pub per_minute: u64,
    /// Most tokens held, and what a fresh key starts with; at least 1.
    pub burst: u64,
}

impl Rate {
    pub const fn per_second(per_second: u64, burst: u64) -> Self {
        Self {
            per_minute: per_second.saturating_mul(60),
            burst,
        }
    }

    pub const fn per_minute(per_minute: u64, burst: u64) -> Self {
        Self { per_minute, burst }
    }

    /// Tokens added per second, rounded down.
    pub const fn whole_per_second(&self) -> u64 {
        self.per_minute / 60
    }
}

/// A token in the units buckets count in: a bucket refills by exactly
/// `per_minute` of them each millisecond.
const UNIT: u64 = 60_000;

/// A table of token buckets, `N` measures per key.
pub struct Buckets<K, const N: usize> {
    /// Replaceable while running, so a reloaded rate applies at once.
    rates: RwLock<[Rate; N]>,
    clock: Clock,
    state: Mutex<State<K, N>>,
}

struct State<K, const N: usize> {
    levels: HashMap<K, Level<N>>,
    /// Table size at which full buckets are next forgotten.
    prune_at: usize,
}

/// Tokens counted in [`UNIT`]s.
#[derive(Clone, Copy)]
struct Level<const N: usize> {
    units: [u64; N],
    at_ms: i64,
}

/// Keys held before the first pruning.
const PRUNE_FLOOR: usize = 1024;

impl<K: Hash + Eq + Clone, const N: usize> Buckets<K, N> {
    pub fn new(rates: [Rate; N], clock: Clock) -> Self {
        Self {
            rates: RwLock::new(rates),
            clock,
            state: Mutex::new(State {
                levels: HashMap::new(),
                prune_at: PRUNE_FLOOR,
            }),
        }
    }

    /// Takes `cost` (per measure) from `key`'s buckets, all or none. A
    /// cost above a bucket's burst counts as the burst. On refusal, returns
    /// in how many milliseconds the buckets will hold enough.
    pub fn take(&self, key: &K, cost: [u64; N]) -> Result<(), u64> {
        let now = self.clock.now_ms();
        let rates = self.rates();
        let cost: [u64; N] =
            std::array::from_fn(|i| cost[i].min(rates[i].burst).saturating_mul(UNIT));
        // A std mutex: nothing awaits while it is held.
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let level = match state.levels.get(key) {
            Some(l) => refilled(&rates, *l, now),
            None => full(&rates, now),
        };
        let wait_ms = (0..N)
            .map(|i| {
                let short = cost[i].saturating_sub(level.units[i]);
                short.div_ceil(rates[i].per_minute)
            })
            .max()
            .unwrap_or(0);
        if wait_ms > 0 {
            state.levels.insert(key.clone(), level);
            return Err(wait_ms);
        }
        let units = std::array::from_fn(|i| level.units[i] - cost[i]);
        state.levels.insert(key.clone(), Level { units, ..level });
        prune(&rates, &mut state, now);
        Ok(())
    }

    /// Takes `cost` that was already spent elsewhere (through another
    /// member of a cluster) from `key`'s buckets without refusing it: they
    /// empty at most, and refill as usual.
    pub fn spend(&self, key: &K, cost: [u64; N]) {
        let now = self.clock.now_ms();
        let rates = self.rates();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let level = match state.levels.get(key) {
            Some(l) => refilled(&rates, *l, now),
            None => full(&rates, now),
        };
        let units = std::array::from_fn(|i| {
            let cost = cost[i].min(rates[i].burst).saturating_mul(UNIT);
            level.units[i].saturating_sub(cost)
        });
        state.levels.insert(key.clone(), Level { units, ..level });
        prune(&rates, &mut state, now);
    }

    /// Replaces the rates (a reloaded configuration). Tokens already held
    /// above a smaller burst are cut to it on the key's next use.
    pub fn set_rates(&self, rates: [Rate; N]) {
        *self.rates.write().unwrap_or_else(|p| p.into_inner()) = rates;
    }

    fn rates(&self) -> [Rate; N] {
        *self.rates.read().unwrap_or_else(|p| p.into_inner())
    }

    #[cfg(test)]
    fn keys_held(&self) -> usize {
        self.state.lock().unwrap().levels.len()
    }
}

fn full<const N: usize>(rates: &[Rate; N], now: i64) -> Level<N> {
    Level {
        units: std::array::from_fn(|i| capacity(rates, i)),
        at_ms: now,
    }
}

fn capacity<const N: usize>(rates: &[Rate; N], i: usize) -> u64 {
    rates[i].burst.saturating_mul(UNIT)
}

fn refilled<const N: usize>(rates: &[Rate; N], level: Level<N>, now: i64) -> Level<N> {
    let elapsed_ms = u64::try_from(now - level.at_ms).unwrap_or(0);
    Level {
        units: std::array::from_fn(|i| {
            let added = elapsed_ms.saturating_mul(rates[i].per_minute);
            level.units[i].saturating_add(added).min(capacity(rates, i))
        }),
        at_ms: now.max(level.at_ms),
    }
}

/// Forgets keys whose buckets are full again (a fresh key starts full),
/// once the table has doubled since the last time.
fn prune<K, const N: usize>(rates: &[Rate; N], state: &mut State<K, N>, now: i64) {
    if state.levels.len() < state.prune_at {
        return;
    }
    state.levels.retain(|_, l| {
        let l = refilled(rates, *l, now);
        (0..N).any(|i| l.units[i] < capacity(rates, i))
    });
    state.prune_at = (state.levels.len() * 2).max(PRUNE_FLOOR);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rates() -> [Rate; 2] {
        [Rate::per_second(2, 3), Rate::per_second(1000, 5000)]
    }

    #[test]
    fn a_burst_then_the_rate() {
        let clock = Clock::manual();
        let buckets = Buckets::new(rates(), clock.clone());
        for _ in 0..3 {
            buckets.take(&"a", [1, 10]).unwrap();
        }
        assert_eq!(
            buckets.take(&"a", [1, 10]),
            Err(500),
            "one message per 500 ms"
        );
        buckets.take(&"b", [1, 10]).expect("keys are apart");
        clock.advance_ms(499);
        assert_eq!(buckets.take(&"a", [1, 10]), Err(1));
        clock.advance_ms(1);
        buckets.take(&"a", [1, 10]).unwrap();
    }

    #[test]
    fn every_measure_must_have_room_and_nothing_is_taken_otherwise() {
        let clock = Clock::manual();
        let buckets = Buckets::new(rates(), clock.clone());
        buckets.take(&"a", [1, 4500]).unwrap();
        assert_eq!(buckets.take(&"a", [1, 1000]), Err(500), "bytes are short");
        clock.advance_ms(500);
        buckets.take(&"a", [1, 1000]).unwrap();
        assert_eq!(
            buckets.take(&"a", [1, 9_999_999]),
            Err(5000),
            "a cost above the burst waits for a full bucket"
        );
    }

    #[test]
    fn new_rates_apply_at_once() {
        let clock = Clock::manual();
        let buckets = Buckets::new([Rate::per_minute(1, 2)], clock.clone());
        buckets.take(&"a", [2]).unwrap();
        assert_eq!(buckets.take(&"a", [1]), Err(60_000));
        buckets.set_rates([Rate::per_second(1, 5)]);
        assert_eq!(
            buckets.take(&"a", [1]),
            Err(1000),
            "refills at the new rate"
        );
        assert_eq!(
            buckets.take(&"b", [5]),
            Ok(()),
            "a fresh key gets the new burst"
        );
        buckets.set_rates([Rate::per_minute(1, 1)]);
        clock.advance_ms(180_000);
        buckets.take(&"a", [1]).unwrap();
        assert_eq!(
            buckets.take(&"a", [1]),
            Err(60_000),
            "held tokens cut to the new burst"
        );
    }

    #[test]
    fn slow_rates_are_exact_too() {
        let clock = Clock::manual();
        let buckets = Buckets::new([Rate::per_minute(1, 2)], clock.clone());
        buckets.take(&"a", [2]).unwrap();
        assert_eq!(buckets.take(&"a", [1]), Err(60_000));
        clock.advance_ms(59_999);
        assert_eq!(buckets.take(&"a", [1]), Err(1));
        clock.advance_ms(1);
        buckets.take(&"a", [1]).unwrap();
    }

    #[test]
    fn full_buckets_are_forgotten() {
        let clock = Clock::manual();
        let buckets = Buckets::new(rates(), clock.clone());
        for k in 0..PRUNE_FLOOR {
            buckets.take(&k, [1, 1]).unwrap();
        }
        clock.advance_ms(10_000);
        for k in PRUNE_FLOOR..2 * PRUNE_FLOOR {
            buckets.take(&k, [1, 1]).unwrap();
        }
        assert_eq!(
            buckets.keys_held(),
            PRUNE_FLOOR,
            "the keys refilled since are gone"
        );
    }
}
