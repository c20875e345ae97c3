//! Small runs of `carrier-bench` (a few hundred messages, seconds), so the
//! benchmark cannot rot. They check the report's shape and that every
//! message stored was drained; they assert nothing about timing.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

/// Runs the bench at `exe` with `args` and `--json`; returns its JSON lines
/// and its standard error. Fails the test if the bench failed.
fn run_bench(exe: &Path, args: &[&str]) -> (Vec<Value>, String) {
    let out: Output = Command::new(exe)
        .args(args)
        .args(["--json", "--stop-grace", "5"])
        .output()
        .expect("carrier-bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "carrier-bench failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let rows = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line: {l}: {e}")))
        .collect();
    (rows, stderr)
}

#[test]
fn bench_smoke_run() {
    let (rows, _) = run_bench(
        Path::new(env!("CARGO_BIN_EXE_carrier-bench")),
        &[
            "--messages",
            "200",
            "--workloads",
            "W1,W2,W3",
            "--w3-seconds",
            "1",
        ],
    );
    let row = |w: &str| {
        rows.iter()
            .find(|r| r["workload"] == w)
            .unwrap_or_else(|| panic!("no {w} line in:\n{rows:#?}"))
    };
    for w in ["W1", "W2", "W3"] {
        let r = row(w);
        for key in [
            "messages",
            "rate_per_s",
            "p50_ms",
            "p99_ms",
            "server_cpu_us_per_msg",
            "server_rss_bytes",
            "server_rss_anon_bytes",
        ] {
            assert!(r.get(key).is_some(), "{w} has no {key}: {r}");
        }
        assert!(r["rate_per_s"].as_f64().is_some_and(|x| x > 0.0), "{r}");
        assert!(r["server_rss_bytes"].as_u64().is_some_and(|x| x > 0), "{r}");
        let anon = r["server_rss_anon_bytes"].as_u64();
        assert!(anon.is_some_and(|a| a > 0), "{r}");
        assert!(
            anon <= r["server_rss_bytes"].as_u64(),
            "anonymous RSS above the peak RSS: {r}"
        );
    }
    // A running conversation's envelopes: kind 2, without the set-up.
    for w in ["W1", "W2", "W3"] {
        let r = row(w);
        assert_eq!(r["envelope_kind"], 2, "{r}");
        let bytes = r["envelope_bytes"].as_f64().unwrap_or_default();
        // 497 bytes for the bench's 256-byte texts (PROTOCOL.md §14.1):
        // far below a kind-1 envelope, which repeats the set-up (1,662).
        assert!((400.0..1000.0).contains(&bytes), "{r}");
    }
    assert_eq!(row("W1")["messages"], 200);
    assert_eq!(
        row("W2")["messages"],
        200,
        "W2 must drain every message W1 stored"
    );
    assert!(row("W1")["p99_ms"].is_number());
    assert!(row("W2")["p50_ms"].is_null());
    assert_eq!(row("W3")["messages"], 200);
    let crypto = row("crypto");
    for key in [
        "seal_p256_per_s",
        "open_p256_per_s",
        "seal_new_per_s",
        "open_new_per_s",
    ] {
        assert!(
            crypto[key].as_f64().is_some_and(|x| x > 0.0),
            "crypto has no {key}: {crypto}"
        );
    }
}

/// `--first-contact` seals every timed message as a sender's first: kind 1
/// envelopes, each repeating the 1,165 bytes of the PQXDH set-up.
#[test]
fn first_contact_envelopes_carry_the_set_up() {
    let exe = Path::new(env!("CARGO_BIN_EXE_carrier-bench"));
    let w1 = |extra: &[&str]| {
        let mut args = vec!["--workloads", "W1", "--messages", "20", "--senders", "2"];
        args.extend_from_slice(extra);
        let (rows, _) = run_bench(exe, &args);
        rows.into_iter()
            .find(|r| r["workload"] == "W1")
            .expect("a W1 line")
    };
    let (running, first) = (w1(&[]), w1(&["--first-contact"]));
    assert_eq!(running["envelope_kind"], 2, "{running}");
    assert_eq!(first["envelope_kind"], 1, "{first}");
    let bytes = |r: &Value| r["envelope_bytes"].as_f64().expect("envelope_bytes");
    assert_eq!(
        bytes(&first) - bytes(&running),
        1165.0,
        "{running}\n{first}"
    );
}

/// Without a carrier-server binary beside it, the bench serves from its own
/// executable. Its servers must still listen on their link ports, so that
/// W4's neighbourhoods link up and relay every message.
#[test]
fn w4_served_by_the_bench_itself() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("a temporary directory");
    let alone = dir.path().join("carrier-bench");
    let bench = env!("CARGO_BIN_EXE_carrier-bench");
    if std::fs::hard_link(bench, &alone).is_err() {
        std::fs::copy(bench, &alone).expect("a copy of carrier-bench");
    }
    let (rows, stderr) = run_bench(
        &alone,
        &["--workloads", "W4", "--messages", "100", "--senders", "2"],
    );
    assert!(
        stderr.contains("serving from the bench binary itself"),
        "the bench did not serve from itself:\n{stderr}"
    );
    let w4: Vec<&Value> = rows.iter().filter(|r| r["workload"] == "W4").collect();
    let variants: Vec<&str> = w4.iter().filter_map(|r| r["variant"].as_str()).collect();
    assert_eq!(
        variants,
        [
            "2 servers: store",
            "2 servers: drain",
            "3 servers: store",
            "3 servers: drain"
        ],
        "{w4:#?}\n{stderr}"
    );
    for r in w4 {
        assert_eq!(r["messages"], 100, "{r}");
    }
}

/// W7: each message is one envelope per device of a 3-device recipient and
/// a sync copy for the 2-device sender's other device, and every device
/// drains exactly its own (the bench fails otherwise).
#[test]
fn w7_fans_out_to_every_device() {
    let (rows, _) = run_bench(
        Path::new(env!("CARGO_BIN_EXE_carrier-bench")),
        &["--workloads", "W7", "--messages", "30", "--senders", "2"],
    );
    let row = |w: &str| {
        rows.iter()
            .find(|r| r["workload"] == w)
            .unwrap_or_else(|| panic!("no {w} line in:\n{rows:#?}"))
    };
    for w in ["W7", "W7 drain"] {
        let r = row(w);
        assert_eq!(r["messages"], 30, "{r}");
        assert_eq!(r["envelopes"], 120, "{r}");
        assert!(r["envelopes_per_s"].is_number(), "{r}");
    }
    assert_eq!(row("W7 drain")["devices"], 8);
    let crypto = row("crypto");
    assert!(
        crypto["seal_5_devices_ms"]
            .as_f64()
            .is_some_and(|ms| ms > 0.0),
        "{crypto}"
    );
}

/// W5 with a couple of hundred idle connections and a short idle window:
/// its row must say what the idle connections cost and that W3's messages
/// beside them were all pushed.
#[test]
fn w5_reports_idle_connections() {
    let (rows, _) = run_bench(
        Path::new(env!("CARGO_BIN_EXE_carrier-bench")),
        &[
            "--workloads",
            "W5",
            "--connections",
            "200",
            "--w5-users",
            "20",
            "--w3-seconds",
            "1",
            "--w5-idle-seconds",
            "1",
        ],
    );
    let r = rows
        .iter()
        .find(|r| r["workload"] == "W5")
        .unwrap_or_else(|| panic!("no W5 line in:\n{rows:#?}"));
    assert_eq!(r["connections"], 200, "{r}");
    assert_eq!(
        r["connections_alive"], 200,
        "every idle connection still answers after the idle window: {r}"
    );
    assert_eq!(r["distinct_users"], 20, "{r}");
    let per_connection = r["rss_per_connection_bytes"].as_f64();
    // Above nothing (the connections hold TLS state and a task each) and
    // far below anything a logged-in idle connection should need.
    assert!(
        per_connection.is_some_and(|b| b > 0.0 && b < 1_000_000.0),
        "{r}"
    );
    assert!(
        r["rss_held_bytes"].as_u64() > r["rss_before_bytes"].as_u64(),
        "{r}"
    );
    let idle_cpu = r["idle_cpu_percent"].as_f64();
    assert!(
        idle_cpu.is_some_and(|c| (0.0..=200.0).contains(&c)),
        "idle CPU out of range: {r}"
    );
    assert_eq!(r["idle_seconds"].as_f64(), Some(1.0), "{r}");
    let messages = r["messages"].as_u64().expect("messages");
    assert!(messages > 0, "{r}");
    assert_eq!(
        r["pushed"].as_u64(),
        Some(messages),
        "every message pushed: {r}"
    );
    assert_eq!(r["not_pushed"], 0, "{r}");
}

/// `floor` measures the machine with no server: every figure is a positive
/// time, and the readable report gives it a line of its own rather than a
/// row of the server table.
#[test]
fn floor_reports_what_the_machine_charges() {
    let exe = Path::new(env!("CARGO_BIN_EXE_carrier-bench"));
    let (rows, _) = run_bench(exe, &["--workloads", "floor"]);
    let floor = rows
        .iter()
        .find(|r| r["workload"] == "floor")
        .unwrap_or_else(|| panic!("no floor line in:\n{rows:#?}"));
    // CPU figures come from the kernel's per-thread run time; where it keeps
    // none they are null (and only the wall times are checked).
    let counts_cpu = Path::new("/proc/self/schedstat").exists();
    for kind in ["fsync", "commit", "round_trip"] {
        for unit in ["cpu_us", "wall_us"] {
            let key = format!("{kind}_{unit}");
            if unit == "cpu_us" && !counts_cpu {
                assert!(floor[&key].is_null(), "{floor}");
                continue;
            }
            assert!(
                floor[&key]
                    .as_f64()
                    .is_some_and(|x| x.is_finite() && x > 0.0),
                "floor has no {key}: {floor}"
            );
        }
    }
    let out = Command::new(exe)
        .args(["--workloads", "floor", "--stop-grace", "5"])
        .output()
        .expect("carrier-bench runs");
    assert!(out.status.success(), "{out:?}");
    let report = String::from_utf8_lossy(&out.stdout);
    let line = report
        .lines()
        .find(|l| l.starts_with("Floor of this machine"))
        .unwrap_or_else(|| panic!("no floor line in the report:\n{report}"));
    assert!(line.contains("SQLite commit"), "{line}");
    assert!(
        !counts_cpu || !line.contains(" - µs"),
        "a figure is missing: {line}"
    );
    assert!(
        !report.lines().any(|l| l.starts_with("floor ")),
        "the floor is not a server workload:\n{report}"
    );
}
