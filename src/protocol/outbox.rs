//! A connection's queue of frames waiting to be written, bounded in bytes
//! as well as in frames: each queued frame holds its length in permits of a
//! byte budget until the writer task ([`write_loop`](super::write_loop))
//! has written it. Answers wait for room; pushed events take it only if it
//! is there now, so the caller can tell a peer that has stopped reading.
//!
//! Every logged-in connection holds one of these for as long as it is
//! open, mostly idle, so it is built to cost little when empty: one shared
//! allocation with a deque that holds no memory while nothing waits. (A
//! tokio `mpsc` channel allocates a block of 32 slots up front, over a
//! kilobyte per connection with this queue's frames.)

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{Notify, Semaphore, TryAcquireError};

/// A frame body in an [`Outbox`], holding its share of the byte budget
/// until it is dropped (once written).
pub struct Queued {
    body: Vec<u8>,
    cost: u32,
    owner: Arc<Shared>,
}

impl AsRef<[u8]> for Queued {
    fn as_ref(&self) -> &[u8] {
        &self.body
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        self.owner.bytes.add_permits(self.cost as usize);
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

impl From<TryAcquireError> for OutboxError {
    fn from(e: TryAcquireError) -> Self {
        match e {
            TryAcquireError::NoPermits => OutboxError::Full,
            TryAcquireError::Closed => OutboxError::Closed,
        }
    }
}

/// What the senders and the receiver share.
///
/// A queued frame holds the `Arc` of the queue it waits in, a cycle the
/// receiver breaks when it is dropped: it empties the queue.
struct Shared {
    queue: Mutex<Queue>,
    /// One permit per frame that may still be queued.
    frames: Semaphore,
    /// One permit per byte that may still be queued or being written.
    bytes: Semaphore,
    max_frames: usize,
    max_bytes: usize,
    /// Wakes the receiver: a frame was queued, or the last sender left.
    wake: Notify,
}

struct Queue {
    frames: VecDeque<Queued>,
    /// Live [`Outbox`] handles; the receiver ends once none is left and
    /// the queue is empty.
    senders: usize,
    /// False once the receiver is gone: nothing is queued any more.
    open: bool,
    /// The connection's session has ended ([`Outbox::finish`]): nothing
    /// more is queued, and the receiver ends once the queue is empty.
    finished: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A std mutex: nothing awaits while it is held, and no code that
        // can panic runs under it.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The sending side of a connection's frame queue; clones share it.
pub struct Outbox {
    shared: Arc<Shared>,
}

/// The receiving side of an [`Outbox`], drained by the connection's writer
/// task; dropping it closes the queue.
pub struct OutboxReceiver {
    shared: Arc<Shared>,
}

impl Clone for Outbox {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        let last = {
            let mut queue = self.shared.lock();
            queue.senders -= 1;
            queue.senders == 0
        };
        if last {
            self.shared.wake.notify_one();
        }
    }
}

impl Outbox {
    /// An outbox of at most `frames` frames and `max_bytes` bytes, and the
    /// receiver its writer task drains.
    pub fn new(frames: usize, max_bytes: usize) -> (Self, OutboxReceiver) {
        let max_bytes = max_bytes.clamp(1, Semaphore::MAX_PERMITS);
        let max_frames = frames.clamp(1, Semaphore::MAX_PERMITS);
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                frames: VecDeque::new(),
                senders: 1,
                open: true,
                finished: false,
            }),
            frames: Semaphore::new(max_frames),
            bytes: Semaphore::new(max_bytes),
            max_frames,
            max_bytes,
            wake: Notify::new(),
        });
        let receiver = OutboxReceiver {
            shared: shared.clone(),
        };
        (Self { shared }, receiver)
    }

    /// Queues `body`, waiting for room.
    pub async fn send(&self, body: Vec<u8>) -> Result<(), OutboxError> {
        let cost = self.cost(&body);
        let bytes = self.shared.bytes.acquire_many(cost).await;
        let bytes = bytes.map_err(|_| OutboxError::Closed)?;
        let slot = self.shared.frames.acquire().await;
        let slot = slot.map_err(|_| OutboxError::Closed)?;
        bytes.forget();
        slot.forget();
        self.push(body, cost)
    }

    /// Queues `body` if there is room for it now.
    pub fn try_send(&self, body: Vec<u8>) -> Result<(), OutboxError> {
        self.try_send_or_return(body).map_err(|(e, _)| e)
    }

    /// Queues `body` if there is room for it now; if there is none, gives
    /// it back, so the caller can wait for room with it ([`Self::send`]).
    /// (The body given back with [`OutboxError::Closed`] may be empty.)
    pub fn try_send_or_return(&self, body: Vec<u8>) -> Result<(), (OutboxError, Vec<u8>)> {
        self.try_queue(body, 0, 0)
    }

    /// Queues `body` only if half the outbox's frames and bytes stay free
    /// after it: what may be skipped (a broadcast) must never take the room
    /// that a frame which may not be skipped (a pushed message, whose lack
    /// of room closes the session) will need.
    pub fn try_send_leaving_half(&self, body: Vec<u8>) -> Result<(), OutboxError> {
        let (bytes, frames) = (self.shared.max_bytes / 2, self.shared.max_frames / 2);
        self.try_queue(body, bytes, frames).map_err(|(e, _)| e)
    }

    /// Queues `body` if there is room for it now with at least `bytes_free`
    /// bytes and `frames_free` frames still free after it; otherwise gives
    /// it back. The room is taken before what is left is judged, so frames
    /// offered at once from several threads cannot each see the same room.
    fn try_queue(
        &self,
        body: Vec<u8>,
        bytes_free: usize,
        frames_free: usize,
    ) -> Result<(), (OutboxError, Vec<u8>)> {
        let shared = &self.shared;
        let cost = self.cost(&body);
        let bytes = match shared.bytes.try_acquire_many(cost) {
            Ok(bytes) => bytes,
            Err(e) => return Err((e.into(), body)),
        };
        let slot = match shared.frames.try_acquire() {
            Ok(slot) => slot,
            Err(e) => return Err((e.into(), body)),
        };
        if shared.bytes.available_permits() < bytes_free
            || shared.frames.available_permits() < frames_free
        {
            // Dropping the permits gives the room back.
            return Err((OutboxError::Full, body));
        }
        bytes.forget();
        slot.forget();
        self.push(body, cost).map_err(|e| (e, Vec::new()))
    }

    /// Queues `body`, its frame slot and `cost` bytes already taken.
    fn push(&self, body: Vec<u8>, cost: u32) -> Result<(), OutboxError> {
        let queued = Queued {
            body,
            cost,
            owner: self.shared.clone(),
        };
        let mut queue = self.shared.lock();
        if !queue.open || queue.finished {
            drop(queue);
            // Dropping `queued` gives its bytes back.
            self.shared.frames.add_permits(1);
            return Err(OutboxError::Closed);
        }
        queue.frames.push_back(queued);
        drop(queue);
        self.shared.wake.notify_one();
        Ok(())
    }

    /// Ends the queue for good: what is queued is still written, then the
    /// writer ends, even though handles held elsewhere live on (a link
    /// code's rendezvous keeps one for 10 minutes). A session that has
    /// ended calls this, so its connection closes once its last answers are
    /// out instead of waiting on handles that will never queue a frame it
    /// should send.
    pub fn finish(&self) {
        self.shared.lock().finished = true;
        self.shared.wake.notify_one();
    }

    /// Bytes queued and not yet written.
    pub fn backlog(&self) -> usize {
        self.shared.max_bytes - self.shared.bytes.available_permits()
    }

    /// A frame larger than the whole budget takes all of it, so it waits
    /// for an empty queue instead of forever.
    fn cost(&self, body: &[u8]) -> u32 {
        u32::try_from(body.len().clamp(1, self.shared.max_bytes)).unwrap_or(u32::MAX)
    }
}

impl OutboxReceiver {
    /// The next frame, waiting for one; `None` once every [`Outbox`] handle
    /// is gone and nothing is left.
    pub async fn recv(&mut self) -> Option<Queued> {
        loop {
            {
                let mut queue = self.shared.lock();
                if let Some(frame) = self.pop(&mut queue) {
                    return Some(frame);
                }
                if queue.senders == 0 || queue.finished {
                    return None;
                }
                // Nothing waits: an idle connection keeps no room for
                // frames it may never get.
                queue.frames = VecDeque::new();
            }
            // A frame queued between the check above and this wait leaves
            // a permit in `wake`, so the wait ends at once.
            self.shared.wake.notified().await;
        }
    }

    /// The next frame if one is queued now.
    pub fn try_recv(&mut self) -> Option<Queued> {
        let mut queue = self.shared.lock();
        self.pop(&mut queue)
    }

    fn pop(&self, queue: &mut Queue) -> Option<Queued> {
        let frame = queue.frames.pop_front()?;
        self.shared.frames.add_permits(1);
        Some(frame)
    }
}

impl Drop for OutboxReceiver {
    fn drop(&mut self) {
        let left = {
            let mut queue = self.shared.lock();
            queue.open = false;
            std::mem::take(&mut queue.frames)
        };
        // Senders waiting for room learn the queue is closed.
        self.shared.frames.close();
        self.shared.bytes.close();
        drop(left);
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
    async fn a_finished_outbox_ends_its_writer_though_handles_live_on() {
        let (outbox, mut rx) = Outbox::new(16, 1000);
        let held_elsewhere = outbox.clone();
        outbox.try_send(vec![1; 10]).unwrap();
        outbox.finish();
        assert_eq!(
            held_elsewhere.try_send(vec![2; 10]),
            Err(OutboxError::Closed)
        );
        assert_eq!(rx.recv().await.map(|q| q.body.len()), Some(10));
        assert!(
            rx.recv().await.is_none(),
            "the writer ends after the last queued frame"
        );
    }

    #[tokio::test]
    async fn a_frame_without_room_now_is_given_back_to_wait_with() {
        let (outbox, mut rx) = Outbox::new(4, 1000);
        outbox.try_send_or_return(vec![1; 800]).unwrap();
        let (error, body) = outbox.try_send_or_return(vec![2; 300]).unwrap_err();
        assert_eq!(error, OutboxError::Full);
        assert_eq!(body, vec![2; 300], "the refused frame comes back whole");
        let late = outbox.clone();
        let waiting = tokio::spawn(async move { late.send(body).await });
        assert_eq!(rx.recv().await.unwrap().as_ref(), &[1; 800][..]);
        waiting.await.unwrap().unwrap();
        assert_eq!(rx.recv().await.unwrap().as_ref(), &[2; 300][..]);
        drop(rx);
        let (error, _) = outbox.try_send_or_return(vec![3]).unwrap_err();
        assert_eq!(error, OutboxError::Closed);
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

    #[tokio::test]
    async fn a_sender_waiting_for_a_frame_slot_gets_it_once_one_is_taken() {
        let (outbox, mut rx) = Outbox::new(1, 1000);
        outbox.try_send(b"first".to_vec()).unwrap();
        let late = outbox.clone();
        let waiting = tokio::spawn(async move { late.send(b"second".to_vec()).await });
        let first = rx.recv().await.unwrap();
        assert_eq!(first.as_ref(), b"first");
        waiting.await.unwrap().unwrap();
        assert_eq!(rx.recv().await.unwrap().as_ref(), b"second");
        drop(outbox);
        assert!(rx.recv().await.is_none(), "no sender is left");
    }

    #[tokio::test]
    async fn a_closed_queue_refuses_frames_and_frees_what_it_held() {
        let (outbox, rx) = Outbox::new(1, 1000);
        outbox.try_send(vec![1; 700]).unwrap();
        // Waits for a frame slot the receiver never frees.
        let mut waiting = std::pin::pin!(outbox.send(vec![2; 100]));
        assert!(futures::poll!(waiting.as_mut()).is_pending());
        drop(rx);
        assert_eq!(waiting.await, Err(OutboxError::Closed));
        assert_eq!(outbox.backlog(), 0, "the queued frame was dropped");
        assert_eq!(outbox.try_send(vec![3]), Err(OutboxError::Closed));
        assert_eq!(outbox.send(vec![3]).await, Err(OutboxError::Closed));
    }

    #[tokio::test]
    async fn an_idle_queue_holds_no_room() {
        use futures::FutureExt;
        let (outbox, mut rx) = Outbox::new(16, 1000);
        for _ in 0..10 {
            outbox.try_send(vec![1; 10]).unwrap();
        }
        while rx.try_recv().is_some() {}
        assert!(rx.shared.lock().frames.capacity() >= 10);
        // One poll: nothing is queued, so the receiver lets the deque's
        // memory go before it waits.
        assert!(rx.recv().now_or_never().is_none());
        assert_eq!(rx.shared.lock().frames.capacity(), 0);
        outbox.try_send(b"late".to_vec()).unwrap();
        assert_eq!(rx.recv().await.unwrap().as_ref(), b"late");
    }
}
