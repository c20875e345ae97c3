//! W7, multi-device fan-out: senders with 2 devices each send to offline
//! recipients with 3 devices each, so every message is 4 envelopes (one
//! per recipient device and the sync copy for the sender's other device,
//! PROTOCOL.md §14.3), all under the message's id; then every device
//! drains its own queue. Reports envelopes/s and messages/s for both
//! phases, and the server's CPU per message and per envelope.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Result, anyhow, bail};

use super::{Bench, LOGIN_CONCURRENCY, close_all, fill, login_shared, settle, timed_sends};
use crate::bench::envelopes::running_session_between;
use crate::bench::load::{self, SendJob};
use crate::bench::meter::Meter;
use crate::bench::report::{Latencies, Row};
use crate::bench::users::{self, LIST_VERSION, User, UserDevice};
use crate::crypto::v2::{Content, Session};
use crate::domain::MessageId;

/// Devices of each W7 sender and of each W7 recipient.
pub(super) const SENDER_DEVICES: u32 = 2;
pub(super) const RECIPIENT_DEVICES: u32 = 3;
/// Envelopes per W7 message.
const ENVELOPES: u64 = (RECIPIENT_DEVICES + SENDER_DEVICES - 1) as u64;

impl Bench {
    pub(super) async fn w7(&mut self) -> Result<()> {
        let target = self.main().await?;
        let n = self.args.senders;
        let concurrency = self.args.register_concurrency;
        let phones = self.users.phones.take(2 * n);
        let (to_send, to_receive) = phones.split_at(n);
        let senders = Arc::new(
            users::register_many(&target.ep, to_send.to_vec(), concurrency, SENDER_DEVICES).await?,
        );
        let recipients = Arc::new(
            users::register_many(
                &target.ep,
                to_receive.to_vec(),
                concurrency,
                RECIPIENT_DEVICES,
            )
            .await?,
        );
        let messages = self.args.messages;
        let (per_sender, seal_secs) = preseal(
            senders.clone(),
            recipients.clone(),
            messages,
            self.text.clone(),
        )
        .await?;
        let envelopes = messages * ENVELOPES;

        let conns = login_shared(&target.ep, &senders).await?;
        let window = self.args.window;
        let (sent, measured) = timed_sends(&target, conns, per_sender, window).await?;
        sent.ensure_accepted("W7")?;
        let mut row = Row::new("W7");
        fill(
            &mut row,
            messages,
            &measured,
            &Latencies::from_micros(sent.latencies_us),
        );
        describe(&mut row, envelopes, measured.seconds, measured.cpu_seconds);
        row.set("senders", n as u64);
        row.set("recipients", n as u64);
        row.set("window", window as u64);
        row.set("text_bytes", self.args.text_bytes as u64);
        row.set("preseal_envelopes_per_s", envelopes as f64 / seal_secs);
        self.emit(row);

        let row = drain(&target, &senders, &recipients, messages).await?;
        self.emit(row);
        Ok(())
    }
}

/// Envelope figures beside the per-message ones `fill` sets.
fn describe(row: &mut Row, envelopes: u64, seconds: f64, cpu_seconds: Option<f64>) {
    row.set("envelopes", envelopes);
    row.set("envelopes_per_message", ENVELOPES);
    row.set("envelopes_per_s", envelopes as f64 / seconds.max(1e-9));
    if let Some(cpu) = cpu_seconds {
        row.set("server_cpu_us_per_envelope", cpu * 1e6 / envelopes as f64);
    }
}

/// Seals `messages` messages, sender k % S to recipient (s + k / S) % R,
/// each as one envelope per recipient device and a sync copy for the
/// sender's device 2, in running sessions from the sender's device 1.
/// Returns each sender's jobs in sending order and the seconds it took.
async fn preseal(
    senders: Arc<Vec<User>>,
    recipients: Arc<Vec<User>>,
    messages: u64,
    text: Arc<String>,
) -> Result<(Vec<Vec<SendJob>>, f64)> {
    let started = Instant::now();
    let s_n = senders.len();
    let jobs = tokio::task::spawn_blocking(move || {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let (senders, recipients, text) = (&senders, &recipients, &text);
                    scope.spawn(move || {
                        (0..s_n)
                            .filter(|s| s % threads == t)
                            .map(|s| {
                                let count = messages as usize / s_n
                                    + usize::from(s < messages as usize % s_n);
                                seal_for(s, count, senders, recipients, text).map(|j| (s, j))
                            })
                            .collect::<Result<Vec<_>>>()
                    })
                })
                .collect();
            let mut out = vec![Vec::new(); s_n];
            for h in handles {
                for (s, jobs) in h
                    .join()
                    .map_err(|_| anyhow!("a sealing thread panicked"))??
                {
                    out[s] = jobs;
                }
            }
            Ok::<_, anyhow::Error>(out)
        })
    })
    .await??;
    Ok((jobs, started.elapsed().as_secs_f64()))
}

/// Sender `s`'s `count` messages (its k-th goes to recipient (s + k) % R).
fn seal_for(
    s: usize,
    count: usize,
    senders: &[User],
    recipients: &[User],
    text: &str,
) -> Result<Vec<SendJob>> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64;
    let sender = &senders[s];
    let from = &sender.device;
    let mut sessions: HashMap<(usize, u32), Session> = HashMap::new();
    let mut jobs = Vec::with_capacity(count * ENVELOPES as usize);
    for k in 0..count {
        let r = (s + k) % recipients.len();
        let recipient = &recipients[r];
        let id = MessageId::random();
        let to_them = Content::Text(text.into());
        for device in recipient.devices.iter() {
            let session = session(&mut sessions, (r, device.id), from, device, text, now)?;
            let envelope = session.seal(&from.local, id, &to_them, now)?;
            jobs.push(job(id, recipient, device, envelope));
        }
        let copy = Content::SentCopy {
            to: recipient.phone.clone(),
            id,
            text: text.into(),
        };
        for device in &sender.devices[1..] {
            let key = (usize::MAX, device.id);
            let session = session(&mut sessions, key, from, device, text, now)?;
            let envelope = session.seal(&from.local, id, &copy, now)?;
            jobs.push(job(id, sender, device, envelope));
        }
    }
    Ok(jobs)
}

/// The running session from `from` to `to`, set up on first use.
fn session<'a>(
    sessions: &'a mut HashMap<(usize, u32), Session>,
    key: (usize, u32),
    from: &UserDevice,
    to: &UserDevice,
    text: &str,
    now: u64,
) -> Result<&'a mut Session> {
    Ok(match sessions.entry(key) {
        Entry::Occupied(e) => e.into_mut(),
        Entry::Vacant(e) => e.insert(running_session_between(from, to, text, now)?),
    })
}

fn job(id: MessageId, to: &User, device: &UserDevice, envelope: Vec<u8>) -> SendJob {
    SendJob {
        id,
        to: to.phone.to_string(),
        device: device.id,
        list_version: LIST_VERSION,
        envelope,
    }
}

/// Every recipient device and every sender's other device drains its
/// queue (the timed phase); each must find exactly its envelopes.
async fn drain(
    target: &super::Target,
    senders: &[User],
    recipients: &[User],
    messages: u64,
) -> Result<Row> {
    let s_n = senders.len() as u64;
    let mut expected = Vec::new();
    for (r, user) in recipients.iter().enumerate() {
        // Sender s sends its k-th message to (s + k) % R.
        let count = (0..s_n)
            .map(|s| sent_to(s, r as u64, s_n, recipients.len() as u64, messages))
            .sum::<u64>();
        for device in user.devices.iter() {
            expected.push((user.clone(), device.clone(), count));
        }
    }
    for (s, user) in senders.iter().enumerate() {
        let count = messages / s_n + u64::from((s as u64) < messages % s_n);
        for device in &user.devices[1..] {
            expected.push((user.clone(), device.clone(), count));
        }
    }
    let mut conns = Vec::with_capacity(expected.len());
    for chunk in expected.chunks(LOGIN_CONCURRENCY) {
        let logins = chunk
            .iter()
            .map(|(user, device, _)| users::login_as(&target.ep, user, device));
        for conn in futures::future::join_all(logins).await {
            conns.push(conn?);
        }
    }
    settle(&target.pids).await;
    let meter = Meter::start(&target.pids);
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut conn| {
            tokio::spawn(async move {
                let d = load::drain(&mut conn, None, std::time::Duration::ZERO).await;
                (d, conn)
            })
        })
        .collect();
    let mut got = 0u64;
    let mut done = Vec::new();
    for (t, (user, device, count)) in tasks.into_iter().zip(&expected) {
        let (d, conn) = t.await?;
        let d = d?;
        let distinct: std::collections::HashSet<_> = d.ids.iter().collect();
        if distinct.len() as u64 != *count {
            bail!(
                "W7: device {} of {} expected {count} envelopes and drained {}",
                device.id,
                user.phone,
                distinct.len()
            );
        }
        got += distinct.len() as u64;
        done.push(Arc::new(conn));
    }
    let measured = meter.finish();
    close_all(done).await;
    let mut row = Row::new("W7 drain");
    fill(&mut row, messages, &measured, &Latencies::default());
    describe(&mut row, got, measured.seconds, measured.cpu_seconds);
    row.set("devices", expected.len() as u64);
    Ok(row)
}

/// How many of sender `s`'s messages go to recipient `r`: its k-th message,
/// for k below its share of `messages`, goes to (s + k) % `r_n`.
fn sent_to(s: u64, r: u64, s_n: u64, r_n: u64, messages: u64) -> u64 {
    let count = messages / s_n + u64::from(s < messages % s_n);
    let first = (r + r_n - s % r_n) % r_n;
    if first >= count {
        0
    } else {
        (count - first).div_ceil(r_n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_is_counted_once_across_recipients() {
        for (s_n, r_n, messages) in [(10u64, 10u64, 10_000u64), (3, 4, 17), (4, 3, 5), (1, 1, 1)] {
            let total: u64 = (0..s_n)
                .flat_map(|s| (0..r_n).map(move |r| sent_to(s, r, s_n, r_n, messages)))
                .sum();
            assert_eq!(total, messages, "{s_n} senders, {r_n} recipients");
        }
        // Sender 1 of 3, 17 messages: 6 of them, to 1, 2, 3, 0, 1, 2.
        assert_eq!(sent_to(1, 1, 3, 4, 17), 2);
        assert_eq!(sent_to(1, 0, 3, 4, 17), 1);
    }
}
