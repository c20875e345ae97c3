//! Each cycle's plan, drawn from the seed: which messages go where, which
//! server dies, and at what moment. The moment is an event count (the n-th
//! accepted send, the n-th delivery, the n-th byte of link traffic
//! towards the victim) plus a short delay, so the same seed and build kill
//! at the same point of the same work; thread timing still varies what is
//! in flight at that point.

use std::time::Duration;

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

use crate::proxy::Side;

/// Longest filler after a message's key: texts of 0 to 2 KiB, so some
/// relays and fetches span several TLS records.
const MAX_FILLER: usize = 2048;

/// Longest delay from the trigger to SIGKILL.
const MAX_DELAY_US: u64 = 3000;

/// Longest time a killed server stays down.
const MAX_DOWNTIME_MS: u64 = 200;

/// Bytes of link traffic towards each side per message, at least: a
/// relayed message towards B, an acknowledgement towards A.
const LINK_BYTES_TOWARDS_B: u64 = 400;
const LINK_BYTES_TOWARDS_A: u64 = 40;

/// The event that sets off the kill.
#[derive(Debug, Clone, Copy)]
pub enum Trigger {
    /// The n-th send of the cycle answered `accepted`.
    Accepted(u64),
    /// The n-th message of the cycle delivered to a recipient.
    Delivered(u64),
    /// The n-th byte of link traffic towards the victim in the cycle.
    LinkBytes(u64),
}

/// One message to send.
#[derive(Debug, Clone, Copy)]
pub struct Send {
    pub recipient: usize,
    pub filler: usize,
}

/// One cycle's plan.
#[derive(Debug)]
pub struct Cycle {
    /// Per sender, the messages it sends in order.
    pub sends: Vec<Vec<Send>>,
    /// Which server dies (single-server runs have only `A`).
    pub victim: Side,
    pub trigger: Trigger,
    pub delay: Duration,
    pub downtime: Duration,
}

/// The shape of the work, from the command line.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub senders: usize,
    pub recipients: usize,
    pub messages: usize,
    /// Two servers: senders on A, recipients on B.
    pub pair: bool,
}

/// Draws the cycles' plans from one seed.
pub struct Planner {
    rng: Xoshiro256PlusPlus,
    shape: Shape,
}

impl Planner {
    pub fn new(seed: u64, shape: Shape) -> Self {
        Self {
            rng: Xoshiro256PlusPlus::seed_from_u64(seed),
            shape,
        }
    }

    pub fn next_cycle(&mut self) -> Cycle {
        let Shape {
            senders,
            recipients,
            messages,
            pair,
        } = self.shape;
        let sends = (0..senders)
            .map(|_| {
                (0..messages)
                    .map(|_| Send {
                        recipient: self.rng.random_range(0..recipients),
                        filler: self.rng.random_range(0..=MAX_FILLER),
                    })
                    .collect()
            })
            .collect();
        let total = (senders * messages).max(1) as u64;
        let (victim, trigger) = if pair {
            let victim = if self.rng.random_bool(0.5) {
                Side::A
            } else {
                Side::B
            };
            let per_message = match victim {
                Side::A => LINK_BYTES_TOWARDS_A,
                Side::B => LINK_BYTES_TOWARDS_B,
            };
            let bytes = self.rng.random_range(1..=total * per_message);
            (victim, Trigger::LinkBytes(bytes))
        } else {
            let n = self.rng.random_range(1..=total);
            let trigger = if self.rng.random_bool(0.5) {
                Trigger::Accepted(n)
            } else {
                Trigger::Delivered(n)
            };
            (Side::A, trigger)
        };
        Cycle {
            sends,
            victim,
            trigger,
            delay: Duration::from_micros(self.rng.random_range(0..=MAX_DELAY_US)),
            downtime: Duration::from_millis(self.rng.random_range(0..=MAX_DOWNTIME_MS)),
        }
    }
}
