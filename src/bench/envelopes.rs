//! Envelope sealing and opening rates on the load generator, one thread,
//! for P-256 → P-256 and RSA-3072 → RSA-3072.

use std::time::{Duration, Instant};

use anyhow::Result;

use super::report::Row;
use crate::crypto::{self, Identity, Outgoing};
use crate::domain::{MessageId, PhoneNumber};
use crate::protocol::KeyType;

/// Runs each operation for at least `budget` (and at least a few times).
pub fn rates(text_bytes: usize, budget: Duration) -> Result<Row> {
    let text = super::load::text_of(text_bytes);
    let mut row = Row::new("crypto")
        .with("text_bytes", text_bytes as u64)
        .with("threads", 1);
    for (key_type, name) in [(KeyType::P256, "p256"), (KeyType::Rsa, "rsa")] {
        let keygen = Instant::now();
        let alice = Identity::generate(key_type);
        let bob = Identity::generate(key_type);
        row.set(
            &format!("keygen_{name}_ms"),
            keygen.elapsed().as_secs_f64() * 1000.0 / 2.0,
        );
        let (a_phone, b_phone) = (
            PhoneNumber::parse("+12025550101")?,
            PhoneNumber::parse("+12025550102")?,
        );
        let (a_pub, b_pub) = (alice.public_key(), bob.public_key());
        let mut sealed = Vec::new();
        let started = Instant::now();
        while sealed.len() < 5 || started.elapsed() < budget {
            let msg = Outgoing {
                id: MessageId::random(),
                counter: sealed.len() as u64 + 1,
                sent_at_ms: 1,
                sender_phone: &a_phone,
                recipient_phone: &b_phone,
                text: &text,
            };
            sealed.push(crypto::seal(&alice, &b_pub, &msg)?);
        }
        row.set(
            &format!("seal_{name}_per_s"),
            sealed.len() as f64 / started.elapsed().as_secs_f64(),
        );
        let started = Instant::now();
        let mut opened = 0usize;
        for envelope in sealed.iter().cycle() {
            crypto::open(&bob, &b_phone, &a_pub, envelope)?;
            opened += 1;
            if opened >= 5 && started.elapsed() >= budget {
                break;
            }
        }
        row.set(
            &format!("open_{name}_per_s"),
            opened as f64 / started.elapsed().as_secs_f64(),
        );
        if key_type == KeyType::Rsa {
            row.set("rsa_bits", 3072);
        }
    }
    Ok(row)
}
