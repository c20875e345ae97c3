//! Whether storage is taking writes, as the last operations found it. An
//! outage (a full disk, a database gone) is logged once when it starts,
//! then reminded at most every [`REMINDER_INTERVAL`] with the count of
//! operations refused meanwhile, and once more when it ends: a thousand
//! refused requests make three log lines, not a thousand.
//!
//! An outage first met as a pooled connection that never came free is
//! logged at once, and PostgreSQL's own reason (the pool keeps it to
//! itself) on a line of its own once one connection tried for it has
//! failed or worked. That connection goes to a server that may be
//! overloaded already, so at most one is tried at a time and at most one
//! per [`REMINDER_INTERVAL`] ([`ProbeGate`]): a pool flapping between
//! timeouts and successes does not open one per flap.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;

use super::{DbError, postgres};

/// Least time between two reminders that an outage goes on.
pub const REMINDER_INTERVAL: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outage {
    Full,
    Unavailable,
}

struct Current {
    /// Which outage this is, so a late cause is told apart from the next.
    number: u64,
    outage: Outage,
    since: Instant,
    last_logged: Instant,
    refused: u64,
}

/// Shared by every clone of a store.
pub struct Health {
    /// A std mutex: held for a few instructions, never across an await.
    /// Shared with the connection tried to learn an outage's cause.
    current: Arc<Mutex<Option<Current>>>,
    /// Outages begun so far.
    begun: AtomicU64,
    /// How to reach PostgreSQL to learn why its pool timed out.
    postgres: Option<PgConnectOptions>,
    probes: Arc<ProbeGate>,
}

impl Health {
    /// `postgres`: the options of a PostgreSQL store, `None` for SQLite.
    pub fn new(postgres: Option<PgConnectOptions>) -> Self {
        Self {
            current: Arc::default(),
            begun: AtomicU64::new(0),
            postgres,
            probes: Arc::default(),
        }
    }

    /// Notes how a write ended, logging when an outage begins, goes on
    /// long enough to be reminded of, or ends.
    pub fn observe_write<T>(&self, result: &Result<T, DbError>) {
        self.observe(result, true);
    }

    /// Notes how a read ended: like a write, except that a read that works
    /// says nothing about whether the disk has room again.
    pub fn observe_read<T>(&self, result: &Result<T, DbError>) {
        self.observe(result, false);
    }

    fn observe<T>(&self, result: &Result<T, DbError>, write: bool) {
        let outage = match result {
            Ok(_) => None,
            Err(DbError::Full(_)) => Some(Outage::Full),
            Err(DbError::Unavailable(_) | DbError::PoolTimedOut | DbError::Connect { .. }) => {
                Some(Outage::Unavailable)
            }
            // One statement's failure says nothing about the store.
            Err(_) => return,
        };
        let mut current = self
            .current
            .lock()
            .expect("never poisoned: no panics inside");
        match (outage, current.as_mut()) {
            (None, None) => {}
            (None, Some(c)) if c.outage == Outage::Full && !write => {}
            (None, Some(c)) => {
                tracing::info!(
                    outage_s = c.since.elapsed().as_secs(),
                    refused = c.refused,
                    "{}",
                    ended(c.outage)
                );
                *current = None;
            }
            (Some(o), Some(c)) if c.outage == o => {
                c.refused += 1;
                if c.last_logged.elapsed() >= REMINDER_INTERVAL {
                    tracing::warn!(
                        outage_s = c.since.elapsed().as_secs(),
                        refused = c.refused,
                        "{}",
                        still(o)
                    );
                    c.last_logged = Instant::now();
                }
            }
            (Some(o), _) => {
                let number = self.begun.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = result {
                    self.log_began(o, e, number);
                }
                let now = Instant::now();
                *current = Some(Current {
                    number,
                    outage: o,
                    since: now,
                    last_logged: now,
                    refused: 1,
                });
            }
        }
    }
}

impl Health {
    /// Logs the start of an outage numbered `number`, and asks PostgreSQL
    /// for its cause when the pool hid it and [`ProbeGate`] allows.
    fn log_began(&self, o: Outage, e: &DbError, number: u64) {
        let (DbError::PoolTimedOut, Some(options)) = (e, &self.postgres) else {
            tracing::error!(error = %e, "{}", began(o));
            return;
        };
        let Some(probe) = self.probes.start(Instant::now()) else {
            tracing::error!(
                error = %format_args!(
                    "no pooled connection came free in time (PostgreSQL is asked why at most \
                     once every {} s: see the cause logged nearby)",
                    REMINDER_INTERVAL.as_secs()
                ),
                "{}",
                began(o)
            );
            return;
        };
        tracing::error!(
            error = "no pooled connection came free in time; trying one connection to learn why",
            "{}",
            began(o)
        );
        let options = options.clone();
        let current = self.current.clone();
        tokio::spawn(async move {
            let cause = match postgres::cause(&options, sqlx::Error::PoolTimedOut).await {
                Some(cause) => postgres::explain(&cause),
                None => "every pooled connection stayed busy, though PostgreSQL answers: it is \
                         overloaded or slow"
                    .into(),
            };
            drop(probe);
            let going_on = current
                .lock()
                .expect("never poisoned: no panics inside")
                .as_ref()
                .is_some_and(|c| c.number == number);
            if going_on {
                tracing::error!(%cause, "why the database cannot be reached");
            } else {
                tracing::info!(%cause, "why the database could not be reached (that outage has ended)");
            }
        });
    }
}

/// Allows one connection at a time, and one per [`REMINDER_INTERVAL`],
/// to be tried for an outage's cause.
#[derive(Default)]
struct ProbeGate {
    /// When the last one started, and whether it is still under way.
    last: Mutex<(Option<Instant>, bool)>,
}

/// A connection tried for a cause; the next may start once it is dropped
/// and [`REMINDER_INTERVAL`] has passed since it started.
struct Probe(Arc<ProbeGate>);

impl ProbeGate {
    fn lock(&self) -> std::sync::MutexGuard<'_, (Option<Instant>, bool)> {
        self.last.lock().expect("never poisoned: no panics inside")
    }

    /// A probe started at `now`, unless one is under way or the last one
    /// started less than [`REMINDER_INTERVAL`] before.
    fn start(self: &Arc<Self>, now: Instant) -> Option<Probe> {
        let mut last = self.lock();
        let (started, under_way) = *last;
        let recent = started.is_some_and(|t| now.saturating_duration_since(t) < REMINDER_INTERVAL);
        if under_way || recent {
            return None;
        }
        *last = (Some(now), true);
        Some(Probe(self.clone()))
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.0.lock().1 = false;
    }
}

fn began(o: Outage) -> &'static str {
    match o {
        Outage::Full => {
            "the database's disk is full: writes are refused with storage_full until space is \
             freed (reads go on); free space on that disk"
        }
        Outage::Unavailable => {
            "the database cannot be reached: requests are refused with storage_unavailable \
             while the server retries"
        }
    }
}

fn still(o: Outage) -> &'static str {
    match o {
        Outage::Full => "the database's disk is still full; writes are being refused",
        Outage::Unavailable => "the database is still unreachable; requests are being refused",
    }
}

fn ended(o: Outage) -> &'static str {
    match o {
        Outage::Full => "the database's disk has room again; writes resumed",
        Outage::Unavailable => "the database is reachable again; requests resumed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// However often an outage begins, one connection at most is tried
    /// for its cause at a time, and one at most per reminder interval.
    #[test]
    fn causes_are_asked_once_at_a_time_and_once_per_interval() {
        let gate = Arc::new(ProbeGate::default());
        let t0 = Instant::now();
        let first = gate.start(t0).expect("the first is tried");
        assert!(gate.start(t0).is_none(), "one is under way");
        drop(first);
        assert!(gate.start(t0 + REMINDER_INTERVAL / 2).is_none(), "too soon");
        let second = gate
            .start(t0 + REMINDER_INTERVAL)
            .expect("an interval later");
        assert!(
            gate.start(t0 + REMINDER_INTERVAL * 3).is_none(),
            "the second is still under way"
        );
        drop(second);
        assert!(gate.start(t0 + REMINDER_INTERVAL * 3).is_some());
    }

    /// A pool flapping between timeouts and successes begins an outage
    /// each time, but only the first tries a connection for its cause.
    #[tokio::test]
    async fn a_flapping_pool_tries_one_connection() {
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = silent.local_addr().unwrap().port();
        let options = PgConnectOptions::new().host("127.0.0.1").port(port);
        let health = Health::new(Some(options));
        for _ in 0..50 {
            health.observe_read::<()>(&Err(DbError::PoolTimedOut));
            health.observe_read::<()>(&Ok(()));
        }
        assert_eq!(health.begun.load(Ordering::Relaxed), 50);
        let (under_way, started) = {
            let last = health.probes.lock();
            (last.1, last.0.is_some())
        };
        assert!(started && under_way, "the first is waiting on PostgreSQL");
        assert!(health.probes.start(Instant::now()).is_none());
    }
}
