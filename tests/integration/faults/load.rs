//! Load across the link while faults are injected: senders that send at a
//! steady pace, recipients that take every delivery, and a ledger of both
//! that anyone can wait on.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use carrier::client::Session;
use carrier::domain::MessageId;
use carrier::protocol::{Request, Response};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::common::TestUser;

/// Messages asked for per fetch.
const FETCH_LIMIT: u32 = 100;

/// Everything sent and delivered so far.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Accepted sends: id → (recipient, text).
    pub sent: HashMap<MessageId, (String, String)>,
    /// Texts of sends under way (asked, not yet accepted): each may cross
    /// the link before its sender hears it was accepted.
    pub sending: HashSet<String>,
    /// How many times each id was handed to its recipient's client,
    /// redeliveries included.
    pub deliveries: HashMap<MessageId, u32>,
    /// What recipients stored: id → (recipient, sender, text).
    pub received: HashMap<MessageId, (String, String, String)>,
    /// Deliveries the client refused, and why.
    pub refused: Vec<String>,
}

impl Ledger {
    /// Whether every accepted message has been stored by its recipient.
    pub fn all_received(&self) -> bool {
        self.sent.keys().all(|id| self.received.contains_key(id))
    }

    /// How many of `ids` have been stored by their recipient.
    pub fn received_of<'a>(&self, ids: impl IntoIterator<Item = &'a MessageId>) -> usize {
        ids.into_iter()
            .filter(|id| self.received.contains_key(id))
            .count()
    }

    /// What breaks "each accepted message is delivered once, unchanged, to
    /// its recipient, and nothing else is": one line per fault.
    pub fn faults(&self) -> Vec<String> {
        let mut faults = self.refused.clone();
        for (id, (to, text)) in &self.sent {
            match (self.deliveries.get(id), self.received.get(id)) {
                (None, _) | (_, None) => faults.push(format!("lost: {id} to {to}")),
                (Some(&n), Some((got_to, _, got))) => {
                    if n != 1 {
                        faults.push(format!("{id} delivered {n} times"));
                    }
                    if got_to != to || got != text {
                        faults.push(format!("{id} arrived altered or misdirected"));
                    }
                }
            }
        }
        for id in self.deliveries.keys() {
            if !self.sent.contains_key(id) {
                faults.push(format!("unexpected: {id} was never accepted"));
            }
        }
        faults
    }
}

/// Sends from `user` to `to` once per `pace` until `stop`, recording each
/// accepted message.
pub async fn send_steadily(
    user: &TestUser,
    to: &str,
    pace: Duration,
    stop: &CancellationToken,
    ledger: &watch::Sender<Ledger>,
) {
    let session = user.client.login().await.expect("the sender logs in");
    let mut tick = tokio::time::interval(pace);
    for n in 0.. {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let text = format!("{} to {to}, message {n}", user.phone);
        ledger.send_modify(|l| {
            l.sending.insert(text.clone());
        });
        let id = session
            .send(to, &text)
            .await
            .expect("the home server accepts");
        ledger.send_modify(|l| {
            l.sending.remove(&text);
            l.sent.insert(id, (to.to_owned(), text));
        });
    }
    session.close().await;
}

/// Takes every message for `user` until `stop`: fetches whenever a push
/// says something arrived, and records each delivery before the client
/// drops what it already stored.
pub async fn receive(user: &TestUser, stop: &CancellationToken, ledger: &watch::Sender<Ledger>) {
    let mut session = user.client.login().await.expect("the recipient logs in");
    loop {
        if take_waiting(&mut session, ledger).await > 0 {
            continue;
        }
        // A push is only a wake-up here: the fetch that follows brings
        // the message, so each delivery is counted once.
        tokio::select! {
            _ = stop.cancelled() => break,
            event = session.conn.next_event() => {
                assert!(event.is_some(), "the recipient's server closed the session");
            }
        }
    }
    session.close().await;
}

/// One fetch, each message handed to the client in turn; returns how many
/// came. The one step below `Session::fetch`, which drops redeliveries
/// silently: here they are counted.
async fn take_waiting(session: &mut Session<'_>, ledger: &watch::Sender<Ledger>) -> usize {
    let Ok(Response::Messages { messages, .. }) = session
        .conn
        .call(Request::Fetch {
            limit: Some(FETCH_LIMIT),
            after: None,
        })
        .await
    else {
        panic!("fetch failed");
    };
    let (me, n) = (session.me().to_string(), messages.len());
    for m in messages {
        let id = m.id;
        ledger.send_modify(|l| *l.deliveries.entry(id).or_default() += 1);
        match session.take_pushed(m).await.expect("the client takes it") {
            Ok(Some(r)) => ledger.send_modify(|l| {
                l.received.insert(id, (me.clone(), r.from, r.text));
            }),
            Ok(None) => {}
            Err(refusal) => ledger.send_modify(|l| {
                l.refused.push(format!("refused {id}: {}", refusal.reason));
            }),
        }
    }
    n
}
