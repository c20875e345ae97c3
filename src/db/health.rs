//! Whether storage is taking writes, as the last operations found it. An
//! outage (a full disk, a database gone) is logged once when it starts,
//! then reminded at most every [`REMINDER_INTERVAL`] with the count of
//! operations refused meanwhile, and once more when it ends: a thousand
//! refused requests make three log lines, not a thousand.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::DbError;

/// Least time between two reminders that an outage goes on.
pub const REMINDER_INTERVAL: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outage {
    Full,
    Unavailable,
}

struct Current {
    outage: Outage,
    since: Instant,
    last_logged: Instant,
    refused: u64,
}

/// Shared by every clone of a store.
#[derive(Default)]
pub struct Health {
    /// A std mutex: held for a few instructions, never across an await.
    current: Mutex<Option<Current>>,
}

impl Health {
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
            Err(DbError::Unavailable(_) | DbError::Connect { .. }) => Some(Outage::Unavailable),
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
                if let Err(e) = result {
                    tracing::error!(error = %e, "{}", began(o));
                }
                let now = Instant::now();
                *current = Some(Current {
                    outage: o,
                    since: now,
                    last_logged: now,
                    refused: 1,
                });
            }
        }
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
