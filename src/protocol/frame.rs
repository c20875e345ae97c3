use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

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
/// checked against `max` before anything is allocated.
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
    let mut body = vec![0u8; len];
    read_exact_or_truncated(reader, &mut body).await?;
    Ok(Some(body))
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

/// Writes one frame without flushing, so a writer can batch several frames
/// into one TLS record and one system call.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    body: &[u8],
) -> std::io::Result<()> {
    let len = u32::try_from(body.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "frame too large"))?;
    writer.write_all(&len.to_be_bytes()).await?;
    writer.write_all(body).await
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
}
