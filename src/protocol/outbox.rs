//! A connection's queue of frames waiting to be written, bounded in bytes
//! as well as in frames: each queued frame holds its length in permits of a
//! byte budget until the writer task ([`write_loop`](super::write_loop))
//! has written it. Answers wait for room; pushed events take it only if it
//! is there now, so the caller can tell a peer that has stopped reading.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

/// A frame body in an [`Outbox`], holding its share of the byte budget.
pub struct Queued {
    body: Vec<u8>,
    _bytes: OwnedSemaphorePermit,
}

impl AsRef<[u8]> for Queued {
    fn as_ref(&self) -> &[u8] {
        &self.body
    }
}

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OutboxError {
    #[error("the outbox is full (frames or bytes)")]
    Full,
    #[error("the connection's writer has ended")]
    Closed,
}

/// The sending side of a connection's frame queue; clones share it.
#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Queued>,
    budget: Arc<Semaphore>,
    max_bytes: usize,
}

impl Outbox {
    /// An outbox of at most `frames` frames and `max_bytes` bytes, and the
    /// receiver its writer task drains.
    pub fn new(frames: usize, max_bytes: usize) -> (Self, mpsc::Receiver<Queued>) {
        let (tx, rx) = mpsc::channel(frames);
        let max_bytes = max_bytes.clamp(1, Semaphore::MAX_PERMITS);
        let outbox = Self {
            tx,
            budget: Arc::new(Semaphore::new(max_bytes)),
            max_bytes,
        };
        (outbox, rx)
    }

    /// Queues `body`, waiting for room.
    pub async fn send(&self, body: Vec<u8>) -> Result<(), OutboxError> {
        let bytes = self
            .budget
            .clone()
            .acquire_many_owned(self.cost(&body))
            .await
            .map_err(|_| OutboxError::Closed)?;
        let queued = Queued {
            body,
            _bytes: bytes,
        };
        self.tx.send(queued).await.map_err(|_| OutboxError::Closed)
    }

    /// Queues `body` if there is room for it now.
    pub fn try_send(&self, body: Vec<u8>) -> Result<(), OutboxError> {
        let bytes = self
            .budget
            .clone()
            .try_acquire_many_owned(self.cost(&body))
            .map_err(|_| OutboxError::Full)?;
        let queued = Queued {
            body,
            _bytes: bytes,
        };
        self.tx.try_send(queued).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => OutboxError::Full,
            mpsc::error::TrySendError::Closed(_) => OutboxError::Closed,
        })
    }

    /// Bytes queued and not yet written.
    pub fn backlog(&self) -> usize {
        self.max_bytes - self.budget.available_permits()
    }

    /// A frame larger than the whole budget takes all of it, so it waits
    /// for an empty queue instead of forever.
    fn cost(&self, body: &[u8]) -> u32 {
        u32::try_from(body.len().clamp(1, self.max_bytes)).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bytes_stay_counted_until_written() {
        let (outbox, rx) = Outbox::new(16, 1000);
        outbox.try_send(vec![1; 600]).unwrap();
        assert_eq!(outbox.backlog(), 600);
        assert_eq!(outbox.try_send(vec![2; 500]), Err(OutboxError::Full));
        outbox.try_send(vec![3; 400]).unwrap();
        assert_eq!(outbox.backlog(), 1000);

        let (a, mut b) = tokio::io::duplex(1 << 16);
        let writer = tokio::spawn(super::super::write_loop(a, rx));
        let late = outbox.clone();
        let waiting = tokio::spawn(async move { late.send(vec![4; 900]).await });
        let max = crate::protocol::MAX_REQUEST_FRAME;
        let mut sizes = Vec::new();
        for _ in 0..3 {
            let frame = super::super::read_frame(&mut b, max)
                .await
                .unwrap()
                .unwrap();
            sizes.push(frame.len());
        }
        assert_eq!(
            sizes,
            [600, 400, 900],
            "the waiting frame went out once there was room"
        );
        waiting.await.unwrap().unwrap();
        drop(outbox);
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn frames_are_bounded_too_and_a_huge_one_takes_the_whole_budget() {
        let (outbox, rx) = Outbox::new(2, 1000);
        outbox.try_send(vec![1]).unwrap();
        outbox.try_send(vec![1]).unwrap();
        assert_eq!(outbox.try_send(vec![1]), Err(OutboxError::Full));
        drop(rx);
        let (outbox, _rx) = Outbox::new(2, 1000);
        outbox.try_send(vec![0; 5000]).unwrap();
        assert_eq!(outbox.backlog(), 1000);
    }
}
