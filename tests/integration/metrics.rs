//! `[metrics] listen`: Prometheus text at `/metrics`, parsed with a
//! Prometheus parser, whose counters move with real traffic; `/healthz`
//! and `/readyz`.

use std::io::{Read, Write};
use std::net::TcpStream;

use carrier::protocol::KeyType;
use prometheus_parse::{Scrape, Value};

use crate::common::{ALICE, BOB, register};
use crate::process::ServerFiles;

/// `GET path` over HTTP/1.1: the status code and the body.
fn get(addr: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("the metrics port answers");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head}"));
    (status, body.to_owned())
}

fn scrape(addr: &str) -> Scrape {
    let (status, body) = get(addr, "/metrics");
    assert_eq!(status, 200, "{body}");
    Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).expect("Prometheus text")
}

/// The value of the sample `name` whose labels include `labels` (0 when
/// no such sample was exported yet).
fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    s.samples
        .iter()
        .find(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map_or(0.0, |x| match x.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            _ => panic!("{name} is not a number"),
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_traffic_and_health_answers() {
    let files = ServerFiles::new();
    files.set_extra_config("", "[metrics]\nlisten = \"127.0.0.1:0\"\n");
    let server = files.start();
    let addr = server.metrics_addr.clone().expect("a metrics address");
    assert_eq!(get(&addr, "/healthz").0, 200);
    assert_eq!(get(&addr, "/readyz"), (200, "ready\n".to_owned()));
    assert_eq!(get(&addr, "/nothing").0, 404);

    let alice = register(&server, ALICE, KeyType::P256).await;
    let _bob = register(&server, BOB, KeyType::P256).await;
    let before = scrape(&addr);
    assert_eq!(value(&before, "carrier_messages_accepted_total", &[]), 0.0);
    assert_eq!(value(&before, "carrier_queue_messages", &[]), 0.0);
    let verified = [("request", "verify"), ("outcome", "ok")];
    assert_eq!(value(&before, "carrier_requests_total", &verified), 2.0);

    let session = alice.client.login().await.expect("alice logs in");
    for text in ["one", "two", "three"] {
        session.send(BOB, text).await.expect("sent");
    }
    let after = scrape(&addr);
    assert_eq!(value(&after, "carrier_messages_accepted_total", &[]), 3.0);
    assert_eq!(value(&after, "carrier_queue_messages", &[]), 3.0);
    assert_eq!(value(&after, "carrier_sessions", &[]), 1.0);
    let logins = [("request", "device_login"), ("outcome", "ok")];
    // Registering logged each device in once already.
    assert_eq!(
        value(&after, "carrier_requests_total", &logins)
            - value(&before, "carrier_requests_total", &logins),
        1.0
    );
    let latency = after
        .samples
        .iter()
        .find(|x| x.metric == "carrier_send_commit_seconds")
        .expect("the send latency histogram");
    match &latency.value {
        Value::Histogram(buckets) => {
            let all = buckets.last().expect("buckets").count;
            assert_eq!(all, 3.0, "{buckets:?}");
        }
        other => panic!("not a histogram: {other:?}"),
    }
    let batches = after
        .samples
        .iter()
        .find(|x| x.metric == "carrier_commit_batch_operations")
        .expect("the commit batch histogram");
    match &batches.value {
        Value::Histogram(buckets) => {
            assert!(buckets.last().expect("buckets").count >= 1.0, "{buckets:?}")
        }
        other => panic!("not a histogram: {other:?}"),
    }
}

/// `[server] worker_threads` sizes the runtime that serves clients: the
/// server reports the threads it runs with, and serves on one as on
/// several.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runtime_runs_with_the_configured_worker_threads() {
    for threads in [1, 3] {
        let files = ServerFiles::new();
        files.set_extra_config(
            &format!("worker_threads = {threads}"),
            "[metrics]\nlisten = \"127.0.0.1:0\"\n",
        );
        let server = files.start();
        let addr = server.metrics_addr.clone().expect("a metrics address");
        let alice = register(&server, ALICE, KeyType::P256).await;
        let _bob = register(&server, BOB, KeyType::P256).await;
        let session = alice.client.login().await.expect("alice logs in");
        session.send(BOB, "one").await.expect("sent");
        let s = scrape(&addr);
        assert_eq!(
            value(&s, "carrier_runtime_worker_threads", &[]),
            f64::from(threads)
        );
        assert_eq!(value(&s, "carrier_messages_accepted_total", &[]), 1.0);
    }
}

/// A scraper keeping its connection alive, or a client that sends half a
/// request and stalls, must not hold the server up when it is told to stop.
#[test]
fn an_open_metrics_connection_does_not_stall_shutdown() {
    let files = ServerFiles::new();
    files.set_extra_config("", "[metrics]\nlisten = \"127.0.0.1:0\"\n");
    let mut server = files.start();
    let addr = server.metrics_addr.clone().expect("a metrics address");
    let mut kept_alive = TcpStream::connect(&addr).expect("the metrics port answers");
    write!(kept_alive, "GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut answer = [0u8; 12];
    kept_alive.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200");
    let mut stalled = TcpStream::connect(&addr).expect("the metrics port answers");
    write!(stalled, "GET /metrics HTTP/1.1\r\nHost: ").unwrap();

    let status = server.terminate();
    assert!(status.success(), "the server exits cleanly: {status:?}");
}

/// Clients of the metrics port, however many, leave the messaging clients
/// the descriptors they need, and never set the listener spinning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_metrics_connections_leave_room_for_clients() {
    let files = ServerFiles::new();
    files.set_extra_config("", "[metrics]\nlisten = \"127.0.0.1:0\"\n");
    let server = files.start_with_open_file_limit(160);
    let addr = server.metrics_addr.clone().expect("a metrics address");
    let mut stalled = Vec::new();
    for _ in 0..200 {
        let mut stream = TcpStream::connect(&addr).expect("the metrics port answers");
        write!(stream, "GET /metrics HTTP/1.1\r\nHost: ").unwrap();
        stalled.push(stream);
    }
    // The last connection has been handled once a fresh one is answered.
    let mut probe = TcpStream::connect(&addr).expect("the metrics port answers");
    write!(probe, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = probe.read_to_end(&mut answer);

    let _alice = register(&server, ALICE, KeyType::P256).await;
    let failed_accepts = files.log_text().matches("accept failed").count();
    assert!(
        failed_accepts <= 1,
        "the metrics listener spun on failed accepts ({failed_accepts} warnings)"
    );
}
