//! The writing half of a framed connection, owned by one task: frames
//! arrive on a channel and are written as they come, gathered while more are
//! waiting, so a burst shares TLS records and system calls. Used by server
//! sessions and neighbour links alike.

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// Gather at most this many bytes of waiting frames into one write.
const GATHER_LIMIT: usize = 256 * 1024;
/// A buffer grown larger than this by a burst is released afterwards, so an
/// idle connection holds no more than its last small answers needed.
const KEEP_CAPACITY: usize = 16 * 1024;

/// Writes every frame received on `rx` to `writer` until the channel closes
/// (then shuts the stream down cleanly) or a write fails.
pub async fn write_loop<W: AsyncWrite + Unpin>(mut writer: W, mut rx: mpsc::Receiver<Vec<u8>>) {
    let mut buf = Vec::new();
    while let Some(frame) = rx.recv().await {
        append(&mut buf, &frame);
        while buf.len() < GATHER_LIMIT {
            match rx.try_recv() {
                Ok(frame) => append(&mut buf, &frame),
                Err(_) => break,
            }
        }
        if writer.write_all(&buf).await.is_err() || writer.flush().await.is_err() {
            return;
        }
        buf.clear();
        if buf.capacity() > KEEP_CAPACITY {
            buf = Vec::new();
        }
    }
    let _ = writer.shutdown().await;
}

/// Appends one frame: a 4-byte big-endian length, then the body (bodies are
/// bounded far below 4 GiB by the frame limits).
fn append(buf: &mut Vec<u8>, body: &[u8]) {
    buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
    buf.extend_from_slice(body);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_arrive_whole_and_in_order() {
        let (a, mut b) = tokio::io::duplex(1 << 20);
        let (tx, rx) = mpsc::channel(8);
        let task = tokio::spawn(write_loop(a, rx));
        for body in [&b"one"[..], &[7u8; 40_000][..], b"three"] {
            tx.send(body.to_vec()).await.unwrap();
        }
        drop(tx);
        task.await.unwrap();
        let max = crate::protocol::MAX_REQUEST_FRAME;
        assert_eq!(
            crate::protocol::read_frame(&mut b, max)
                .await
                .unwrap()
                .unwrap(),
            b"one"
        );
        assert_eq!(
            crate::protocol::read_frame(&mut b, max)
                .await
                .unwrap()
                .unwrap()
                .len(),
            40_000
        );
        assert_eq!(
            crate::protocol::read_frame(&mut b, max)
                .await
                .unwrap()
                .unwrap(),
            b"three"
        );
        assert!(
            crate::protocol::read_frame(&mut b, max)
                .await
                .unwrap()
                .is_none()
        );
    }
}
