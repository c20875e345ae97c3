//! What the session promises, tested from outside: forward secrecy,
//! recovery after a compromise, refusal of forged, altered and replayed
//! envelopes without any change of state, and (with proptest) random
//! interleavings, loss and reordering, and garbage that never panics.

use proptest::prelude::*;

use super::fixture::{NOW, Party};
use super::{Content, Envelope, Error, LocalDevice, PrekeyStore, Session, VerifiedDevice};
use crate::domain::MessageId;

const DAY: u64 = 24 * 3600 * 1000;

struct Pair {
    alice: Party,
    bob: Party,
    a_sessions: Vec<Session>,
    b_sessions: Vec<Session>,
    a_seen: VerifiedDevice,
    b_seen: VerifiedDevice,
}

impl Pair {
    /// A pair whose accounts and prekeys are made once for all tests (each
    /// test gets its own copy), so tests spend their time on sessions, not
    /// on key generation; sessions and their randomness are new every time.
    fn new(one_time: bool) -> Self {
        static PARTIES: std::sync::OnceLock<(Party, Party)> = std::sync::OnceLock::new();
        let (a, b) =
            PARTIES.get_or_init(|| (Party::new("+12025550101", 1), Party::new("+12025550102", 1)));
        Self::from_parties(a.copy(), b.copy(), one_time)
    }

    fn from_parties(alice: Party, mut bob: Party, one_time: bool) -> Self {
        let bundle = bob.verified_bundle(one_time);
        let session = Session::initiate(&alice.device, &bundle, NOW);
        Self {
            a_seen: alice.verified(),
            b_seen: bob.verified(),
            alice,
            bob,
            a_sessions: vec![session],
            b_sessions: Vec::new(),
        }
    }

    fn a_to_b(&mut self, text: &str) -> Vec<u8> {
        let content = Content::Text(text.into());
        self.a_sessions[0]
            .seal(&self.alice.device, MessageId::random(), &content, NOW)
            .unwrap()
    }

    fn b_to_a(&mut self, text: &str) -> Vec<u8> {
        let content = Content::Text(text.into());
        self.b_sessions[0]
            .seal(&self.bob.device, MessageId::random(), &content, NOW)
            .unwrap()
    }

    fn bob_gets(&mut self, bytes: &[u8]) -> Result<String, Error> {
        let opened = self
            .bob
            .receive(&mut self.b_sessions, &self.a_seen, bytes, NOW)?;
        Ok(text(opened.content))
    }

    fn alice_gets(&mut self, bytes: &[u8]) -> Result<String, Error> {
        let opened = self
            .alice
            .receive(&mut self.a_sessions, &self.b_seen, bytes, NOW)?;
        Ok(text(opened.content))
    }
}

fn text(content: Content) -> String {
    match content {
        Content::Text(t) => t,
        other => panic!("expected text, got {other:?}"),
    }
}

/// Everything Bob's device holds, as an attacker who copied it has it.
struct Stolen {
    device: LocalDevice,
    store: PrekeyStore,
    sessions: Vec<Session>,
}

impl Stolen {
    fn from(bob: &Party, sessions: &[Session]) -> Self {
        Self {
            device: LocalDevice::from_bytes(&bob.device.to_bytes()).unwrap(),
            store: PrekeyStore::from_bytes(&bob.store.to_bytes()).unwrap(),
            sessions: sessions.to_vec(),
        }
    }

    /// Tries every way the stolen state offers to open `bytes`.
    fn opens(&self, from: &VerifiedDevice, bytes: &[u8]) -> bool {
        let envelope = Envelope::parse(bytes).unwrap();
        let by_session = self
            .sessions
            .iter()
            .any(|s| s.clone().open(&self.device, from, &envelope, NOW).is_ok());
        let mut store = PrekeyStore::from_bytes(&self.store.to_bytes()).unwrap();
        store.forget_base_keys_for_tests();
        by_session || Session::accept(&self.device, &mut store, from, &envelope, NOW).is_ok()
    }
}

#[test]
fn forward_secrecy_recorded_envelopes_stay_closed() {
    let mut p = Pair::new(true);
    let recorded: Vec<_> = (0..3).map(|i| p.a_to_b(&format!("early {i}"))).collect();
    for (i, bytes) in recorded.iter().enumerate() {
        assert_eq!(p.bob_gets(bytes).unwrap(), format!("early {i}"));
    }
    for round in 0..3 {
        let reply = p.b_to_a(&format!("reply {round}"));
        p.alice_gets(&reply).unwrap();
        let next = p.a_to_b(&format!("next {round}"));
        p.bob_gets(&next).unwrap();
    }
    let stolen = Stolen::from(&p.bob, &p.b_sessions);
    for bytes in &recorded {
        assert!(
            !stolen.opens(&p.a_seen, bytes),
            "a recorded envelope opened"
        );
    }
}

#[test]
fn last_resort_set_up_is_exposed_only_until_its_prekeys_are_deleted() {
    let mut p = Pair::new(false);
    let first = p.a_to_b("first");
    p.bob_gets(&first).unwrap();
    let reply = p.b_to_a("reply");
    p.alice_gets(&reply).unwrap();
    let bytes = p.a_to_b("later");
    p.bob_gets(&bytes).unwrap();
    let stolen = Stolen::from(&p.bob, &p.b_sessions);
    assert!(
        stolen.opens(&p.a_seen, &first),
        "the documented cost of last-resort set-up"
    );

    let key = p.bob.device.key().clone();
    p.bob.store.maintain(&key, NOW + 7 * DAY);
    p.bob.store.maintain(&key, NOW + 37 * DAY);
    let stolen = Stolen::from(&p.bob, &p.b_sessions);
    assert!(!stolen.opens(&p.a_seen, &first));
}

#[test]
fn post_compromise_messages_after_one_dh_step_are_closed_to_a_stale_copy() {
    let mut p = Pair::new(true);
    let bytes = p.a_to_b("hello");
    p.bob_gets(&bytes).unwrap();
    let stolen = Stolen::from(&p.bob, &p.b_sessions);
    let same_chain = p.a_to_b("still readable");
    assert!(
        stolen.opens(&p.a_seen, &same_chain),
        "the compromise is real"
    );
    p.bob_gets(&same_chain).unwrap();

    let reply = p.b_to_a("new ratchet key");
    p.alice_gets(&reply).unwrap();
    let mut attacker = stolen.sessions[0].clone();
    for i in 0..3 {
        let bytes = p.a_to_b(&format!("after {i}"));
        assert!(
            !stolen.opens(&p.a_seen, &bytes),
            "message {i} after the DH step opened"
        );
        let envelope = Envelope::parse(&bytes).unwrap();
        assert!(
            attacker
                .open(&stolen.device, &p.a_seen, &envelope, NOW)
                .is_err()
        );
        p.bob_gets(&bytes).unwrap();
    }
}

#[test]
fn forged_altered_and_replayed_envelopes_change_nothing() {
    let mut p = Pair::new(true);
    let bytes = p.a_to_b("set up");
    p.bob_gets(&bytes).unwrap();
    let good = p.a_to_b("good");
    let state = p.b_sessions[0].to_bytes();
    let store = p.bob.store.to_bytes();
    let refused = |bytes: &[u8], p: &mut Pair| {
        assert!(p.bob_gets(bytes).is_err());
        assert_eq!(*p.b_sessions[0].to_bytes(), *state, "session changed");
        assert_eq!(*p.bob.store.to_bytes(), *store, "prekeys changed");
        assert_eq!(p.b_sessions.len(), 1);
    };
    for i in (0..good.len()).step_by(3) {
        let mut altered = good.clone();
        altered[i] ^= 0x04;
        refused(&altered, &mut p);
    }
    let mut high_s = good.clone();
    let at = good.len() - 64;
    high_s[at..].copy_from_slice(&super::ec::flip_s(&good[at..]));
    refused(&high_s, &mut p);

    let mallory = Party::new("+12025550103", 1);
    let mut forged = good.clone();
    let signed = [b"carrier-v2 envelope\0".as_slice(), &good[..at]].concat();
    forged[at..].copy_from_slice(&mallory.device.key().sign(&signed));
    refused(&forged, &mut p);

    assert_eq!(p.bob_gets(&good).unwrap(), "good");
    let state = p.b_sessions[0].to_bytes();
    assert_eq!(p.bob_gets(&good), Err(Error::Replay));
    assert_eq!(*p.b_sessions[0].to_bytes(), *state);
}

#[test]
fn a_replayed_prekey_message_sets_up_nothing() {
    for one_time in [true, false] {
        let mut p = Pair::new(one_time);
        let first = p.a_to_b("once");
        p.bob_gets(&first).unwrap();
        let envelope = Envelope::parse(&first).unwrap();
        let err = Session::accept(&p.bob.device, &mut p.bob.store, &p.a_seen, &envelope, NOW);
        assert!(
            matches!(err, Err(Error::Replay | Error::UnknownPrekey(_))),
            "{one_time}"
        );
    }
}

#[test]
fn sessions_and_keys_round_trip_and_hide_secrets() {
    let mut p = Pair::new(true);
    let bytes = p.a_to_b("one");
    p.bob_gets(&bytes).unwrap();
    let bytes = p.b_sessions[0].to_bytes();
    let copy = Session::from_bytes(&bytes).unwrap();
    assert_eq!(*copy.to_bytes(), *bytes);
    let shown = format!("{copy:?}{:?}{:?}", p.bob.device, p.bob.store);
    let scalar = hex::encode(*p.bob.device.key().to_bytes());
    assert!(!shown.contains(&scalar));
    for cut in (0..bytes.len()).step_by(41) {
        assert!(Session::from_bytes(&bytes[..cut]).is_err());
    }
    let mut future = bytes.to_vec();
    future[0] = 9;
    assert_eq!(
        Session::from_bytes(&future).err(),
        Some(Error::StateVersion(9))
    );
}

/// Envelopes with the text each carries.
type Delivered = Vec<(Vec<u8>, String)>;

/// One step of a random conversation.
#[derive(Clone, Debug)]
enum Step {
    AliceSends,
    BobSends,
    /// Deliver the pending envelope at this index (modulo) to Bob.
    ToBob(usize),
    ToAlice(usize),
    /// Lose one in flight.
    Lose(bool, usize),
    /// Deliver again one already delivered.
    Replay(bool, usize),
    /// Save and reload both sides' state.
    Reload,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => Just(Step::AliceSends),
        2 => Just(Step::BobSends),
        3 => any::<usize>().prop_map(Step::ToBob),
        3 => any::<usize>().prop_map(Step::ToAlice),
        1 => (any::<bool>(), any::<usize>()).prop_map(|(b, i)| Step::Lose(b, i)),
        1 => (any::<bool>(), any::<usize>()).prop_map(|(b, i)| Step::Replay(b, i)),
        1 => Just(Step::Reload),
    ]
}

fn reload(sessions: &mut [Session]) {
    for s in sessions {
        *s = Session::from_bytes(&s.to_bytes()).unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn random_interleavings_loss_and_reordering(steps in proptest::collection::vec(step(), 1..50)) {
        let mut p = Pair::new(true);
        let (mut to_bob, mut to_alice) = (Vec::new(), Vec::new());
        let (mut got_bob, mut got_alice): (Delivered, Delivered) = (Vec::new(), Vec::new());
        let mut counter = 0;
        for step in steps {
            counter += 1;
            match step {
                Step::AliceSends => {
                    let t = format!("a{counter}");
                    to_bob.push((p.a_to_b(&t), t));
                }
                Step::BobSends if !p.b_sessions.is_empty() => {
                    let t = format!("b{counter}");
                    to_alice.push((p.b_to_a(&t), t));
                }
                Step::BobSends => {}
                Step::ToBob(i) if !to_bob.is_empty() => {
                    let (bytes, t) = to_bob.remove(i % to_bob.len());
                    prop_assert_eq!(p.bob_gets(&bytes).unwrap(), t.clone());
                    got_bob.push((bytes, t));
                }
                Step::ToAlice(i) if !to_alice.is_empty() => {
                    let (bytes, t) = to_alice.remove(i % to_alice.len());
                    prop_assert_eq!(p.alice_gets(&bytes).unwrap(), t.clone());
                    got_alice.push((bytes, t));
                }
                Step::Lose(to_b, i) => {
                    let queue = if to_b { &mut to_bob } else { &mut to_alice };
                    if !queue.is_empty() {
                        queue.remove(i % queue.len());
                    }
                }
                Step::Replay(to_b, i) => {
                    let done = if to_b { &got_bob } else { &got_alice };
                    if !done.is_empty() {
                        let bytes = done[i % done.len()].0.clone();
                        let before: Vec<_> = p.b_sessions.iter().chain(&p.a_sessions).map(|s| s.to_bytes().to_vec()).collect();
                        let result = if to_b { p.bob_gets(&bytes) } else { p.alice_gets(&bytes) };
                        prop_assert!(result.is_err());
                        let after: Vec<_> = p.b_sessions.iter().chain(&p.a_sessions).map(|s| s.to_bytes().to_vec()).collect();
                        prop_assert_eq!(before, after);
                    }
                }
                Step::Reload => {
                    reload(&mut p.a_sessions);
                    reload(&mut p.b_sessions);
                    p.bob.store = PrekeyStore::from_bytes(&p.bob.store.to_bytes()).unwrap();
                }
                Step::ToBob(_) | Step::ToAlice(_) => {}
            }
        }
        prop_assert!(p.b_sessions.len() <= 1);
    }

    #[test]
    fn garbage_and_mutations_never_panic_or_change_state(
        noise in proptest::collection::vec(any::<u8>(), 0..2000),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
        cut in any::<usize>(),
    ) {
        let mut p = Pair::new(true);
        let bytes = p.a_to_b("set up");
    p.bob_gets(&bytes).unwrap();
        let good = p.a_to_b("good");
        let state = p.b_sessions[0].to_bytes();
        let mut mutated = good.clone();
        for (at, x) in flips {
            let i = at % mutated.len();
            mutated[i] ^= x.max(1);
        }
        let truncated = &good[..cut % good.len()];
        for bytes in [&noise[..], &mutated[..], truncated] {
            let _ = Envelope::parse(bytes);
            prop_assert!(p.bob_gets(bytes).is_err());
            prop_assert_eq!(&*p.b_sessions[0].to_bytes(), &*state);
            let _ = Session::from_bytes(bytes);
            let _ = PrekeyStore::from_bytes(bytes);
            let _ = LocalDevice::from_bytes(bytes);
        }
        prop_assert_eq!(p.bob_gets(&good).unwrap(), "good");
    }
}
