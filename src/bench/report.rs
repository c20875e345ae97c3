//! Results: one [`Row`] per workload (and one for the crypto rates), printed
//! as a table or as one JSON object per line.

use serde::Serialize;
use serde_json::{Map, Value};

/// One line of the report. The named fields are the contract of `--json`;
/// `null` where a figure does not apply. Anything else goes in `extra`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Row {
    pub workload: String,
    pub messages: Option<u64>,
    pub rate_per_s: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub server_cpu_us_per_msg: Option<f64>,
    pub server_rss_bytes: Option<u64>,
    /// Peak anonymous RSS (`RssAnon`: heap and stacks, no file-backed pages).
    pub server_rss_anon_bytes: Option<u64>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Row {
    pub fn new(workload: &str) -> Self {
        Self {
            workload: workload.into(),
            ..Self::default()
        }
    }

    /// Adds an extra field.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.into(), value.into());
        self
    }

    pub fn set(&mut self, key: &str, value: impl Into<Value>) {
        self.extra.insert(key.into(), value.into());
    }

    /// Appends to the free-text `note`.
    pub fn note(&mut self, text: &str) {
        let joined = match self.extra.get("note").and_then(Value::as_str) {
            Some(old) => format!("{old}; {text}"),
            None => text.to_owned(),
        };
        self.extra.insert("note".into(), joined.into());
    }

    pub fn to_json(&self) -> String {
        self.to_value().to_string()
    }

    /// The row as `--json` prints it.
    pub fn to_value(&self) -> Value {
        let mut v = serde_json::to_value(self).expect("a row always serialises");
        round_floats(&mut v);
        v
    }
}

/// Three decimals are plenty and keep the lines short.
fn round_floats(v: &mut Value) {
    match v {
        Value::Number(n) if n.is_f64() => {
            let x = n.as_f64().unwrap_or_default();
            let r = (x * 1000.0).round() / 1000.0;
            if let Some(num) = serde_json::Number::from_f64(r) {
                *n = num;
            }
        }
        Value::Array(a) => a.iter_mut().for_each(round_floats),
        Value::Object(o) => o.values_mut().for_each(round_floats),
        _ => {}
    }
}

/// Latencies, kept in microseconds.
#[derive(Debug, Default, Clone)]
pub struct Latencies(Vec<u64>);

impl Latencies {
    pub fn from_micros(mut v: Vec<u64>) -> Self {
        v.sort_unstable();
        Self(v)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Nearest-rank percentile in milliseconds; `None` with no samples.
    pub fn percentile_ms(&self, p: f64) -> Option<f64> {
        if self.0.is_empty() {
            return None;
        }
        let rank = ((p / 100.0) * self.0.len() as f64).ceil() as usize;
        let idx = rank.clamp(1, self.0.len()) - 1;
        Some(self.0[idx] as f64 / 1000.0)
    }
}

fn fmt_opt(v: Option<f64>, decimals: usize) -> String {
    match v {
        Some(x) => format!("{x:.decimals$}"),
        None => "-".into(),
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The one-line summary of a row measured without a server (the
/// machine's floor, the envelope rates), which has no place in the table;
/// `None` for a server workload.
pub fn side_line(r: &Row) -> Option<String> {
    let num = |k: &str, digits: usize| {
        r.extra
            .get(k)
            .and_then(Value::as_f64)
            .map_or_else(|| "-".into(), |x| format!("{x:.digits$}"))
    };
    match r.workload.as_str() {
        "floor" => Some(format!(
            "Floor of this machine, no server ({} B records): durable write {} µs CPU ({} µs wall), \
             SQLite commit {} µs CPU ({} µs wall), loopback round trip {} µs CPU ({} µs wall)",
            num("record_bytes", 0),
            num("fsync_cpu_us", 1),
            num("fsync_wall_us", 0),
            num("commit_cpu_us", 1),
            num("commit_wall_us", 0),
            num("round_trip_cpu_us", 1),
            num("round_trip_wall_us", 0),
        )),
        "crypto" => Some(format!(
            "Envelopes ({} B texts, on the load generator): first message seal {}/s, open {}/s; \
             running session seal {}/s, open {}/s; sealing for 5 devices {} ms",
            num("text_bytes", 0),
            num("seal_new_per_s", 0),
            num("open_new_per_s", 0),
            num("seal_p256_per_s", 0),
            num("open_p256_per_s", 0),
            num("seal_5_devices_ms", 2),
        )),
        _ => None,
    }
}

/// The human-readable report.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let header = [
        "workload",
        "messages",
        "rate/s",
        "p50 ms",
        "p99 ms",
        "cpu µs/msg",
        "peak RSS MiB",
        "anon MiB",
    ];
    let mut lines: Vec<[String; 8]> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    for r in rows.iter().filter(|r| side_line(r).is_none()) {
        let label = match r.extra.get("variant").and_then(Value::as_str) {
            Some(v) => format!("{} {v}", r.workload),
            None => r.workload.clone(),
        };
        lines.push([
            label.clone(),
            r.messages
                .map(|m| m.to_string())
                .unwrap_or_else(|| "-".into()),
            fmt_opt(r.rate_per_s, 0),
            fmt_opt(r.p50_ms, 2),
            fmt_opt(r.p99_ms, 2),
            fmt_opt(r.server_cpu_us_per_msg, 1),
            fmt_opt(r.server_rss_bytes.map(mib), 1),
            fmt_opt(r.server_rss_anon_bytes.map(mib), 1),
        ]);
        let details: Vec<String> = r
            .extra
            .iter()
            .filter(|(k, _)| k.as_str() != "variant")
            .map(|(k, v)| match v {
                Value::String(s) => format!("{k}: {s}"),
                other => {
                    let mut v = other.clone();
                    round_floats(&mut v);
                    format!("{k}={v}")
                }
            })
            .collect();
        if !details.is_empty() {
            notes.push(format!("  {label}: {}", details.join(", ")));
        }
    }
    let mut widths = header.map(str::len);
    for l in &lines {
        for (w, cell) in widths.iter_mut().zip(l) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let fmt_line = |cells: &[String]| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            let pad = w - cell.chars().count();
            if i == 0 {
                s.push_str(cell);
                s.push_str(&" ".repeat(pad));
            } else {
                s.push_str("  ");
                s.push_str(&" ".repeat(pad));
                s.push_str(cell);
            }
        }
        s.trim_end().to_owned() + "\n"
    };
    out.push_str(&fmt_line(&header.map(String::from)));
    for l in &lines {
        out.push_str(&fmt_line(l));
    }
    if !notes.is_empty() {
        out.push_str("\nDetails:\n");
        for n in notes {
            out.push_str(&n);
            out.push('\n');
        }
    }
    for line in rows.iter().filter_map(side_line) {
        out.push('\n');
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_json() {
        let l = Latencies::from_micros((1..=100).map(|x| x * 1000).collect());
        assert_eq!(l.percentile_ms(50.0), Some(50.0));
        assert_eq!(l.percentile_ms(99.0), Some(99.0));
        assert_eq!(Latencies::default().percentile_ms(50.0), None);
        let mut r = Row::new("W1").with("senders", 10);
        r.rate_per_s = Some(1.23456);
        let v: Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["workload"], "W1");
        assert_eq!(v["rate_per_s"], 1.235);
        assert!(v["p50_ms"].is_null());
        assert_eq!(v["senders"], 10);
        assert!(table(&[r]).contains("W1"));
    }
}
