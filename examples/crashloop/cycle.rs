//! One cycle: the senders send their messages (retrying through the
//! crash), the planned event sets off SIGKILL of the victim, which stays
//! down for the planned time and is started again on the same data; the
//! cycle ends when every message of it is accepted.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use carrier::domain::PhoneNumber;

use crate::plan::{self, Trigger};
use crate::proxy::{Crossed, Link, Side};
use crate::servers::Server;
use crate::users::{self, Progress, Shared, User};

/// How long a cycle's sends may take once the victim is back.
const CYCLE_PATIENCE: Duration = Duration::from_secs(120);

/// Everything a run holds.
pub struct World {
    /// A, then B in a two-server run.
    pub servers: Vec<Server>,
    pub senders: Vec<Arc<User>>,
    pub recipients: Vec<Arc<User>>,
    pub recipient_phones: Arc<Vec<PhoneNumber>>,
    pub shared: Arc<Shared>,
    /// The proxies between A and B in a two-server run.
    pub link: Option<Link>,
}

/// How a cycle's kill went.
#[derive(Debug)]
pub struct Kill {
    /// The planned event came before the cycle's sends were done (else the
    /// kill came right after them).
    pub on_time: bool,
    /// Accepted messages not yet delivered when the server died.
    pub in_flight: usize,
}

pub async fn run(world: &mut World, cycle: u32, plan: &plan::Cycle) -> Result<Kill> {
    world.shared.progress.send_replace(Progress::default());
    let base = world.link.as_ref().map(|l| l.traffic().now());
    let mut sends = Box::pin(futures::future::try_join_all(
        world.senders.iter().enumerate().map(|(i, user)| {
            let (user, shared, phones) = (
                user.clone(),
                world.shared.clone(),
                world.recipient_phones.clone(),
            );
            let mine = plan.sends[i].clone();
            tokio::spawn(
                async move { users::send_all(&user, i, cycle, &mine, &phones, &shared).await },
            )
        }),
    ));
    let mut sent = None;
    let on_time = tokio::select! {
        _ = triggered(&world.shared, world.link.as_ref(), base, plan.trigger, plan.victim) => true,
        done = &mut sends => {
            sent = Some(done);
            false
        }
    };
    tokio::time::sleep(plan.delay).await;
    let victim = victim(&mut world.servers, plan.victim);
    victim.kill_9().await?;
    let (delivered, accepted) = world.shared.ledger().accepted_delivered();
    tokio::time::sleep(plan.downtime).await;
    victim
        .start()
        .await
        .with_context(|| format!("restarting {} after cycle {cycle}'s kill", victim.name))?;
    let sent = match sent {
        Some(done) => done,
        None => tokio::time::timeout(CYCLE_PATIENCE, sends)
            .await
            .map_err(|_| {
                anyhow!("cycle {cycle}: the sends did not finish within {CYCLE_PATIENCE:?}")
            })?,
    };
    for outcome in sent? {
        outcome?;
    }
    Ok(Kill {
        on_time,
        in_flight: accepted - delivered,
    })
}

fn victim(servers: &mut [Server], side: Side) -> &mut Server {
    match side {
        Side::A => &mut servers[0],
        Side::B => &mut servers[1],
    }
}

/// Resolves when the planned event has happened in this cycle.
async fn triggered(
    shared: &Shared,
    link: Option<&Link>,
    base: Option<Crossed>,
    trigger: Trigger,
    side: Side,
) {
    let mut progress = shared.progress.subscribe();
    let _ = match trigger {
        Trigger::Accepted(n) => progress.wait_for(|p| p.accepted >= n).await.map(drop),
        Trigger::Delivered(n) => progress.wait_for(|p| p.delivered >= n).await.map(drop),
        Trigger::LinkBytes(n) => {
            let (link, base) = (link.expect("a link"), base.expect("a link"));
            let from = base.towards(side);
            link.traffic()
                .wait_for(|c| c.towards(side) >= from + n)
                .await;
            Ok(())
        }
    };
}

/// A short description of a kill, for the cycle's line.
pub fn describe(plan: &plan::Cycle, kill: &Kill) -> String {
    let victim = match plan.victim {
        Side::A => "A",
        Side::B => "B",
    };
    let at = match plan.trigger {
        Trigger::Accepted(n) => format!("accepted send {n}"),
        Trigger::Delivered(n) => format!("delivery {n}"),
        Trigger::LinkBytes(n) => format!("byte {n} of link traffic towards it"),
    };
    let when = if kill.on_time {
        format!("at {at}")
    } else {
        format!("after the cycle's sends (before {at})")
    };
    format!(
        "killed {victim} {when} +{:.1} ms, down {} ms; {} accepted messages undelivered",
        plan.delay.as_secs_f64() * 1000.0,
        plan.downtime.as_millis(),
        kill.in_flight
    )
}
