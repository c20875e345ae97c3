//! The floor: what this machine charges, with no server at all, for the
//! two things every W3 message needs whatever serves it. Its commit must
//! reach the disk before the sender hears "stored", and each of its
//! hops (sender to server, server to recipient, the acknowledgement back)
//! wakes a thread asleep on a socket. A server that commits each message
//! before acknowledging it cannot spend less CPU per message than one
//! durable commit, so W3's CPU per message is read against these figures.
//!
//! CPU time is read from the scheduler's per-thread run time
//! (`/proc/self/task/*/schedstat`, in nanoseconds) rather than from the
//! clock ticks of `/proc/PID/stat`, which count in 10 ms steps, and taken
//! thread by thread, so a thread that ends during a measurement (an idle
//! worker of the runtime's blocking pool, say) takes nothing away from it.
//! A kernel without it gets `null` CPU figures and the wall times still.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::report::Row;
use crate::db::scratch::ScratchDb;
use anyhow::{Context, Result, anyhow};

/// Operations timed per figure: enough that a few slow ones on a shared
/// machine move the mean little, few enough to take about a second.
const SAMPLES: u32 = 2000;

/// Bytes written per durable write and per committed row: about one W1
/// envelope.
const RECORD_BYTES: usize = 512;

/// Measures the three floors in `dir` (on the filesystem the servers'
/// databases are on).
pub async fn measure(dir: &Path) -> Result<Row> {
    let mut row = Row::new("floor")
        .with("samples", u64::from(SAMPLES))
        .with("record_bytes", RECORD_BYTES as u64);
    let (file, db) = (dir.join("floor.dat"), dir.join("floor.db"));
    let _files = FloorFiles::clear([
        file.clone(),
        db.clone(),
        db.with_extension("db-wal"),
        db.with_extension("db-shm"),
    ]);
    let write = tokio::task::spawn_blocking(move || durable_writes(&file)).await??;
    write.describe(&mut row, "fsync");
    sqlite_commits(&db).await?.describe(&mut row, "commit");
    let trips = tokio::task::spawn_blocking(round_trips).await??;
    trips.describe(&mut row, "round_trip");
    Ok(row)
}

/// CPU and wall time per operation, averaged over [`SAMPLES`].
struct PerOp {
    cpu_us: Option<f64>,
    wall_us: f64,
}

impl PerOp {
    fn describe(&self, row: &mut Row, name: &str) {
        row.set(&format!("{name}_cpu_us"), self.cpu_us);
        row.set(&format!("{name}_wall_us"), self.wall_us);
    }
}

/// Times [`SAMPLES`] operations, charging the CPU of every thread of this
/// process (SQLite's driver works on a thread of its own).
struct Stopwatch {
    cpu_ns: Option<HashMap<i32, u64>>,
    started: Instant,
}

impl Stopwatch {
    fn start() -> Self {
        Self {
            cpu_ns: cpu_ns(),
            started: Instant::now(),
        }
    }

    fn stop(self) -> PerOp {
        let samples = f64::from(SAMPLES);
        let ran = cpu_ns().zip(self.cpu_ns).map(|(now, then)| {
            // A thread started since counts whole; one that ended is gone
            // from both sides.
            now.iter()
                .map(|(tid, ns)| ns.saturating_sub(then.get(tid).copied().unwrap_or(0)))
                .sum::<u64>()
        });
        PerOp {
            cpu_us: ran.map(|ns| ns as f64 / 1e3 / samples),
            wall_us: self.started.elapsed().as_secs_f64() * 1e6 / samples,
        }
    }
}

/// Appends a record to a file and waits until it is on the disk
/// (`fdatasync`), [`SAMPLES`] times: the kernel's part of any commit.
fn durable_writes(path: &Path) -> Result<PerOp> {
    let mut file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let record = [0x5au8; RECORD_BYTES];
    let watch = Stopwatch::start();
    for _ in 0..SAMPLES {
        file.write_all(&record)?;
        file.sync_data()?;
    }
    Ok(watch.stop())
}

/// One-row inserts into a new SQLite database, each its own transaction,
/// with the settings and the driver of the server's queue.
async fn sqlite_commits(path: &Path) -> Result<PerOp> {
    let mut db = ScratchDb::create(path)
        .await
        .with_context(|| format!("cannot open {}", path.display()))?;
    let record = [0x5au8; RECORD_BYTES];
    let watch = Stopwatch::start();
    for _ in 0..SAMPLES {
        db.commit_row(&record).await?;
    }
    // Stopped before the connection closes, while its thread is counted.
    let per = watch.stop();
    db.close().await?;
    Ok(per)
}

/// A byte sent over loopback TCP to a thread that sends it back, each side
/// asleep in `read` until the other writes: two wake-ups per round trip,
/// as a request and its answer cost a server and its client.
fn round_trips() -> Result<PerOp> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut peer, _) = listener.accept()?;
        peer.set_nodelay(true)?;
        let mut byte = [0u8; 1];
        while peer.read(&mut byte)? == 1 {
            peer.write_all(&byte)?;
        }
        Ok(())
    });
    let mut conn = TcpStream::connect(addr)?;
    conn.set_nodelay(true)?;
    let mut byte = [0u8; 1];
    let watch = Stopwatch::start();
    for _ in 0..SAMPLES {
        conn.write_all(&byte)?;
        conn.read_exact(&mut byte)?;
    }
    let per = watch.stop();
    drop(conn);
    echo.join()
        .map_err(|_| anyhow!("the echo thread panicked"))??;
    Ok(per)
}

/// Nanoseconds each living thread of this process has run so far, by
/// thread id, if the kernel keeps the count.
fn cpu_ns() -> Option<HashMap<i32, u64>> {
    let threads: HashMap<i32, u64> = procfs::process::Process::myself()
        .ok()?
        .tasks()
        .ok()?
        .flatten()
        // A thread that ended since the directory was read has no file.
        .filter_map(|task| Some((task.tid, task.schedstat().ok()?.sum_exec_runtime)))
        .collect();
    (!threads.is_empty()).then_some(threads)
}

/// The floor's files, removed when it starts (a run killed earlier in a
/// kept `--work-dir` may have left them) and again however it ends.
struct FloorFiles([PathBuf; 4]);

impl FloorFiles {
    fn clear(paths: [PathBuf; 4]) -> Self {
        let scratch = Self(paths);
        scratch.remove();
        scratch
    }

    fn remove(&self) {
        for path in &self.0 {
            // Absent is as good as removed.
            std::fs::remove_file(path).ok();
        }
    }
}

impl Drop for FloorFiles {
    fn drop(&mut self) {
        self.remove();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Busy work moves the counter by at least the time it ran on a CPU,
    /// and a thread that ends in between takes nothing off it.
    #[test]
    fn cpu_counter_counts_this_thread() {
        if cpu_ns().is_none() {
            eprintln!("skipped: this kernel keeps no per-thread run time");
            return;
        }
        // A thread that has run for a while when the watch starts and has
        // ended when it stops.
        let (started, go) = std::sync::mpsc::channel();
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let ending = std::thread::spawn(move || {
            spin(50);
            started.send(()).unwrap();
            stopped.recv().ok();
        });
        go.recv().unwrap();
        let watch = Stopwatch::start();
        drop(stop);
        ending.join().unwrap();
        spin(30);
        let ran = watch.stop().cpu_us.expect("counted a moment ago") * f64::from(SAMPLES);
        // Spinning for 30 ms of wall time runs for at least a third of it
        // even on a machine shared three ways; the ended thread's 50 ms
        // would have taken it below zero.
        assert!(ran >= 10_000.0, "{ran} µs");
    }

    fn spin(ms: u128) {
        let started = Instant::now();
        let mut x = 0u64;
        while started.elapsed().as_millis() < ms {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
    }
}
