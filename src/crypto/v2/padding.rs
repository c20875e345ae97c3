//! What is encrypted: a typed content, the sender's clock, and zero padding
//! up to a size bucket, so the server and the network learn the bucket and
//! not the exact length (docs/PROTOCOL.md §13).
//!
//! ```text
//! content type u8 | sent_at u64 | body length u32 | body | 0x00 … to the bucket size
//! ```

use super::Error;
use super::codec::{Put, Reader};
use crate::domain::{MessageId, PhoneNumber};

/// Padded payload sizes: powers of two from 256 bytes to 64 KiB, then one
/// last bucket that the largest text (with a sync copy's header) fits.
pub const BUCKETS: [usize; 10] = [
    256, 512, 1024, 2048, 4096, 8192, 16_384, 32_768, 65_536, MAX_PADDED,
];
/// The largest padded payload.
pub const MAX_PADDED: usize = 65_536 + 512;
/// Longest text a message carries, in bytes of UTF-8 (as in v1).
pub const MAX_TEXT_BYTES: usize = 65_536;
/// Type byte, `sent_at`, body length.
const PAYLOAD_HEADER: usize = 1 + 8 + 4;

const TEXT: u8 = 1;
const SENT_COPY: u8 = 2;

/// What a message carries. Types other than these two are reserved
/// (receipts, attachments); a receiver reports them as [`Content::Other`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    /// Type 1: UTF-8 text.
    Text(String),
    /// Type 2: a copy, for the sender's other devices, of a text the sender
    /// sent to `to` under message id `id`.
    SentCopy {
        to: PhoneNumber,
        id: MessageId,
        text: String,
    },
    /// A type this version does not know; the body as it came.
    Other { kind: u8, body: Vec<u8> },
}

impl Content {
    fn kind(&self) -> u8 {
        match self {
            Self::Text(_) => TEXT,
            Self::SentCopy { .. } => SENT_COPY,
            Self::Other { kind, .. } => *kind,
        }
    }

    fn body(&self) -> Result<Vec<u8>, Error> {
        let text = match self {
            Self::Text(t) | Self::SentCopy { text: t, .. } => t,
            Self::Other { body, .. } => return Ok(body.clone()),
        };
        if text.len() > MAX_TEXT_BYTES {
            return Err(Error::TooLong);
        }
        let mut out = Vec::with_capacity(text.len() + 40);
        if let Self::SentCopy { to, id, .. } = self {
            out.put_phone(to);
            out.put(id.as_bytes());
        }
        out.put(text.as_bytes());
        Ok(out)
    }

    fn from_body(kind: u8, body: &[u8]) -> Result<Self, Error> {
        let utf8 = |b: &[u8]| {
            std::str::from_utf8(b)
                .map(str::to_owned)
                .map_err(|_| Error::Malformed("text is not UTF-8"))
        };
        let check = |t: String| {
            if t.len() > MAX_TEXT_BYTES {
                Err(Error::TooLong)
            } else {
                Ok(t)
            }
        };
        match kind {
            TEXT => Ok(Self::Text(check(utf8(body)?)?)),
            SENT_COPY => {
                let mut r = Reader::new(body);
                let to = r.phone("sent copy recipient")?;
                let id = MessageId::from_bytes(r.array("sent copy id")?);
                let text = check(utf8(r.rest())?)?;
                Ok(Self::SentCopy { to, id, text })
            }
            kind => Ok(Self::Other {
                kind,
                body: body.to_vec(),
            }),
        }
    }
}

/// The smallest bucket that holds `len` bytes.
pub(crate) fn bucket_for(len: usize) -> Option<usize> {
    BUCKETS.iter().copied().find(|&b| b >= len)
}

/// Builds the padded plaintext.
pub(crate) fn pad(
    content: &Content,
    sent_at_ms: u64,
) -> Result<zeroize::Zeroizing<Vec<u8>>, Error> {
    let body = zeroize::Zeroizing::new(content.body()?);
    let size = bucket_for(PAYLOAD_HEADER + body.len()).ok_or(Error::TooLong)?;
    let mut out = zeroize::Zeroizing::new(Vec::with_capacity(size));
    out.put_u8(content.kind());
    out.put_u64(sent_at_ms);
    out.put_u32(body.len() as u32);
    out.put(&body);
    out.resize(size, 0);
    Ok(out)
}

/// Reads a padded plaintext strictly: its size must be a bucket, the body
/// must fit, and every padding byte must be zero.
pub(crate) fn unpad(plaintext: &[u8]) -> Result<(Content, u64), Error> {
    if !BUCKETS.contains(&plaintext.len()) {
        return Err(Error::Malformed("payload size is not a bucket"));
    }
    let mut r = Reader::new(plaintext);
    let kind = r.u8("content type")?;
    let sent_at_ms = r.u64("sent_at")?;
    let len = r.u32("body length")?;
    let body = r.take(len as usize, "body")?;
    if r.rest().iter().any(|&b| b != 0) {
        return Err(Error::Malformed("padding"));
    }
    Ok((Content::from_body(kind, body)?, sent_at_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_land_in_buckets() {
        let cases = [
            (0, 256),
            (243, 256),
            (244, 512),
            (65_523, 65_536),
            (65_524, MAX_PADDED),
        ];
        for (text_len, bucket) in cases {
            let padded = pad(&Content::Text("x".repeat(text_len)), 1).unwrap();
            assert_eq!(padded.len(), bucket, "text of {text_len} bytes");
            let (content, at) = unpad(&padded).unwrap();
            assert_eq!((content, at), (Content::Text("x".repeat(text_len)), 1));
        }
        assert_eq!(
            pad(&Content::Text("x".repeat(MAX_TEXT_BYTES + 1)), 1),
            Err(Error::TooLong)
        );
        let copy = Content::SentCopy {
            to: PhoneNumber::from_canonical("+12025550102").unwrap(),
            id: MessageId::from_bytes([7; 16]),
            text: "x".repeat(MAX_TEXT_BYTES),
        };
        let padded = pad(&copy, 2).unwrap();
        assert_eq!(padded.len(), MAX_PADDED);
        assert_eq!(unpad(&padded).unwrap().0, copy);
    }

    #[test]
    fn strict_parsing() {
        let good = pad(&Content::Text("hi".into()), 1).unwrap();
        assert!(unpad(&good[..255]).is_err());
        let mut nonzero = good.clone();
        nonzero[200] = 1;
        assert_eq!(unpad(&nonzero), Err(Error::Malformed("padding")));
        let mut long = good.clone();
        long[12] = 250;
        assert!(unpad(&long).is_err());
        let mut bad_utf8 = good.clone();
        bad_utf8[13] = 0xff;
        assert!(unpad(&bad_utf8).is_err());
        let mut other = good.to_vec();
        other[0] = 9;
        assert_eq!(
            unpad(&other).unwrap().0,
            Content::Other {
                kind: 9,
                body: b"hi".to_vec()
            }
        );
    }
}
