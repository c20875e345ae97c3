//! Frames: a 4-byte big-endian length, then that many bytes. Reading checks
//! the length against the caller's maximum before anything is allocated;
//! writing puts the same [`header`] before each body, whether one frame is
//! written at once ([`write_frame`]) or a connection's writer task gathers
//! many ([`write_loop`]).

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// Gather at most this many bytes of waiting frames into one write.
const GATHER_LIMIT: usize = 256 * 1024;

/// What a frame's body is first given room for. The rest is added as its
/// bytes arrive, so a peer that announces a large frame and then trickles
/// it holds only what it has actually sent.
const FIRST_BODY_ROOM: usize = 8 * 1024;

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("connection closed in the middle of a frame")]
    Truncated,
    #[error("empty frame")]
    Empty,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Reads one frame: a 4-byte big-endian length, then that many bytes.
/// Returns `Ok(None)` on a clean end of stream between frames. The length is
/// checked against `max` before anything is allocated, and the body grows
/// only as its bytes arrive.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> Result<Option<Vec<u8>>, FrameError> {
    let mut len_bytes = [0u8; 4];
    match reader.read_exact(&mut len_bytes[..1]).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    read_exact_or_truncated(reader, &mut len_bytes[1..]).await?;
    let len = u32::from_be_bytes(len_bytes) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    if len == 0 {
        return Err(FrameError::Empty);
    }
    read_body(reader, len).await.map(Some)
}

/// Reads `len` body bytes, doubling the room given at most up to `len`.
async fn read_body<R: AsyncRead + Unpin>(
    reader: &mut R,
    len: usize,
) -> Result<Vec<u8>, FrameError> {
    let mut body = Vec::with_capacity(len.min(FIRST_BODY_ROOM));
    while body.len() < len {
        if body.len() == body.capacity() {
            body.reserve_exact(body.capacity().min(len - body.len()));
        }
        let room = body.capacity().min(len) - body.len();
        let read = (&mut *reader).take(room as u64).read_buf(&mut body).await?;
        if read == 0 {
            return Err(FrameError::Truncated);
        }
    }
    Ok(body)
}

async fn read_exact_or_truncated<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut [u8],
) -> Result<(), FrameError> {
    match reader.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(FrameError::Truncated),
        Err(e) => Err(e.into()),
    }
}

/// The length prefix of a frame holding `body`.
fn header(body: &[u8]) -> std::io::Result<[u8; 4]> {
    let len = u32::try_from(body.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "frame too large"))?;
    Ok(len.to_be_bytes())
}

/// Appends one frame holding `body` to `buf`.
fn encode_frame(buf: &mut Vec<u8>, body: &[u8]) -> std::io::Result<()> {
    buf.reserve(4 + body.len());
    buf.extend_from_slice(&header(body)?);
    buf.extend_from_slice(body);
    Ok(())
}

/// Writes one frame without flushing, so a writer can batch several frames
/// into one TLS record and one system call.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    body: &[u8],
) -> std::io::Result<()> {
    writer.write_all(&header(body)?).await?;
    writer.write_all(body).await
}

/// Where a writer task ([`write_loop`]) takes the frames it writes from:
/// a connection's [`Outbox`](super::Outbox), or a plain channel.
pub trait FrameQueue: Send {
    type Frame: AsRef<[u8]> + Send;
    /// The next frame, waiting for one; `None` once the queue has ended.
    fn recv(&mut self) -> impl Future<Output = Option<Self::Frame>> + Send;
    /// The next frame if one waits now.
    fn try_recv(&mut self) -> Option<Self::Frame>;
}

impl<F: AsRef<[u8]> + Send> FrameQueue for mpsc::Receiver<F> {
    type Frame = F;

    fn recv(&mut self) -> impl Future<Output = Option<F>> + Send {
        mpsc::Receiver::recv(self)
    }

    fn try_recv(&mut self) -> Option<F> {
        mpsc::Receiver::try_recv(self).ok()
    }
}

impl FrameQueue for super::OutboxReceiver {
    type Frame = super::Queued;

    fn recv(&mut self) -> impl Future<Output = Option<super::Queued>> + Send {
        super::OutboxReceiver::recv(self)
    }

    fn try_recv(&mut self) -> Option<super::Queued> {
        super::OutboxReceiver::try_recv(self)
    }
}

/// The writing half of a framed connection, owned by one task (server
/// sessions and neighbour links alike): writes every frame body received on
/// `rx`, gathering those already waiting so a burst shares TLS records and
/// system calls, until the queue ends (then shuts the stream down cleanly)
/// or a write fails. Each frame is dropped only once written, so what it
/// holds (an [`Outbox`](super::Outbox) charge) lasts as long as its bytes
/// wait.
///
/// Its buffers are kept while frames keep coming and let go whenever it
/// waits for the next: most connections are idle most of the time, and an
/// allocation per burst costs far less than every idle connection holding
/// its last burst's buffers.
pub async fn write_loop<W, Q>(mut writer: W, mut rx: Q)
where
    W: AsyncWrite + Unpin,
    Q: FrameQueue,
{
    let mut buf = Vec::new();
    let mut gathered = Vec::new();
    loop {
        let frame = match rx.try_recv() {
            Some(frame) => frame,
            None => {
                buf = Vec::new();
                gathered = Vec::new();
                match rx.recv().await {
                    Some(frame) => frame,
                    None => break,
                }
            }
        };
        let mut encoded = encode_frame(&mut buf, frame.as_ref());
        gathered.push(frame);
        while encoded.is_ok() && buf.len() < GATHER_LIMIT {
            match rx.try_recv() {
                Some(frame) => {
                    encoded = encode_frame(&mut buf, frame.as_ref());
                    gathered.push(frame);
                }
                None => break,
            }
        }
        if encoded.is_err()
            || writer.write_all(&buf).await.is_err()
            || writer.flush().await.is_err()
        {
            return;
        }
        gathered.clear();
        buf.clear();
    }
    let _ = writer.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trip_and_limits() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        write_frame(&mut a, b"hello").await.unwrap();
        write_frame(&mut a, &[7u8; 100]).await.unwrap();
        drop(a);
        assert_eq!(read_frame(&mut b, 64).await.unwrap().unwrap(), b"hello");
        assert!(matches!(
            read_frame(&mut b, 64).await,
            Err(FrameError::TooLarge { len: 100, max: 64 })
        ));
    }

    #[tokio::test]
    async fn clean_end_and_truncation() {
        let (a, mut b) = tokio::io::duplex(64);
        drop(a);
        assert!(read_frame(&mut b, 64).await.unwrap().is_none());

        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&[0, 0, 0, 10, 1, 2]).await.unwrap();
        drop(a);
        assert!(matches!(
            read_frame(&mut b, 64).await,
            Err(FrameError::Truncated)
        ));
    }

    #[tokio::test]
    async fn a_large_body_trickled_in_small_pieces_arrives_whole_in_exact_room() {
        let body: Vec<u8> = (0..100_003u32).map(|i| (i % 251) as u8).collect();
        // A pipe of 1,000 bytes hands the reader a few hundred at a time.
        let (mut a, mut b) = tokio::io::duplex(1_000);
        let sent = body.clone();
        let writer = tokio::spawn(async move { write_frame(&mut a, &sent).await });
        let read = read_frame(&mut b, 128 * 1024).await.unwrap().unwrap();
        writer.await.unwrap().unwrap();
        assert_eq!(read, body);
        assert_eq!(read.capacity(), body.len(), "no room beyond the frame");

        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&[0, 1, 0, 0]).await.unwrap();
        a.write_all(&[9; 50]).await.unwrap();
        drop(a);
        assert!(matches!(
            read_frame(&mut b, 128 * 1024).await,
            Err(FrameError::Truncated)
        ));
    }

    /// Hands out a body 100 bytes at a time, noting how much room each
    /// read offered against what had arrived before it.
    struct Trickle {
        left: Vec<u8>,
        arrived: usize,
        most_room: Vec<(usize, usize)>,
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            let (room, arrived) = (buf.remaining(), self.arrived);
            self.most_room.push((room, arrived));
            let n = room.min(100).min(self.left.len());
            buf.put_slice(&self.left[..n]);
            self.left.drain(..n);
            self.arrived += n;
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_body_is_given_room_only_as_its_bytes_arrive() {
        let mut reader = Trickle {
            left: vec![1; 100_000],
            arrived: 0,
            most_room: Vec::new(),
        };
        let body = read_body(&mut reader, 100_000).await.unwrap();
        assert_eq!(body.len(), 100_000);
        for (room, arrived) in reader.most_room {
            assert!(
                room + arrived <= FIRST_BODY_ROOM.max(2 * arrived),
                "{room} bytes of room offered after {arrived} arrived"
            );
        }
    }

    #[tokio::test]
    async fn the_writer_task_sends_frames_whole_and_in_order() {
        let (a, mut b) = tokio::io::duplex(1 << 20);
        let (tx, rx) = mpsc::channel(8);
        let task = tokio::spawn(write_loop(a, rx));
        for body in [&b"one"[..], &[7u8; 40_000][..], b"three"] {
            tx.send(body.to_vec()).await.unwrap();
        }
        drop(tx);
        task.await.unwrap();
        let max = crate::protocol::MAX_REQUEST_FRAME;
        let mut read = Vec::new();
        while let Some(frame) = read_frame(&mut b, max).await.unwrap() {
            read.push(frame);
        }
        assert_eq!(
            read,
            [b"one".to_vec(), vec![7u8; 40_000], b"three".to_vec()]
        );
    }
}
