//! What the server pushes (messages, broadcasts), on its way from the
//! connection's reader to whoever consumes it. The queue is bounded in
//! count and in bytes, and the reader never waits for room: waiting would
//! stop it reading the answers the consumer may itself be waiting for.
//!
//! A consumer that falls behind therefore loses pushes, and is told so by
//! [`Missed`]. Nothing is lost for good: a pushed message stays queued on
//! the server until it is acknowledged, so the next `fetch` brings it again.
//! A broadcast is never stored, so a missed one is gone, as it is for
//! anyone not connected when it was sent.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::sync::mpsc;

use crate::protocol::{Broadcast, Delivered};

/// Most pushes waiting for the consumer.
pub const MAX_QUEUED_EVENTS: usize = 1024;

/// Most bytes of frames waiting for the consumer.
pub const MAX_QUEUED_BYTES: usize = 16 * 1024 * 1024;

/// Something the server pushed without being asked.
#[derive(Debug)]
pub enum Event {
    /// A message for us arrived (it stays queued until acknowledged).
    Message(Delivered),
    /// A public message from someone in the neighbourhood.
    Broadcast(Broadcast),
}

/// Pushes dropped because the consumer had fallen behind.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Missed {
    /// Still on the server: a fetch brings them.
    pub messages: u64,
    /// Gone.
    pub broadcasts: u64,
}

impl Missed {
    pub fn any(&self) -> bool {
        self.messages > 0 || self.broadcasts > 0
    }
}

#[derive(Default)]
struct Shared {
    bytes: AtomicUsize,
    missed_messages: AtomicU64,
    missed_broadcasts: AtomicU64,
}

/// The reader's end.
pub(super) struct Pusher {
    tx: mpsc::Sender<(Event, usize)>,
    shared: Arc<Shared>,
}

/// The consumer's end.
pub(super) struct Events {
    rx: mpsc::Receiver<(Event, usize)>,
    shared: Arc<Shared>,
}

pub(super) fn queue() -> (Pusher, Events) {
    let (tx, rx) = mpsc::channel(MAX_QUEUED_EVENTS);
    let shared = Arc::new(Shared::default());
    (
        Pusher {
            tx,
            shared: shared.clone(),
        },
        Events { rx, shared },
    )
}

impl Pusher {
    /// Queues `event` (from a frame of `size` bytes), or drops and counts it
    /// when the queue is full.
    pub fn push(&self, event: Event, size: usize) {
        let queued = self.shared.bytes.fetch_add(size, Ordering::AcqRel);
        let dropped = if queued + size > MAX_QUEUED_BYTES && queued > 0 {
            Some(event)
        } else {
            self.tx.try_send((event, size)).err().map(|e| match e {
                mpsc::error::TrySendError::Full((e, _))
                | mpsc::error::TrySendError::Closed((e, _)) => e,
            })
        };
        if let Some(event) = dropped {
            self.shared.bytes.fetch_sub(size, Ordering::AcqRel);
            let counter = match event {
                Event::Message(_) => &self.shared.missed_messages,
                Event::Broadcast(_) => &self.shared.missed_broadcasts,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Events {
    /// The next push; `None` once the connection closed and all are taken.
    pub async fn recv(&mut self) -> Option<Event> {
        let (event, size) = self.rx.recv().await?;
        self.shared.bytes.fetch_sub(size, Ordering::AcqRel);
        Some(event)
    }

    /// A push if one is waiting now.
    pub fn try_recv(&mut self) -> Option<Event> {
        let (event, size) = self.rx.try_recv().ok()?;
        self.shared.bytes.fetch_sub(size, Ordering::AcqRel);
        Some(event)
    }

    /// What was dropped since the last call.
    pub fn take_missed(&self) -> Missed {
        Missed {
            messages: self.shared.missed_messages.swap(0, Ordering::Relaxed),
            broadcasts: self.shared.missed_broadcasts.swap(0, Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::MessageId;
    use crate::protocol::B64;

    fn message() -> Event {
        Event::Message(Delivered {
            id: MessageId::random(),
            from: "+12025550101".into(),
            envelope: B64(Vec::new()),
            received_at: 0,
            device: None,
        })
    }

    fn broadcast() -> Event {
        Event::Broadcast(Broadcast {
            id: MessageId::random(),
            from: "+12025550101".into(),
            sent_at: 0,
            text: String::new(),
            signature: B64(Vec::new()),
        })
    }

    #[tokio::test]
    async fn a_consumer_that_falls_behind_loses_pushes_and_is_told() {
        let (pusher, mut events) = queue();
        for _ in 0..MAX_QUEUED_EVENTS {
            pusher.push(message(), 10);
        }
        pusher.push(message(), 10);
        pusher.push(broadcast(), 10);
        assert_eq!(
            events.take_missed(),
            Missed {
                messages: 1,
                broadcasts: 1
            }
        );
        assert_eq!(events.take_missed(), Missed::default(), "told once");
        assert!(events.recv().await.is_some());
        pusher.push(broadcast(), 10);
        assert!(!events.take_missed().any(), "taking one makes room for one");
        let mut n = 0;
        while events.try_recv().is_some() {
            n += 1;
        }
        assert_eq!(n, MAX_QUEUED_EVENTS);
    }

    #[tokio::test]
    async fn bytes_are_bounded_too() {
        let (pusher, mut events) = queue();
        let big = MAX_QUEUED_BYTES / 2;
        pusher.push(message(), big);
        pusher.push(message(), big);
        pusher.push(message(), big);
        assert_eq!(events.take_missed().messages, 1);
        events.recv().await.unwrap();
        pusher.push(message(), big);
        assert_eq!(events.take_missed().messages, 0);
    }

    #[tokio::test]
    async fn one_push_larger_than_the_bound_still_passes_an_empty_queue() {
        let (pusher, mut events) = queue();
        pusher.push(message(), MAX_QUEUED_BYTES + 1);
        assert!(events.try_recv().is_some());
        assert!(!events.take_missed().any());
    }
}
