//! What a server process costs over a timed phase: CPU time (user +
//! system) and resident memory (now and peak, in all and anonymous only),
//! read from `/proc` through the `procfs` crate. Linux only; every reader returns `None` where the
//! figure cannot be had, and the report then shows `null`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use procfs::process::{ClearRefs, Process};

/// CPU seconds (user + system) the process has used so far.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = process(pid)?.stat().ok()?;
    Some((stat.utime + stat.stime) as f64 / procfs::ticks_per_second() as f64)
}

/// Resident memory now.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    Some(process(pid)?.status().ok()?.vmrss? * 1024)
}

/// Anonymous resident memory now (heap and stacks, `RssAnon`): unlike the
/// file-backed part of RSS (the executable, a mapped database file), the
/// kernel cannot drop it under pressure, so it is the figure to provision for.
pub fn rss_anon_bytes(pid: u32) -> Option<u64> {
    Some(process(pid)?.status().ok()?.rssanon? * 1024)
}

/// Peak resident memory since start, or since the last [`reset_peak`].
pub fn peak_rss_bytes(pid: u32) -> Option<u64> {
    Some(process(pid)?.status().ok()?.vmhwm? * 1024)
}

/// Resets the peak RSS to the current RSS (Linux 4.0+, own processes).
/// Returns false if the kernel refused, in which case peaks are lifetime peaks.
pub fn reset_peak(pid: u32) -> bool {
    process(pid).is_some_and(|p| p.clear_refs(ClearRefs::PeakRSS).is_ok())
}

fn process(pid: u32) -> Option<Process> {
    Process::new(i32::try_from(pid).ok()?).ok()
}

/// Waits until the servers are quiet (less than 5% of a core each over
/// 200 ms), at most `max`; returns how long that took. A timed phase that
/// starts while a server still finishes earlier work would be charged for it.
pub async fn settle(pids: &[u32], max: Duration) -> Duration {
    let started = Instant::now();
    let window = Duration::from_millis(200);
    loop {
        let before: Vec<Option<f64>> = pids.iter().map(|&p| cpu_seconds(p)).collect();
        tokio::time::sleep(window).await;
        let busy = pids
            .iter()
            .zip(&before)
            .any(|(&p, b)| match (cpu_seconds(p), b) {
                (Some(a), Some(b)) => a - b > 0.05 * window.as_secs_f64(),
                _ => false,
            });
        if !busy || started.elapsed() >= max {
            return started.elapsed();
        }
    }
}

/// How often the anonymous RSS is sampled: the kernel keeps no peak of it.
const ANON_SAMPLE_EVERY: Duration = Duration::from_millis(10);

/// The highest anonymous RSS of each process seen by a sampling task, which
/// runs until this is dropped.
struct AnonPeaks {
    peaks: Arc<Vec<AtomicU64>>,
    sampler: tokio::task::JoinHandle<()>,
}

impl AnonPeaks {
    fn start(pids: &[u32]) -> Self {
        let peaks: Arc<Vec<AtomicU64>> = Arc::new(pids.iter().map(|_| AtomicU64::new(0)).collect());
        let (pids, seen) = (pids.to_vec(), peaks.clone());
        let sampler = tokio::spawn(async move {
            let mut tick = tokio::time::interval(ANON_SAMPLE_EVERY);
            loop {
                tick.tick().await;
                sample_anon(&pids, &seen);
            }
        });
        Self { peaks, sampler }
    }

    /// Takes a last sample and returns the peaks (`None` where never read).
    fn finish(self, pids: &[u32]) -> Vec<Option<u64>> {
        self.sampler.abort();
        sample_anon(pids, &self.peaks);
        self.peaks
            .iter()
            .map(|p| Some(p.load(Ordering::Relaxed)).filter(|&b| b > 0))
            .collect()
    }
}

fn sample_anon(pids: &[u32], peaks: &[AtomicU64]) {
    for (&pid, peak) in pids.iter().zip(peaks) {
        if let Some(b) = rss_anon_bytes(pid) {
            peak.fetch_max(b, Ordering::Relaxed);
        }
    }
}

/// CPU and memory of a set of server processes over one timed phase.
pub struct Meter {
    pids: Vec<u32>,
    cpu0: Vec<Option<f64>>,
    peak_reset: bool,
    anon: AnonPeaks,
    own_cpu0: Option<f64>,
    started: Instant,
}

/// What a [`Meter`] saw.
#[derive(Debug, Clone)]
pub struct Measured {
    pub seconds: f64,
    /// CPU seconds of every server, summed; `None` if any could not be read.
    pub cpu_seconds: Option<f64>,
    /// CPU seconds per server, in the order given.
    pub cpu_each: Vec<Option<f64>>,
    /// Highest peak RSS among the servers during the phase (or since their
    /// start, if the peak could not be reset).
    pub peak_rss: Option<u64>,
    pub peak_each: Vec<Option<u64>>,
    /// Highest anonymous RSS among the servers during the phase, sampled
    /// every 10 ms (a peak shorter than that can be missed).
    pub peak_anon: Option<u64>,
    pub peak_anon_each: Vec<Option<u64>>,
    /// Whether the peaks cover only this phase.
    pub peak_is_phase_only: bool,
    /// CPU seconds of the load generator (this process) in the phase.
    pub own_cpu_seconds: Option<f64>,
}

impl Meter {
    /// Resets the peaks and takes the CPU snapshot; call right before the
    /// timed phase. Needs a Tokio runtime (for the anonymous RSS sampler).
    pub fn start(pids: &[u32]) -> Self {
        let peak_reset = !pids.is_empty() && pids.iter().all(|&p| reset_peak(p));
        let cpu0 = pids.iter().map(|&p| cpu_seconds(p)).collect();
        Self {
            pids: pids.to_vec(),
            cpu0,
            peak_reset,
            anon: AnonPeaks::start(pids),
            own_cpu0: cpu_seconds(std::process::id()),
            started: Instant::now(),
        }
    }

    /// Takes the second snapshot; call right after the timed phase.
    pub fn finish(self) -> Measured {
        let seconds = self.started.elapsed().as_secs_f64();
        let cpu_each: Vec<Option<f64>> = self
            .pids
            .iter()
            .zip(&self.cpu0)
            .map(|(&p, c0)| Some(cpu_seconds(p)? - (*c0)?))
            .collect();
        let cpu_seconds = if cpu_each.is_empty() {
            None
        } else {
            cpu_each.iter().copied().sum()
        };
        let peak_each: Vec<Option<u64>> = self.pids.iter().map(|&p| peak_rss_bytes(p)).collect();
        let peak_rss = highest(&peak_each);
        let peak_anon_each = self.anon.finish(&self.pids);
        let peak_anon = highest(&peak_anon_each);
        let own_cpu_seconds = self::cpu_seconds(std::process::id())
            .zip(self.own_cpu0)
            .map(|(a, b)| a - b);
        Measured {
            seconds,
            cpu_seconds,
            cpu_each,
            peak_rss,
            peak_each,
            peak_anon,
            peak_anon_each,
            peak_is_phase_only: self.peak_reset,
            own_cpu_seconds,
        }
    }
}

/// The highest of the figures, `None` if any is missing.
fn highest(each: &[Option<u64>]) -> Option<u64> {
    each.iter()
        .copied()
        .collect::<Option<Vec<u64>>>()
        .and_then(|v| v.into_iter().max())
}

impl Measured {
    /// Server CPU microseconds per message.
    pub fn cpu_us_per(&self, messages: u64) -> Option<f64> {
        if messages == 0 {
            return None;
        }
        self.cpu_seconds.map(|c| c * 1e6 / messages as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let me = std::process::id();
        assert!(cpu_seconds(me).is_some());
        assert!(rss_bytes(me).unwrap() > 0);
        assert!(rss_anon_bytes(me).unwrap() > 0);
        assert!(rss_anon_bytes(me).unwrap() <= rss_bytes(me).unwrap());
        assert!(peak_rss_bytes(me).unwrap() >= rss_bytes(me).unwrap() / 2);
    }
}
