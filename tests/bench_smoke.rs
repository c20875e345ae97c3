//! A small run of `carrier-bench` (a few hundred messages, seconds), so the
//! benchmark cannot rot. It checks the report's shape and that the drain got
//! every message; it asserts nothing about timing.

use std::process::Command;

use serde_json::Value;

#[test]
fn bench_smoke_run() {
    let out = Command::new(env!("CARGO_BIN_EXE_carrier-bench"))
        .args([
            "--messages",
            "200",
            "--workloads",
            "W1,W2,W3",
            "--w3-seconds",
            "1",
            "--json",
        ])
        .args(["--stop-grace", "5"])
        .output()
        .expect("carrier-bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "carrier-bench failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let rows: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line: {l}: {e}")))
        .collect();
    let row = |w: &str| {
        rows.iter()
            .find(|r| r["workload"] == w)
            .unwrap_or_else(|| panic!("no {w} line in:\n{stdout}"))
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
        ] {
            assert!(r.get(key).is_some(), "{w} has no {key}: {r}");
        }
        assert!(r["rate_per_s"].as_f64().is_some_and(|x| x > 0.0), "{r}");
        assert!(r["server_rss_bytes"].as_u64().is_some_and(|x| x > 0), "{r}");
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
        "seal_rsa_per_s",
        "open_rsa_per_s",
    ] {
        assert!(
            crypto[key].as_f64().is_some_and(|x| x > 0.0),
            "crypto has no {key}: {crypto}"
        );
    }
}
