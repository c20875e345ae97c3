//! What is encrypted: a typed content, the sender's clock, and zero padding
//! up to a padded size, so the server and the network learn the padded size
//! and not the exact length (docs/PROTOCOL.md §13).
//!
//! ```text
//! content type u8 | sent_at u64 | body length u32 | body | 0x00 … to the padded size
//! ```
//!
//! Every payload of up to [`MIN_PADDED`] bytes (most chat messages) is padded
//! to exactly that size, so short messages all look alike. Longer ones are
//! padded with Padmé (Nikitin et al., "Reducing Metadata Leakage from
//! Encrypted Files and Communication with PURBs", PETS 2019) rather than to
//! the next power of two: doubling cost up to 100% more bytes (a 256-byte
//! text became a 512-byte payload), Padmé costs less than 1/16 here, at the
//! price of more distinct sizes per octave (16 instead of 1).

use super::Error;
use super::codec::{Put, Reader};
use crate::domain::{MessageId, PhoneNumber};

/// The smallest padded payload: every payload up to this size is padded to
/// exactly it, so short messages reveal nothing of their length.
pub const MIN_PADDED: usize = 256;
/// The largest Padmé size; a payload above it takes [`MAX_PADDED`].
const LAST_PADME: usize = 65_536;
/// The largest padded payload, the one size above 64 KiB: the largest text
/// (65 549 bytes of payload) and its sync copy (65 582 with a 16-byte phone)
/// fit it, and a kind-1 envelope around it stays under the servers' limit.
pub const MAX_PADDED: usize = 65_536 + 512;
/// Longest text a message carries, in bytes of UTF-8 (as in v1).
pub const MAX_TEXT_BYTES: usize = 65_536;
/// Type byte, `sent_at`, body length.
const PAYLOAD_HEADER: usize = 1 + 8 + 4;

const TEXT: u8 = 1;
const SENT_COPY: u8 = 2;
/// What a sync copy's body holds beyond its text, at most: the phone's
/// length byte, the longest phone and the message id.
const SENT_COPY_EXTRA: usize = 1 + crate::domain::MAX_PHONE_LEN + 16;

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

/// Padmé's size for `n` bytes (`n` ≥ 2): with E = ⌊log₂ n⌋ and S =
/// ⌊log₂ E⌋ + 1, `n` rounded up to a multiple of 2^(E−S). Keeping only the
/// top S bits of the size bounds both what the size leaks (O(log log n)
/// bits) and the bytes it adds (less than 2^(E−S), i.e. at most 1/16 of `n`
/// for every `n` from 257 to 65 536, where S is 4).
fn padme(n: usize) -> usize {
    let e = n.ilog2();
    let s = e.ilog2() + 1;
    let mask = (1usize << (e - s)) - 1;
    (n + mask) & !mask
}

/// The padded size of a payload of `len` bytes: [`MIN_PADDED`] up to it,
/// then Padmé's size up to 64 KiB, then [`MAX_PADDED`]; `None` past that.
/// It is always the smallest size that [`is_padded_size`] accepts and that
/// holds `len` bytes.
pub fn padded_size(len: usize) -> Option<usize> {
    if len <= MIN_PADDED {
        return Some(MIN_PADDED);
    }
    if len > MAX_PADDED {
        return None;
    }
    Some(match padme(len) {
        size if size <= LAST_PADME => size,
        _ => MAX_PADDED,
    })
}

/// Whether a payload may be `size` bytes long: [`MIN_PADDED`],
/// [`MAX_PADDED`], or a size between them up to 64 KiB that Padmé leaves as
/// it is. Between 257 and 65 536 these are, for E from 8 to 15, the
/// multiples of 2^(E−4) in [2^E, 2^(E+1)), and 65 536 (docs/PROTOCOL.md §13
/// lists them).
pub fn is_padded_size(size: usize) -> bool {
    size == MIN_PADDED
        || size == MAX_PADDED
        || (MIN_PADDED < size && size <= LAST_PADME && padme(size) == size)
}

/// Builds the padded plaintext.
pub(crate) fn pad(
    content: &Content,
    sent_at_ms: u64,
) -> Result<zeroize::Zeroizing<Vec<u8>>, Error> {
    let body = zeroize::Zeroizing::new(content.body()?);
    let size = padded_size((PAYLOAD_HEADER + body.len()).max(sent_copy_floor(content)))
        .ok_or(Error::TooLong)?;
    let mut out = zeroize::Zeroizing::new(Vec::with_capacity(size));
    out.put_u8(content.kind());
    out.put_u64(sent_at_ms);
    out.put_u32(body.len() as u32);
    out.put(&body);
    out.resize(size, 0);
    Ok(out)
}

/// The least a sync copy is padded to: its text's own padded size plus
/// [`SENT_COPY_EXTRA`] (at most [`MAX_PADDED`]). The copy travels under
/// the same message id as the text, so the server sees both sizes side by
/// side; padded from its exact body, the copy's size would add what the
/// text's size hides (it depends on the text's exact length and the
/// recipient phone's), and the two together could pin a length to the byte.
/// From the text's padded size alone, it tells nothing the text's does not.
fn sent_copy_floor(content: &Content) -> usize {
    match content {
        Content::SentCopy { text, .. } => padded_size(PAYLOAD_HEADER + text.len())
            .map_or(0, |t| (t + SENT_COPY_EXTRA).min(MAX_PADDED)),
        _ => 0,
    }
}

/// Reads a padded plaintext strictly: its size must be a padded size, the
/// body must fit, and every padding byte must be zero.
pub(crate) fn unpad(plaintext: &[u8]) -> Result<(Content, u64), Error> {
    if !is_padded_size(plaintext.len()) {
        return Err(Error::Malformed("payload size is not a padded size"));
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

    use proptest::prelude::*;

    /// The valid sizes as docs/PROTOCOL.md §13 lists them, written out
    /// without Padmé's formula: 16 evenly spaced sizes in each octave from
    /// 256 to 65 536 (256 itself first), then 65 536 and the last size.
    fn listed_sizes() -> Vec<usize> {
        let mut sizes = Vec::new();
        for e in 8..16 {
            sizes.extend((0..16).map(|k| (1 << e) + k * (1 << (e - 4))));
        }
        sizes.extend([65_536, MAX_PADDED]);
        sizes
    }

    /// The smallest listed size that holds `len` bytes.
    fn smallest_listed(len: usize) -> Option<usize> {
        listed_sizes().into_iter().find(|&s| s >= len)
    }

    /// A sync copy's size follows from its text's padded size alone, so
    /// a text and its copy together reveal no more than the text: not its
    /// exact length, nor the length of the recipient's phone.
    #[test]
    fn a_sync_copy_reveals_no_more_than_its_text() {
        let phones = ["+1202555", "+12025550102", "+123456789012345"];
        let mut copy_size_of = std::collections::HashMap::new();
        for len in (0..4_200)
            .chain(32_700..32_800)
            .chain(65_500..=MAX_TEXT_BYTES)
        {
            let text = pad(&Content::Text("x".repeat(len)), 1).unwrap().len();
            for phone in phones {
                let copy = Content::SentCopy {
                    to: PhoneNumber::from_canonical(phone).unwrap(),
                    id: MessageId::from_bytes([7; 16]),
                    text: "x".repeat(len),
                };
                let padded = pad(&copy, 1).unwrap();
                let size = *copy_size_of.entry(text).or_insert(padded.len());
                assert_eq!(padded.len(), size, "text of {len} bytes to {phone}");
                assert_eq!(unpad(&padded).unwrap(), (copy, 1));
            }
        }
        assert_eq!(copy_size_of[&256], 304);
        assert_eq!(copy_size_of[&272], 320);
        assert_eq!(copy_size_of[&MAX_PADDED], MAX_PADDED);
    }

    #[test]
    fn texts_get_their_padded_sizes() {
        let cases = [
            (0, 256),
            (243, 256),
            (244, 272),
            (259, 272),
            (260, 288),
            (499, 512),
            (500, 544),
            (1_011, 1_024),
            (1_012, 1_088),
            (32_755, 32_768),
            (32_756, 34_816),
            (65_523, 65_536),
            (65_524, MAX_PADDED),
            (MAX_TEXT_BYTES, MAX_PADDED),
        ];
        for (text_len, size) in cases {
            let padded = pad(&Content::Text("x".repeat(text_len)), 1).unwrap();
            assert_eq!(padded.len(), size, "text of {text_len} bytes");
            let (content, at) = unpad(&padded).unwrap();
            assert_eq!((content, at), (Content::Text("x".repeat(text_len)), 1));
        }
        assert_eq!(
            pad(&Content::Text("x".repeat(MAX_TEXT_BYTES + 1)), 1),
            Err(Error::TooLong)
        );
        // The largest sync copy: 13 + 1 + 16 + 16 + 65 536 = 65 582 bytes.
        let copy = Content::SentCopy {
            to: PhoneNumber::from_canonical("+123456789012345").unwrap(),
            id: MessageId::from_bytes([7; 16]),
            text: "x".repeat(MAX_TEXT_BYTES),
        };
        let padded = pad(&copy, 2).unwrap();
        assert_eq!(padded.len(), MAX_PADDED);
        assert_eq!(unpad(&padded).unwrap().0, copy);
        // A body of another type gets no more room than a text.
        let other = |len| Content::Other {
            kind: 9,
            body: vec![1; len],
        };
        assert_eq!(pad(&other(MAX_PADDED - 13), 1).unwrap().len(), MAX_PADDED);
        assert_eq!(pad(&other(MAX_PADDED - 12), 1), Err(Error::TooLong));
    }

    #[test]
    fn octave_edges() {
        for e in 9..=16 {
            let edge = 1usize << e;
            assert_eq!(padded_size(edge - 1), Some(edge), "just under 2^{e}");
            assert_eq!(padded_size(edge), Some(edge), "2^{e}");
        }
        for e in 8..16 {
            let edge = 1usize << e;
            let step = edge / 16;
            assert_eq!(padded_size(edge + 1), Some(edge + step), "just over 2^{e}");
            assert_eq!(padded_size(edge + step), Some(edge + step));
            assert_eq!(padded_size(edge + step + 1), Some(edge + 2 * step));
        }
        assert_eq!(padded_size(65_537), Some(MAX_PADDED));
        assert_eq!(padded_size(MAX_PADDED), Some(MAX_PADDED));
        assert_eq!(padded_size(MAX_PADDED + 1), None);
        assert_eq!(padded_size(usize::MAX), None);
    }

    #[test]
    fn sizes_are_the_listed_ones_and_cost_under_a_sixteenth() {
        let listed = listed_sizes();
        assert_eq!(listed.len(), 130);
        for len in 0..=MAX_PADDED + 1 {
            assert_eq!(padded_size(len), smallest_listed(len), "{len} bytes");
        }
        for size in 0..=MAX_PADDED + 4_096 {
            assert_eq!(is_padded_size(size), listed.contains(&size), "size {size}");
        }
        for len in MIN_PADDED + 1..=LAST_PADME {
            let size = padded_size(len).unwrap();
            assert!((size - len) * 16 < len, "{len} bytes padded to {size}");
        }
    }

    #[test]
    fn every_padded_size_is_accepted_and_its_neighbours_refused() {
        let short = pad(&Content::Text("hi".into()), 1).unwrap();
        let refused = Err(Error::Malformed("payload size is not a padded size"));
        for size in listed_sizes() {
            // A body that fills the size exactly (of another type, since
            // the largest size holds more than the longest text).
            let exact = Content::Other {
                kind: 9,
                body: vec![0x79; size - PAYLOAD_HEADER],
            };
            let full = pad(&exact, 3).unwrap();
            assert_eq!(full.len(), size);
            assert_eq!(unpad(&full).unwrap(), (exact, 3));
            let mut payload = short.to_vec();
            payload.resize(size, 0);
            assert_eq!(unpad(&payload).unwrap().0, Content::Text("hi".into()));
            for neighbour in [size - 1, size + 1] {
                payload.resize(neighbour, 0);
                assert_eq!(unpad(&payload), refused, "{neighbour} bytes");
            }
        }
    }

    /// A text of at most `len` bytes made of one repeated character.
    fn text_of(len: usize, c: char) -> String {
        c.to_string().repeat(len / c.len_utf8())
    }

    proptest! {
        #[test]
        fn pad_round_trips_at_the_smallest_size(
            len in 0..=MAX_TEXT_BYTES,
            c in any::<char>(),
            copy in any::<bool>(),
            at in any::<u64>(),
        ) {
            let text = text_of(len, c);
            let text_size = smallest_listed(PAYLOAD_HEADER + text.len()).unwrap();
            let (content, least) = if copy {
                let to = PhoneNumber::from_canonical("+12025550102").unwrap();
                let body = 1 + to.as_str().len() + 16 + text.len();
                // A sync copy takes at least its text's size and 33 bytes more.
                let least = (PAYLOAD_HEADER + body).max((text_size + 33).min(MAX_PADDED));
                (Content::SentCopy { to, id: MessageId::from_bytes([5; 16]), text }, least)
            } else {
                (Content::Text(text), text_size)
            };
            let padded = pad(&content, at).unwrap();
            prop_assert_eq!(Some(padded.len()), smallest_listed(least));
            prop_assert_eq!(unpad(&padded).unwrap(), (content, at));
        }

        #[test]
        fn other_types_round_trip_or_are_too_long(
            kind in 3u8..=255,
            len in 0..MAX_PADDED,
            at in any::<u64>(),
        ) {
            let content = Content::Other { kind, body: vec![0xa5; len] };
            match smallest_listed(PAYLOAD_HEADER + len) {
                Some(size) => {
                    let padded = pad(&content, at).unwrap();
                    prop_assert_eq!(padded.len(), size);
                    prop_assert_eq!(unpad(&padded).unwrap(), (content, at));
                }
                None => prop_assert_eq!(pad(&content, at), Err(Error::TooLong)),
            }
        }
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
