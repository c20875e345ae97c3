//! Protocol v2 sealing and opening rates on the load generator, one thread:
//! the first message of a new session (PQXDH with ML-KEM-768 on the
//! recipient's last-resort keys, and on the other side the prekey
//! message's decapsulation) and a message in a running session (one chain
//! step). Every v2 envelope is P-256, so the running-session rates are
//! reported as `seal_p256_per_s` and `open_p256_per_s`; there is no RSA in
//! protocol v2. `cargo bench --bench sessions` measures the same with
//! criterion. [`running_session`] brings a pair of bench users' session to
//! that running state before the load generator seals its timed messages.

use std::time::{Duration, Instant};

use anyhow::Result;

use super::report::Row;
use super::users::{self, User, UserDevice};
use crate::crypto::Identity;
use crate::crypto::v2::{
    Content, DeviceCertificate, DeviceId, DeviceKey, DeviceList, Envelope, LocalDevice,
    PrekeyBundle, PrekeyKind, PrekeyStore, Session, VerifiedBundle, VerifiedDevice,
};
use crate::domain::{MessageId, PhoneNumber};
use crate::protocol::KeyType;

/// One account with one device, as a contact sees it after `lookup`.
struct Party {
    local: LocalDevice,
    store: PrekeyStore,
    seen: VerifiedDevice,
    bundle: VerifiedBundle,
}

impl Party {
    fn new(phone: &str, now: u64) -> Result<Self> {
        let account = Identity::generate(KeyType::P256);
        let phone = PhoneNumber::parse(phone)?;
        let (id, key) = (DeviceId::new(1)?, DeviceKey::generate());
        let certificate = DeviceCertificate::issue(&account, &phone, id, &key.public(), "b", now)?;
        let list = DeviceList::issue(&account, &phone, 1, now, vec![(id, key.public())])?
            .verify(&account.public_key(), &phone)?;
        let mut store = PrekeyStore::new();
        let published = store.maintain(&key, now);
        let of_kind = |kind| published.iter().find(|p| p.kind == kind).cloned();
        let (Some(signed_prekey), Some(kem_prekey)) = (
            of_kind(PrekeyKind::Signed),
            of_kind(PrekeyKind::KemLastResort),
        ) else {
            anyhow::bail!("a new prekey store published no last-resort keys");
        };
        let bundle = PrekeyBundle {
            certificate: certificate.clone(),
            signed_prekey,
            kem_prekey,
        }
        .verify(&list, now)?;
        Ok(Self {
            seen: list.certify(&certificate)?,
            local: LocalDevice::new(phone, id, key),
            store,
            bundle,
        })
    }
}

/// Runs `op` for at least `budget` and at least 5 times; its rate per second.
fn rate(budget: Duration, mut op: impl FnMut() -> Result<()>) -> Result<f64> {
    let started = Instant::now();
    let mut n = 0u64;
    while n < 5 || started.elapsed() < budget {
        op()?;
        n += 1;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// Runs each operation for at least `budget` (and at least a few times).
pub fn rates(text_bytes: usize, budget: Duration) -> Result<Row> {
    let content = Content::Text(super::load::text_of(text_bytes));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64;
    let (alice, mut bob) = (
        Party::new("+12025550101", now)?,
        Party::new("+12025550102", now)?,
    );
    let mut row = Row::new("crypto")
        .with("text_bytes", text_bytes as u64)
        .with("threads", 1)
        .with("protocol", 2);
    let first = |alice: &Party| -> Result<Vec<u8>> {
        let mut session = Session::initiate(&alice.local, &bob.bundle, now);
        Ok(session.seal(&alice.local, MessageId::random(), &content, now)?)
    };
    row.set("seal_new_per_s", rate(budget, || first(&alice).map(drop))?);
    let opening = first(&alice)?;
    let store = bob.store.to_bytes();
    row.set(
        "open_new_per_s",
        rate(budget, || {
            let mut store = PrekeyStore::from_bytes(&store)?;
            let envelope = Envelope::parse(&opening)?;
            Session::accept(&bob.local, &mut store, &alice.seen, &envelope, now)?;
            Ok(())
        })?,
    );

    // A running session: Bob has answered, so both sides are past the
    // prekey message and each message is one chain step.
    let mut a = Session::initiate(&alice.local, &bob.bundle, now);
    let hello = a.seal(&alice.local, MessageId::random(), &content, now)?;
    let (mut b, _) = Session::accept(
        &bob.local,
        &mut bob.store,
        &alice.seen,
        &Envelope::parse(&hello)?,
        now,
    )?;
    let reply = b.seal(&bob.local, MessageId::random(), &content, now)?;
    a.open(&alice.local, &bob.seen, &Envelope::parse(&reply)?, now)?;
    let mut sealed = Vec::new();
    row.set(
        "seal_p256_per_s",
        rate(budget, || {
            sealed.push(a.seal(&alice.local, MessageId::random(), &content, now)?);
            Ok(())
        })?,
    );
    let started = Instant::now();
    let mut opened = 0usize;
    for envelope in &sealed {
        b.open(&bob.local, &alice.seen, &Envelope::parse(envelope)?, now)?;
        opened += 1;
        if opened >= 5 && started.elapsed() >= budget {
            break;
        }
    }
    row.set(
        "open_p256_per_s",
        opened as f64 / started.elapsed().as_secs_f64(),
    );
    let fanout = seal_fanout_rate(text_bytes, budget)?;
    row.set("seal_5_devices_per_s", fanout);
    row.set("seal_5_devices_ms", 1000.0 / fanout);
    Ok(row)
}

/// A session from `sender` to `recipient` in the state of a running
/// conversation: the sender's first envelope (kind 1, carrying the PQXDH
/// set-up) was accepted by the recipient's device, which sealed a reply
/// that the sender opened. Every envelope the session seals from now on is
/// kind 2. All of it happens on this process; the server sees none of it.
pub fn running_session(sender: &User, recipient: &User, text: &str, now: u64) -> Result<Session> {
    running_session_between(&sender.device, &recipient.device, text, now)
}

/// [`running_session`] between two given devices (W7's fan-out).
pub fn running_session_between(
    from: &UserDevice,
    to: &UserDevice,
    text: &str,
    now: u64,
) -> Result<Session> {
    let content = Content::Text(text.into());
    let mut session = Session::initiate(&from.local, &to.bundle, now);
    let hello = session.seal(&from.local, MessageId::random(), &content, now)?;
    let mut store = users::prekey_store(to.id);
    let (mut answering, _) = Session::accept(
        &to.local,
        &mut store,
        &from.seen,
        &Envelope::parse(&hello)?,
        now,
    )?;
    let reply = answering.seal(&to.local, MessageId::random(), &content, now)?;
    session.open(&from.local, &to.seen, &Envelope::parse(&reply)?, now)?;
    Ok(session)
}

/// Devices one message is sealed for in [`seal_fanout_rate`]: 3 of the
/// recipient's and 2 other devices of the sender's own.
pub const FANOUT_DEVICES: usize = 5;

/// Messages per second one thread seals for [`FANOUT_DEVICES`] devices in
/// running sessions: one envelope per device, the sender's own devices
/// getting the sync copy (PROTOCOL.md §14.3), all under one message id.
pub fn seal_fanout_rate(text_bytes: usize, budget: Duration) -> Result<f64> {
    let text = super::load::text_of(text_bytes);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64;
    let mut phones = users::PhoneGen::new(7_000_000);
    let phones = phones.take(2);
    let alice = User::with_devices(phones[0].clone(), KeyType::P256, 3);
    let bob = User::with_devices(phones[1].clone(), KeyType::P256, 3);
    let from = &alice.devices[0];
    let mut sessions = Vec::with_capacity(FANOUT_DEVICES);
    for to in bob.devices.iter().chain(&alice.devices[1..]) {
        sessions.push((to.id, running_session_between(from, to, &text, now)?));
    }
    rate(budget, || {
        let id = MessageId::random();
        let copy = Content::SentCopy {
            to: bob.phone.clone(),
            id,
            text: text.clone(),
        };
        let to_bob = Content::Text(text.clone());
        for (i, (_, session)) in sessions.iter_mut().enumerate() {
            let content = if i < bob.devices.len() {
                &to_bob
            } else {
                &copy
            };
            session.seal(&from.local, id, content, now)?;
        }
        Ok(())
    })
}

/// Which envelopes a pair's session seals for the timed phases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Contact {
    /// The sender has opened a reply: kind 2, a running conversation.
    Running,
    /// The sender has never heard back: kind 1, each envelope repeating
    /// the PQXDH set-up (`--first-contact`).
    First,
}

impl Contact {
    pub fn from_flag(first_contact: bool) -> Self {
        if first_contact {
            Self::First
        } else {
            Self::Running
        }
    }

    /// The kind byte of the envelopes sealed under this contact.
    pub fn envelope_kind(self) -> u64 {
        match self {
            Self::Running => 2,
            Self::First => 1,
        }
    }
}
