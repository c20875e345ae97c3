//! Whether storage is taking writes, as the last operations found it. An
//! outage (a full disk, a database gone) is logged once when it starts,
//! then reminded at most every [`REMINDER_INTERVAL`] with the count of
//! operations refused meanwhile, and once more when it ends: a thousand
//! refused requests make three log lines, not a thousand.
//!
//! An outage first met as a pooled connection that never came free is
//! logged once PostgreSQL's own reason is known (one connection is tried
//! for it): the pool keeps that reason to itself.

use std::sync::Mutex;
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
    outage: Outage,
    since: Instant,
    last_logged: Instant,
    refused: u64,
}

/// Shared by every clone of a store.
pub struct Health {
    /// A std mutex: held for a few instructions, never across an await.
    current: Mutex<Option<Current>>,
    /// How to reach PostgreSQL to learn why its pool timed out.
    postgres: Option<PgConnectOptions>,
}

impl Health {
    /// `postgres`: the options of a PostgreSQL store, `None` for SQLite.
    pub fn new(postgres: Option<PgConnectOptions>) -> Self {
        Self {
            current: Mutex::default(),
            postgres,
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
                if let Err(e) = result {
                    self.log_began(o, e);
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

impl Health {
    /// Logs the start of an outage with its cause, found out first when
    /// the pool hid it.
    fn log_began(&self, o: Outage, e: &DbError) {
        let (DbError::PoolTimedOut, Some(options)) = (e, &self.postgres) else {
            tracing::error!(error = %e, "{}", began(o));
            return;
        };
        let options = options.clone();
        tokio::spawn(async move {
            let error = match postgres::cause(&options, sqlx::Error::PoolTimedOut).await {
                Some(cause) => postgres::explain(&cause),
                None => "every pooled connection stayed busy, though PostgreSQL answers: it is \
                         overloaded or slow"
                    .into(),
            };
            tracing::error!(%error, "{}", began(o));
        });
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
