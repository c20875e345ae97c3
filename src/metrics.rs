//! The server's Prometheus metrics, kept by `prometheus-client`: counters
//! bumped where things happen (requests answered, messages accepted,
//! pushed, delivered, expired), a histogram of send-to-commit latency, and
//! gauges (sessions, queues, links) that the scrape fills in from the store
//! and the router just before encoding.
//!
//! One set per process: counters describe the process, and one process
//! serves one data directory (see `data_lock`), so a process-wide set
//! needs no plumbing through every layer that counts.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::protocol::{ErrorCode, Response};

/// A request kind and how it ended (`ok` or an error code).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub request: String,
    pub outcome: String,
}

/// One neighbour, by its key fingerprint (or address before it is known).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NeighbourLabels {
    pub neighbour: String,
}

/// Every metric the server exports.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub accepted: Counter,
    pub pushed: Counter,
    pub broadcasts_dropped: Counter,
    pub delivered: Counter,
    pub expired: Counter,
    pub relayed_in: Counter,
    pub relayed_out: Counter,
    pub send_commit_seconds: Histogram,
    pub commit_batch: Histogram,
    pub sessions: Gauge,
    pub queue_messages: Gauge,
    pub queue_bytes: Gauge,
    pub link_up: Family<NeighbourLabels, Gauge>,
    pub outbound_messages: Family<NeighbourLabels, Gauge>,
    pub outbound_oldest_seconds: Family<NeighbourLabels, Gauge>,
    pub worker_threads: Gauge,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn get() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("carrier");
        let m = Self {
            requests: Family::default(),
            accepted: Counter::default(),
            pushed: Counter::default(),
            broadcasts_dropped: Counter::default(),
            delivered: Counter::default(),
            expired: Counter::default(),
            relayed_in: Counter::default(),
            relayed_out: Counter::default(),
            // 100 µs to about 6.5 s.
            send_commit_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 17)),
            // 1 to 4096 operations.
            commit_batch: Histogram::new(exponential_buckets(1.0, 2.0, 13)),
            sessions: Gauge::default(),
            queue_messages: Gauge::default(),
            queue_bytes: Gauge::default(),
            link_up: Family::default(),
            outbound_messages: Family::default(),
            outbound_oldest_seconds: Family::default(),
            worker_threads: Gauge::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "requests",
            "Client requests answered, by request and outcome (ok or the error code)",
            m.requests.clone(),
        );
        r.register(
            "messages_accepted",
            "Messages committed and acknowledged to their sender",
            m.accepted.clone(),
        );
        r.register(
            "messages_pushed",
            "Messages pushed to a live session",
            m.pushed.clone(),
        );
        r.register(
            "broadcasts_dropped",
            "Broadcasts a live session missed because its unsent backlog had no room for them",
            m.broadcasts_dropped.clone(),
        );
        r.register(
            "messages_delivered",
            "Messages acknowledged by their recipient and deleted",
            m.delivered.clone(),
        );
        r.register(
            "messages_expired",
            "Messages deleted unread at the end of their lifetime, or relayed to us already expired and dropped",
            m.expired.clone(),
        );
        r.register(
            "messages_relayed_in",
            "Messages taken in from neighbours (for local recipients or to pass on)",
            m.relayed_in.clone(),
        );
        r.register(
            "messages_relayed_out",
            "Messages a neighbour acknowledged to us",
            m.relayed_out.clone(),
        );
        r.register(
            "send_commit_seconds",
            "From a send request to its commit (the sender's answer)",
            m.send_commit_seconds.clone(),
        );
        r.register(
            "commit_batch_operations",
            "Queue operations committed per transaction (group commit)",
            m.commit_batch.clone(),
        );
        r.register("sessions", "Logged-in client sessions", m.sessions.clone());
        r.register(
            "queue_messages",
            "Messages waiting for local recipients",
            m.queue_messages.clone(),
        );
        r.register(
            "queue_bytes",
            "Bytes waiting for local recipients",
            m.queue_bytes.clone(),
        );
        r.register(
            "link_up",
            "Whether the link to a neighbour is up (1) or not (0)",
            m.link_up.clone(),
        );
        r.register(
            "outbound_messages",
            "Messages waiting for a neighbour",
            m.outbound_messages.clone(),
        );
        r.register(
            "outbound_oldest_seconds",
            "Age of the oldest message waiting for a neighbour",
            m.outbound_oldest_seconds.clone(),
        );
        r.register(
            "runtime_worker_threads",
            "Threads running sessions, links and the web server ([server] worker_threads)",
            m.worker_threads.clone(),
        );
        Self { registry, ..m }
    }

    /// Counts an answered request: `ok`, or the code it was refused with.
    pub fn answered(&self, request: &str, response: &Response) {
        let outcome = match response {
            Response::Error { code, .. } => code.as_str(),
            _ => "ok",
        };
        self.count(request, outcome);
    }

    /// Counts a send once its commit is known, with its latency.
    pub fn sent(&self, outcome: Result<(), ErrorCode>, took: Duration) {
        match outcome {
            Ok(()) => {
                self.accepted.inc();
                self.send_commit_seconds.observe(took.as_secs_f64());
                self.count("send", "ok");
            }
            Err(code) => self.count("send", code.as_str()),
        }
    }

    fn count(&self, request: &str, outcome: &str) {
        self.requests
            .get_or_create(&RequestLabels {
                request: request.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}
