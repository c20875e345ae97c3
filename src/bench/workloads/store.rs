//! W1 (offline store: senders send as fast as they are acknowledged to
//! recipients who are not connected) and W2 (the recipients drain it), and
//! the store and drain phases that W4 and W6 reuse.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail};

use super::{Bench, LOGIN_CONCURRENCY, Target, close_all, fill, login_shared, settle, timed_sends};
use crate::bench::envelopes::Contact;
use crate::bench::load::{self, SendJob};
use crate::bench::meter::Meter;
use crate::bench::report::{Latencies, Row};
use crate::bench::users::{self, User};
use crate::domain::MessageId;

/// What a store phase produced.
pub(super) struct StoreOutcome {
    pub row: Row,
    pub ids: HashSet<MessageId>,
    pub envelopes: Envelopes,
    /// Messages sent to each recipient, in the recipients' order.
    pub per_recipient: Vec<usize>,
}

/// Messages that may still be on their way to the draining server (W4):
/// how many each recipient should get, and how long to wait without
/// progress for the rest.
pub(super) struct InFlight<'a> {
    pub per_recipient: &'a [usize],
    pub patience: Duration,
}

/// What W1 stored for W2 to drain.
pub(super) struct Stored {
    ids: HashSet<MessageId>,
    envelopes: Envelopes,
}

/// The envelopes a timed phase carried: their kind (PROTOCOL.md §14.1)
/// and mean size, so a report says what was measured.
#[derive(Clone, Copy)]
pub(super) struct Envelopes {
    kind: u64,
    mean_bytes: f64,
}

impl Envelopes {
    pub(super) fn of(contact: Contact, jobs: &[SendJob]) -> Self {
        Self {
            kind: contact.envelope_kind(),
            mean_bytes: load::mean_envelope_bytes(jobs),
        }
    }

    pub(super) fn describe(self, row: &mut Row) {
        row.set("envelope_kind", self.kind);
        row.set("envelope_bytes", self.mean_bytes);
    }
}

impl Bench {
    /// Which envelopes the timed phases carry (`--first-contact`).
    pub(super) fn contact(&self) -> Contact {
        Contact::from_flag(self.args.first_contact)
    }

    pub(super) async fn w1(&mut self) -> Result<()> {
        let row = self.store_for_w2("W1").await?;
        self.emit(row);
        Ok(())
    }

    pub(super) async fn w2(&mut self) -> Result<()> {
        if self.stored.is_none() {
            eprintln!("  W2 drains what W1 stores: running W1 first (not reported)");
            self.store_for_w2("W1").await?;
        }
        let target = self.pairs().await?;
        let stored = self.stored.take().expect("stored above");
        let mut row = drain_phase("W2", &target, &self.users.recipients, &stored.ids, None).await?;
        stored.envelopes.describe(&mut row);
        self.emit(row);
        Ok(())
    }

    /// W1's store phase; what it stored waits for W2.
    async fn store_for_w2(&mut self, workload: &str) -> Result<Row> {
        let target = self.pairs().await?;
        let (senders, recipients) = (self.users.senders.clone(), self.users.recipients.clone());
        let out = self
            .store_phase(workload, &target, &senders, &recipients, self.args.messages)
            .await?;
        self.stored = Some(Stored {
            ids: out.ids,
            envelopes: out.envelopes,
        });
        Ok(out.row)
    }

    /// Seals `n` messages, logs the senders in, and sends them as fast as
    /// they are acknowledged (the timed phase).
    pub(super) async fn store_phase(
        &mut self,
        workload: &str,
        target: &Target,
        senders: &Arc<Vec<User>>,
        recipients: &Arc<Vec<User>>,
        n: u64,
    ) -> Result<StoreOutcome> {
        let specs = self.users.counters.spread(senders, recipients, n);
        let mut per_recipient = vec![0usize; recipients.len()];
        specs.iter().for_each(|s| per_recipient[s.recipient] += 1);
        let owners: Vec<usize> = specs.iter().map(|s| s.sender).collect();
        let (jobs, seal_secs) = load::preseal(
            senders.clone(),
            recipients.clone(),
            specs,
            self.text.clone(),
            self.contact(),
        )
        .await?;
        let envelopes = Envelopes::of(self.contact(), &jobs);
        let ids: HashSet<MessageId> = jobs.iter().map(|j| j.id).collect();
        let mut per_sender: Vec<Vec<SendJob>> = vec![Vec::new(); senders.len()];
        for (job, owner) in jobs.into_iter().zip(owners) {
            per_sender[owner].push(job);
        }
        let conns = login_shared(&target.ep, senders).await?;
        let (sent, measured) = timed_sends(target, conns, per_sender, self.args.window).await?;
        sent.ensure_accepted(workload)?;
        let mut row = Row::new(workload);
        fill(
            &mut row,
            n,
            &measured,
            &Latencies::from_micros(sent.latencies_us),
        );
        row.set("senders", senders.len() as u64);
        row.set("recipients", recipients.len() as u64);
        row.set("window", self.args.window as u64);
        row.set("text_bytes", self.args.text_bytes as u64);
        row.set("preseal_per_s", n as f64 / seal_secs);
        envelopes.describe(&mut row);
        Ok(StoreOutcome {
            row,
            ids,
            envelopes,
            per_recipient,
        })
    }
}

/// Logs the recipients in and fetches + acknowledges until every expected
/// message came (the timed phase). Fails unless exactly the expected
/// distinct messages arrived.
pub(super) async fn drain_phase(
    workload: &str,
    target: &Target,
    recipients: &[User],
    expected: &HashSet<MessageId>,
    in_flight: Option<InFlight<'_>>,
) -> Result<Row> {
    let conns = users::login_many(&target.ep, recipients, LOGIN_CONCURRENCY).await?;
    settle(&target.pids).await;
    let meter = Meter::start(&target.pids);
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, mut conn)| {
            let expect = in_flight.as_ref().map(|f| f.per_recipient[i]);
            let patience = in_flight.as_ref().map_or(Duration::ZERO, |f| f.patience);
            tokio::spawn(async move {
                let d = load::drain(&mut conn, expect, patience).await;
                (d, conn)
            })
        })
        .collect();
    let mut received = Vec::with_capacity(expected.len());
    let (mut fetches, mut deleted) = (0, 0);
    let mut conns = Vec::new();
    for t in tasks {
        let (d, conn) = t.await?;
        let d = d?;
        received.extend(d.ids);
        fetches += d.fetches;
        deleted += d.deleted;
        conns.push(Arc::new(conn));
    }
    let measured = meter.finish();
    close_all(conns).await;
    let distinct: HashSet<MessageId> = received.iter().copied().collect();
    let known = distinct.iter().filter(|id| expected.contains(id)).count();
    let unknown = distinct.len() - known;
    let duplicates = received.len() - distinct.len();
    if known != expected.len() || unknown != 0 {
        bail!(
            "{workload}: {} distinct messages were expected, {known} of them arrived \
             ({unknown} unexpected, {duplicates} duplicates)",
            expected.len()
        );
    }
    let mut row = Row::new(workload);
    fill(&mut row, known as u64, &measured, &Latencies::default());
    row.set("recipients", recipients.len() as u64);
    row.set("fetches", fetches);
    row.set("deleted", deleted);
    row.set("duplicates", duplicates as u64);
    Ok(row)
}
