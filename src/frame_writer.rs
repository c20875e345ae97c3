//! The writing half of a framed connection, owned by one task: frames
//! arrive on a channel and are written as they come, flushed only when no
//! more are waiting, so a burst shares TLS records and system calls. Used by
//! client sessions and neighbour links alike.

use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;

use crate::protocol;

/// Writes every frame received on `rx` to `writer` until the channel closes
/// (then shuts the stream down cleanly) or a write fails.
pub async fn write_loop<W: AsyncWrite + Unpin>(writer: W, mut rx: mpsc::Receiver<Vec<u8>>) {
    let mut writer = BufWriter::with_capacity(64 * 1024, writer);
    while let Some(frame) = rx.recv().await {
        if protocol::write_frame(&mut writer, &frame).await.is_err() {
            return;
        }
        while let Ok(frame) = rx.try_recv() {
            if protocol::write_frame(&mut writer, &frame).await.is_err() {
                return;
            }
        }
        if writer.flush().await.is_err() {
            return;
        }
    }
    let _ = writer.shutdown().await;
}
