//! What the crash loop saw, and Jepsen's total-queue check over it.
//!
//! A *message* is one text a sender means to send once. Each attempt to
//! send it goes out under a new id (the client picks one per `send`); an
//! attempt is `accepted`, refused with a code (known not stored), or
//! unanswered (the connection died first: stored or not, nobody knows),
//! and an unanswered message is tried again. Recipients record every
//! delivery the server makes, before the client drops ids it already
//! stored; what they finally hold is read from their history.
//!
//! The rule: every accepted id is received (`lost` = 0), and everything
//! received is a message some sender tried, unchanged, from that sender,
//! to that recipient (`unexpected` = 0). Duplicates are counted, not
//! forbidden: `redelivered` (an id delivered again, which the client drops)
//! and `duplicated` (a message received under two ids because an
//! unanswered attempt was stored after all, which the client cannot tell
//! apart).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use carrier::client::{Direction, HistoryEntry};
use carrier::domain::MessageId;
use carrier::protocol::ErrorCode;

/// Which message a text is: its cycle, sender and number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    pub cycle: u32,
    pub sender: usize,
    pub n: usize,
}

impl Key {
    /// The text sent for this message: the key, then `len` bytes of filler
    /// that depend on it, so a mixed-up or altered text shows.
    pub fn text(&self, len: usize) -> String {
        let mut text = format!("crashloop c{} s{} m{} ", self.cycle, self.sender, self.n);
        let start = self.cycle as usize * 7 + self.sender * 13 + self.n * 31;
        text.extend((0..len).map(|i| char::from(b'a' + ((start + i) % 26) as u8)));
        text
    }

    /// The key a text claims to be.
    pub fn of(text: &str) -> Option<Self> {
        let mut words = text.strip_prefix("crashloop ")?.split(' ');
        let mut field = |prefix: char| words.next()?.strip_prefix(prefix)?.parse().ok();
        Some(Self {
            cycle: field('c')? as u32,
            sender: field('s')?,
            n: field('m')?,
        })
    }
}

/// One message and what became of its attempts.
#[derive(Debug)]
struct Message {
    from: String,
    to: String,
    text: String,
    accepted: Option<MessageId>,
    unanswered: u32,
}

/// Everything senders and recipients did.
#[derive(Debug, Default)]
pub struct Ledger {
    messages: HashMap<Key, Message>,
    /// Deliveries per id, redeliveries included.
    deliveries: HashMap<MessageId, u32>,
    /// Attempts the server refused, by code.
    refused: BTreeMap<&'static str, usize>,
    /// Deliveries the client refused (forged, undecryptable…).
    refusals: Vec<String>,
}

/// The outcome of one attempt to send a message.
#[derive(Debug, Clone, Copy)]
pub enum Attempt {
    Accepted(MessageId),
    /// The server answered with an error code: not stored.
    Refused(ErrorCode),
    /// No answer.
    Unanswered,
}

impl Ledger {
    /// Notes a message before its first attempt.
    pub fn intend(&mut self, key: Key, from: &str, to: &str, text: &str) {
        self.messages.entry(key).or_insert_with(|| Message {
            from: from.to_owned(),
            to: to.to_owned(),
            text: text.to_owned(),
            accepted: None,
            unanswered: 0,
        });
    }

    pub fn attempt(&mut self, key: Key, outcome: Attempt) {
        let m = self.messages.get_mut(&key).expect("intended first");
        match outcome {
            Attempt::Accepted(id) => m.accepted = Some(id),
            Attempt::Refused(code) => *self.refused.entry(code.as_str()).or_default() += 1,
            Attempt::Unanswered => m.unanswered += 1,
        }
    }

    pub fn delivered(&mut self, id: MessageId) {
        *self.deliveries.entry(id).or_default() += 1;
    }

    pub fn refused(&mut self, what: String) {
        self.refusals.push(what);
    }

    /// How many accepted ids have been delivered at least once.
    pub fn accepted_delivered(&self) -> (usize, usize) {
        let accepted: Vec<MessageId> = self.messages.values().filter_map(|m| m.accepted).collect();
        let delivered = accepted
            .iter()
            .filter(|id| self.deliveries.contains_key(id))
            .count();
        (delivered, accepted.len())
    }

    /// The total-queue check, given what each recipient's history holds
    /// (`histories`: recipient phone → entries).
    pub fn check(&self, histories: &HashMap<String, Vec<HistoryEntry>>) -> Tally {
        let mut t = Tally {
            messages: self.messages.len(),
            ..Tally::default()
        };
        for m in self.messages.values() {
            t.accepted += usize::from(m.accepted.is_some());
            t.unanswered += m.unanswered as usize;
        }
        t.refused = self.refused.clone();
        t.deliveries = self.deliveries.values().map(|&n| n as usize).sum();
        t.redelivered = t.deliveries - self.deliveries.len();
        t.unexpected_notes = self.refusals.clone();
        let mut received_ids = HashSet::new();
        let mut ids_per_message: HashMap<Key, usize> = HashMap::new();
        for (recipient, entries) in histories {
            for e in entries.iter().filter(|e| e.direction == Direction::In) {
                t.received += 1;
                received_ids.insert(e.id.clone());
                match self.expected(recipient, e) {
                    Ok(key) => *ids_per_message.entry(key).or_default() += 1,
                    Err(why) => t.unexpected_notes.push(format!("{}: {why}", e.id)),
                }
            }
        }
        t.duplicated = ids_per_message.values().map(|n| n - 1).sum();
        for (key, m) in &self.messages {
            let Some(id) = m.accepted else { continue };
            if !received_ids.contains(&id.to_hex()) {
                t.lost_notes
                    .push(format!("{id} ({key:?}, from {} to {})", m.from, m.to));
            }
        }
        for id in self.deliveries.keys() {
            if !received_ids.contains(&id.to_hex()) {
                t.unexpected_notes
                    .push(format!("{id} was delivered but is not in the history"));
            }
        }
        t
    }

    /// The message a received entry is, if it is one that was tried.
    fn expected(&self, recipient: &str, e: &HistoryEntry) -> Result<Key, String> {
        let key = Key::of(&e.text).ok_or("a text no sender wrote")?;
        let m = self
            .messages
            .get(&key)
            .ok_or_else(|| format!("{key:?} was never sent"))?;
        if m.text != e.text {
            return Err(format!("{key:?} arrived altered"));
        }
        if m.from != e.peer || m.to != recipient {
            return Err(format!(
                "{key:?} from {} to {} arrived from {} at {recipient}",
                m.from, m.to, e.peer
            ));
        }
        Ok(key)
    }
}

/// The figures of a run.
#[derive(Debug, Default)]
pub struct Tally {
    /// Messages senders meant to send.
    pub messages: usize,
    /// Messages with an accepted attempt.
    pub accepted: usize,
    /// Attempts that got no answer.
    pub unanswered: usize,
    /// Attempts refused with a code (and tried again), by code.
    pub refused: BTreeMap<&'static str, usize>,
    /// Deliveries, redeliveries included.
    pub deliveries: usize,
    /// Deliveries of an id delivered before (the client dropped them).
    pub redelivered: usize,
    /// Entries in the recipients' histories.
    pub received: usize,
    /// Extra copies of messages received under more than one id.
    pub duplicated: usize,
    pub lost_notes: Vec<String>,
    pub unexpected_notes: Vec<String>,
}

impl Tally {
    pub fn lost(&self) -> usize {
        self.lost_notes.len()
    }

    pub fn unexpected(&self) -> usize {
        self.unexpected_notes.len()
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "messages={} accepted={} unanswered={} refused={} deliveries={} redelivered={} \
             received={} duplicated={} lost={} unexpected={}",
            self.messages,
            self.accepted,
            self.unanswered,
            self.refused.values().sum::<usize>(),
            self.deliveries,
            self.redelivered,
            self.received,
            self.duplicated,
            self.lost(),
            self.unexpected()
        )
    }
}
