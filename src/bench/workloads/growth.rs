//! W6: W1's store rate (and the drain after it) measured again while the
//! server's queue already holds `--w6-sizes` messages for other users.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::store::drain_phase;
use super::{Bench, LOGIN_CONCURRENCY, Target, close_all, login_shared};
use crate::bench::load::{self, SealSpec, SendJob};
use crate::bench::users::{self, User};
use crate::domain::MessageId;

/// Sends awaiting their acknowledgment per connection while preloading.
const PRELOAD_WINDOW: usize = 256;

impl Bench {
    pub(super) async fn w6(&mut self) -> Result<()> {
        let target = self.pairs().await?;
        if self.stored.take().is_some() {
            // W1 ran without W2: empty the recipients' queues first, so each
            // level measures and drains only its own messages.
            let mut conns =
                users::login_many(&target.ep, &self.users.recipients, LOGIN_CONCURRENCY).await?;
            for conn in &mut conns {
                load::drain(conn, None, Duration::ZERO).await?;
            }
            close_all(conns.into_iter().map(Arc::new).collect()).await;
        }
        let s_n = self.args.senders;
        let wanted = (self.args.w6_recipients / s_n).max(1) * s_n;
        let crowd = self.crowd(wanted).await?;
        let crowd: Arc<Vec<User>> = Arc::new(crowd[..wanted].to_vec());
        let senders = self.users.senders.clone();
        let recipients = self.users.recipients.clone();
        // One real envelope per crowd recipient; the preload sends copies
        // with fresh ids (the server reads only the clear header, so its
        // work is that of any message of this size).
        let specs: Vec<SealSpec> = (0..wanted)
            .map(|r| SealSpec {
                sender: r % s_n,
                recipient: r,
                counter: 1,
            })
            .collect();
        let (templates, _) = load::preseal(
            senders.clone(),
            crowd.clone(),
            specs,
            self.text.clone(),
            self.contact(),
        )
        .await?;
        let templates = Arc::new(templates);
        let mut sizes = self.args.w6_sizes.clone();
        sizes.sort_unstable();
        sizes.dedup();
        for size in sizes {
            if self.preloaded < size {
                self.preload(&target, &senders, &templates, size).await?;
            }
            let mut out = self
                .store_phase("W6", &target, &senders, &recipients, self.args.messages)
                .await?;
            // Drain what was measured so every level measures the same W1.
            let started = Instant::now();
            let drained = drain_phase("W6-drain", &target, &recipients, &out.ids, None).await?;
            out.row.set("variant", format!("{size} queued"));
            out.row.set("queued_before", self.preloaded);
            out.row.set("queued_over_recipients", wanted as u64);
            out.row
                .set("drain_rate_per_s", drained.rate_per_s.unwrap_or_default());
            out.row
                .set("drain_seconds", started.elapsed().as_secs_f64());
            self.emit(out.row);
        }
        Ok(())
    }

    /// Queues messages until `size` wait for the crowd.
    async fn preload(
        &mut self,
        target: &Target,
        senders: &Arc<Vec<User>>,
        templates: &Arc<Vec<SendJob>>,
        size: u64,
    ) -> Result<()> {
        let from = self.preloaded;
        let count = size - from;
        let s_n = senders.len() as u64;
        let crowd_n = templates.len() as u64;
        eprintln!("  preloading {count} messages ({from} → {size} queued)");
        let conns = login_shared(&target.ep, senders).await?;
        let started = Instant::now();
        let tasks: Vec<_> = conns
            .iter()
            .enumerate()
            .map(|(s, conn)| {
                let templates = templates.clone();
                // Sender s takes every message g ≡ s (mod S); with the crowd
                // a multiple of S, its recipient g % crowd is also ≡ s.
                let first = from + (s as u64 + s_n - from % s_n) % s_n;
                let jobs = (first..size)
                    .step_by(s_n as usize)
                    .map(move |g| templates[(g % crowd_n) as usize].with_id(MessageId::random()));
                tokio::spawn(load::pipelined_send(conn.clone(), jobs, PRELOAD_WINDOW))
            })
            .collect();
        let sent = load::joined(tasks).await?;
        close_all(conns).await;
        let secs = started.elapsed().as_secs_f64();
        let done = sent.latencies_us.len();
        eprintln!(
            "  preloaded {done} messages in {secs:.1} s ({:.0}/s)",
            done as f64 / secs
        );
        sent.ensure_accepted("W6 preload")?;
        self.preloaded = size;
        Ok(())
    }
}
