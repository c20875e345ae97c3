//! The load generator's building blocks. Envelopes (protocol v2, one per
//! message for the recipient's one device, each pair of users in its own
//! Double Ratchet session) are sealed before any timed phase; during one,
//! the bench only serialises `device_send` requests and records times, so
//! the figures measure the server. By default each pair's session is first
//! brought to a running conversation's state, so the timed envelopes are
//! kind 2; [`Contact::First`](super::envelopes::Contact) keeps them all kind 1 (PROTOCOL.md §14.1).

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::envelopes::{Contact, running_session};
use super::users::{DEVICE, LIST_VERSION, User};
use crate::client::{Connection, Event};
use crate::crypto::v2::{Content, Session};
use crate::domain::MessageId;
use crate::protocol::{B64, Delivered, Request, Response};

/// One sealed message ready to send to one device.
#[derive(Clone)]
pub struct SendJob {
    pub id: MessageId,
    pub to: String,
    pub device: u32,
    pub list_version: u64,
    pub envelope: Vec<u8>,
}

/// Where a v2 envelope holds its message id (after the version and kind
/// bytes).
const ID_AT: std::ops::Range<usize> = 2..18;

impl SendJob {
    /// The `device_send` request carrying this job.
    pub fn request(self) -> Request {
        Request::DeviceSend {
            id: self.id,
            to: self.to,
            device: self.device,
            list_version: self.list_version,
            envelope: B64(self.envelope),
        }
    }

    /// The same envelope under message id `id`. Its signature no longer
    /// holds, which only the recipient device would check: for filling
    /// queues that are never opened.
    pub fn with_id(&self, id: MessageId) -> SendJob {
        let mut envelope = self.envelope.clone();
        envelope[ID_AT].copy_from_slice(id.as_bytes());
        SendJob {
            id,
            envelope,
            ..self.clone()
        }
    }
}

/// The mean envelope size of `jobs` in bytes, for the report.
pub fn mean_envelope_bytes(jobs: &[SendJob]) -> f64 {
    let total: usize = jobs.iter().map(|j| j.envelope.len()).sum();
    total as f64 / jobs.len().max(1) as f64
}

/// What to seal: indexes into the sender and recipient lists, and the
/// counter (unused by protocol v2, whose sessions count for themselves).
#[derive(Clone, Copy)]
pub struct SealSpec {
    pub sender: usize,
    pub recipient: usize,
    pub counter: u64,
}

/// A text of `len` bytes of printable ASCII.
pub fn text_of(len: usize) -> String {
    (0..len).map(|i| (b'a' + (i % 26) as u8) as char).collect()
}

/// Seals the next message from `sender` to `recipient` in their session
/// (started from the recipient's bundle on first use, and under
/// `Contact::Running` answered once before anything is sealed for the
/// timed phase).
fn seal_one(
    sessions: &mut HashMap<(usize, usize), Session>,
    contact: Contact,
    spec: &SealSpec,
    sender: &User,
    recipient: &User,
    text: &str,
) -> Result<SendJob> {
    let id = MessageId::random();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    let session = match sessions.entry((spec.sender, spec.recipient)) {
        Entry::Occupied(e) => e.into_mut(),
        Entry::Vacant(e) => e.insert(match contact {
            Contact::First => {
                Session::initiate(&sender.device.local, &recipient.device.bundle, now)
            }
            Contact::Running => running_session(sender, recipient, text, now)?,
        }),
    };
    let envelope = session.seal(&sender.device.local, id, &Content::Text(text.into()), now)?;
    Ok(SendJob {
        id,
        to: recipient.phone.to_string(),
        device: DEVICE,
        list_version: LIST_VERSION,
        envelope,
    })
}

/// Seals every spec on all cores; returns the jobs in spec order and the
/// seconds it took (setting up the sessions included). A sender's specs
/// all go to one thread, so each pair's session seals its messages in
/// order.
pub async fn preseal(
    senders: Arc<Vec<User>>,
    recipients: Arc<Vec<User>>,
    specs: Vec<SealSpec>,
    text: Arc<String>,
    contact: Contact,
) -> Result<(Vec<SendJob>, f64)> {
    let started = Instant::now();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let total = specs.len();
    let mut parts: Vec<Vec<(usize, SealSpec)>> = vec![Vec::new(); threads];
    for (i, spec) in specs.into_iter().enumerate() {
        parts[spec.sender % threads].push((i, spec));
    }
    let jobs = tokio::task::spawn_blocking(move || {
        std::thread::scope(|scope| {
            let handles: Vec<_> = parts
                .iter()
                .map(|part| {
                    let (senders, recipients, text) = (&senders, &recipients, &text);
                    scope.spawn(move || {
                        let mut sessions = HashMap::new();
                        part.iter()
                            .map(|(i, s)| {
                                let job = seal_one(
                                    &mut sessions,
                                    contact,
                                    s,
                                    &senders[s.sender],
                                    &recipients[s.recipient],
                                    text,
                                )?;
                                Ok((*i, job))
                            })
                            .collect::<Result<Vec<_>>>()
                    })
                })
                .collect();
            let mut out: Vec<Option<SendJob>> = vec![None; total];
            for h in handles {
                for (i, job) in h
                    .join()
                    .map_err(|_| anyhow!("a sealing thread panicked"))??
                {
                    out[i] = Some(job);
                }
            }
            Ok::<_, anyhow::Error>(out.into_iter().flatten().collect::<Vec<_>>())
        })
    })
    .await??;
    Ok((jobs, started.elapsed().as_secs_f64()))
}

/// The outcome of [`pipelined_send`].
#[derive(Debug, Default)]
pub struct Sent {
    /// Acknowledgment latency of each accepted message, in microseconds.
    pub latencies_us: Vec<u64>,
    pub errors: u64,
    pub first_error: Option<String>,
}

impl Sent {
    fn absorb(&mut self, other: Sent) {
        self.latencies_us.extend(other.latencies_us);
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    /// Fails, naming the first refusal, if the server refused any send.
    pub fn ensure_accepted(&self, what: &str) -> Result<()> {
        if self.errors > 0 {
            bail!(
                "{what}: the server refused {} of {} sends; the first: {}",
                self.errors,
                self.errors + self.latencies_us.len() as u64,
                self.first_error.as_deref().unwrap_or_default()
            );
        }
        Ok(())
    }
}

/// Waits for every connection's [`pipelined_send`] and adds up their outcomes.
pub async fn joined(tasks: Vec<JoinHandle<Result<Sent>>>) -> Result<Sent> {
    let mut all = Sent::default();
    for t in tasks {
        all.absorb(t.await??);
    }
    Ok(all)
}

/// Sends `jobs` on one logged-in connection with at most `window` sends
/// awaiting their `accepted`, recording each one's latency.
pub async fn pipelined_send(
    conn: Arc<Connection>,
    jobs: impl Iterator<Item = SendJob>,
    window: usize,
) -> Result<Sent> {
    let window = Arc::new(Semaphore::new(window.max(1)));
    let (tx, mut rx) = mpsc::unbounded_channel::<Result<u64, String>>();
    let collector = tokio::spawn(async move {
        let mut sent = Sent::default();
        while let Some(r) = rx.recv().await {
            match r {
                Ok(us) => sent.latencies_us.push(us),
                Err(e) => {
                    sent.errors += 1;
                    sent.first_error.get_or_insert(e);
                }
            }
        }
        sent
    });
    for job in jobs {
        let permit = window.clone().acquire_owned().await?;
        let started = Instant::now();
        let pending = conn.start(job.request()).await?;
        let tx = tx.clone();
        tokio::spawn(async move {
            let outcome = match pending.await {
                Ok(Response::Accepted { .. }) => Ok(started.elapsed().as_micros() as u64),
                Ok(Response::Error { code, message, .. }) => Err(format!("{code:?}: {message}")),
                Ok(other) => Err(format!("unexpected answer {other:?}")),
                Err(_) => Err("the connection closed".to_owned()),
            };
            let _ = tx.send(outcome);
            drop(permit);
        });
    }
    drop(tx);
    Ok(collector.await?)
}

/// The outcome of [`drain`].
#[derive(Debug, Default)]
pub struct Drained {
    pub ids: Vec<MessageId>,
    pub deleted: u64,
    pub fetches: u64,
}

/// Fetches and acknowledges until the queue is empty (`expect: None`) or
/// `expect` messages came; with `expect`, waits up to `patience` without
/// progress for messages still on their way. Pushed messages are ignored
/// (the fetch returns them too, as they stay queued until acknowledged).
pub async fn drain(
    conn: &mut Connection,
    expect: Option<usize>,
    patience: Duration,
) -> Result<Drained> {
    let mut out = Drained::default();
    let mut next = conn
        .start(Request::Fetch {
            limit: Some(1000),
            after: None,
        })
        .await?;
    let mut last_progress = Instant::now();
    loop {
        let answer = (&mut next)
            .await
            .map_err(|_| anyhow!("the connection closed during fetch"))?;
        out.fetches += 1;
        while conn.try_next_event().is_some() {}
        let (messages, more) = match answer {
            Response::Messages { messages, more, .. } => (messages, more),
            Response::Error { code, message, .. } => bail!("fetch refused: {code:?}: {message}"),
            other => bail!("fetch: unexpected answer {other:?}"),
        };
        if messages.is_empty() {
            let done = match expect {
                None => !more,
                Some(n) => out.ids.len() >= n || last_progress.elapsed() > patience,
            };
            if done {
                return Ok(out);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
            next = conn
                .start(Request::Fetch {
                    limit: Some(1000),
                    after: None,
                })
                .await?;
            continue;
        }
        last_progress = Instant::now();
        let ids: Vec<MessageId> = messages.iter().map(|m: &Delivered| m.id).collect();
        out.ids.extend_from_slice(&ids);
        // The server runs a connection's requests in order: the fetch sent
        // after the ack sees the deletions, and saves a round trip.
        let ack = conn.start(Request::Ack { ids }).await?;
        let reached = expect.is_some_and(|n| out.ids.len() >= n);
        let fetch_again = !reached || more;
        if fetch_again {
            next = conn
                .start(Request::Fetch {
                    limit: Some(1000),
                    after: None,
                })
                .await?;
        }
        match ack
            .await
            .map_err(|_| anyhow!("the connection closed during ack"))?
        {
            Response::Acked { deleted } => out.deleted += deleted,
            other => bail!("ack: unexpected answer {other:?}"),
        }
        if !fetch_again {
            return Ok(out);
        }
    }
}

/// The outcome of [`online`].
#[derive(Debug, Default)]
pub struct Online {
    pub sent: u64,
    pub send_seconds: f64,
    /// Send-to-receipt latency of each pushed message, in microseconds.
    pub latencies_us: Vec<u64>,
    /// Accepted but not pushed within the wait (found by a fetch afterwards).
    pub not_pushed: u64,
    pub send_errors: u64,
    pub first_error: Option<String>,
}

/// Sends `jobs` (round-robin over `senders`) at `rate` per second in total
/// while `recipients` receive them live; latency is receipt − send on this
/// process's clock. Recipients acknowledge in the background.
pub async fn online(
    senders: &[Arc<Connection>],
    recipients: Vec<Connection>,
    jobs: Vec<Vec<SendJob>>,
    rate: f64,
) -> Result<(Online, Vec<Connection>)> {
    let sent_at: Arc<Mutex<HashMap<MessageId, Instant>>> = Arc::default();
    let stop = CancellationToken::new();
    let mut receivers = Vec::new();
    for mut conn in recipients {
        let (sent_at, stop) = (sent_at.clone(), stop.clone());
        receivers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut to_ack = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            loop {
                tokio::select! {
                    event = conn.next_event() => {
                        let Some(event) = event else { break };
                        let now = Instant::now();
                        let Event::Message(m) = event else { continue };
                        if let Some(t0) = sent_at.lock().unwrap_or_else(|p| p.into_inner()).remove(&m.id) {
                            latencies.push(now.duration_since(t0).as_micros() as u64);
                        }
                        to_ack.push(m.id);
                        if to_ack.len() >= 100 {
                            let _ = conn.start(Request::Ack { ids: std::mem::take(&mut to_ack) }).await;
                        }
                    }
                    _ = tick.tick() => {
                        if !to_ack.is_empty() {
                            let _ = conn.start(Request::Ack { ids: std::mem::take(&mut to_ack) }).await;
                        }
                    }
                    _ = stop.cancelled() => break,
                }
            }
            if !to_ack.is_empty() {
                let _ = conn.call(Request::Ack { ids: to_ack }).await;
            }
            (latencies, conn)
        }));
    }

    let (tx, mut rx) = mpsc::unbounded_channel::<Result<(), String>>();
    let total: usize = jobs.iter().map(Vec::len).sum();
    let mut queues: Vec<std::vec::IntoIter<SendJob>> =
        jobs.into_iter().map(Vec::into_iter).collect();
    let period = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut out = Online::default();
    let mut all_ids = HashSet::with_capacity(total);
    let started = Instant::now();
    let mut k = 0usize;
    while (out.sent as usize) < total {
        tick.tick().await;
        let s = k % queues.len();
        k += 1;
        let Some(job) = queues[s].next() else {
            continue;
        };
        all_ids.insert(job.id);
        sent_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(job.id, Instant::now());
        let pending = senders[s].start(job.request()).await?;
        out.sent += 1;
        let tx = tx.clone();
        tokio::spawn(async move {
            let r = match pending.await {
                Ok(Response::Accepted { .. }) => Ok(()),
                Ok(Response::Error { code, message, .. }) => Err(format!("{code:?}: {message}")),
                Ok(other) => Err(format!("unexpected answer {other:?}")),
                Err(_) => Err("the connection closed".into()),
            };
            let _ = tx.send(r);
        });
    }
    out.send_seconds = started.elapsed().as_secs_f64();
    drop(tx);
    while let Some(r) = rx.recv().await {
        if let Err(e) = r {
            out.send_errors += 1;
            out.first_error.get_or_insert(e);
        }
    }
    // Wait for the last pushes (at most 10 s).
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && !sent_at.lock().unwrap_or_else(|p| p.into_inner()).is_empty()
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.cancel();
    let mut conns = Vec::new();
    for r in receivers {
        let (latencies, conn) = r.await?;
        out.latencies_us.extend(latencies);
        conns.push(conn);
    }
    // Whatever was not pushed must still be queued.
    let missing: HashSet<MessageId> = sent_at
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .keys()
        .copied()
        .collect();
    if !missing.is_empty() {
        for conn in &mut conns {
            let d = drain(conn, None, Duration::ZERO).await?;
            out.not_pushed += d.ids.iter().filter(|id| missing.contains(id)).count() as u64;
        }
    }
    let lost = missing.len() as u64 - out.not_pushed;
    if lost > out.send_errors {
        bail!("{lost} messages accepted by the server were neither pushed nor queued");
    }
    Ok((out, conns))
}
