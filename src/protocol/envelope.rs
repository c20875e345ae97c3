//! The byte layout of a sealed message (docs/PROTOCOL.md, "Envelope").
//!
//! The server reads only the clear header (to check that the sender is the
//! logged-in user and the recipient is who the request names); sealing and
//! opening live in `crypto::envelope`.
//!
//! ```text
//! version u8 | kem u8 | sig u8 | content u8 | id [16] | counter u64 | sent_at u64
//! | sender_len u8 | sender | recipient_len u8 | recipient          <- header
//! | key_len u16 | key_block                                        <- end of AAD
//! | nonce [12] | ct_len u32 | ciphertext ‖ tag [16]                <- end of signed bytes
//! | sig_len u16 | signature                                        <- end
//! ```
//! Integers are big-endian; strings are E.164 phone numbers in ASCII.

use crate::domain::{MessageId, PhoneNumber};

/// Envelope format version; equals the protocol version.
pub const VERSION: u8 = super::PROTOCOL_VERSION;
/// Key block: 65-byte uncompressed ephemeral P-256 point; key by ECDH + HKDF-SHA256.
pub const KEM_P256_HKDF: u8 = 1;
/// Key block: the 32-byte AES key wrapped with RSA-OAEP-SHA256.
pub const KEM_RSA_OAEP: u8 = 2;
/// Signature: ECDSA P-256 over SHA-256, 64 bytes r ‖ s.
pub const SIG_ECDSA_P256: u8 = 1;
/// Signature: RSA-PSS, SHA-256, MGF1-SHA256, 32-byte salt.
pub const SIG_RSA_PSS: u8 = 2;
/// Content: UTF-8 text.
pub const CONTENT_TEXT: u8 = 1;
/// AES-GCM nonce length.
pub const NONCE_LEN: usize = 12;
/// AES-GCM tag length.
pub const TAG_LEN: usize = 16;
/// Largest key block (an RSA-4096 OAEP ciphertext).
pub const MAX_KEY_BLOCK: usize = 512;
/// Largest signature (an RSA-4096 PSS signature).
pub const MAX_SIGNATURE: usize = 512;

/// The clear part of an envelope, authenticated as AES-GCM associated data
/// and covered by the sender's signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub kem: u8,
    pub sig: u8,
    pub content: u8,
    pub id: MessageId,
    /// Per sender→recipient counter, strictly increasing; drops replays.
    pub counter: u64,
    /// Sender's clock, milliseconds since the Unix epoch.
    pub sent_at: u64,
    pub sender: PhoneNumber,
    pub recipient: PhoneNumber,
}

/// Why an envelope's bytes were refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("envelope ends early")]
    Truncated,
    #[error("envelope has {0} bytes after its signature")]
    TrailingBytes(usize),
    #[error("envelope version {0} is not supported (this build speaks version {VERSION})")]
    Version(u8),
    #[error("unknown {0} algorithm {1}")]
    Algorithm(&'static str, u8),
    #[error("envelope {0} is not a phone number")]
    Phone(&'static str),
    #[error("envelope {0} is too long")]
    TooLong(&'static str),
}

/// A parsed envelope borrowing from its bytes.
#[derive(Debug)]
pub struct EnvelopeView<'a> {
    pub header: Header,
    pub key_block: &'a [u8],
    pub nonce: [u8; NONCE_LEN],
    /// Ciphertext followed by the 16-byte tag.
    pub ciphertext: &'a [u8],
    pub signature: &'a [u8],
    /// Header and key block: the AES-GCM associated data.
    pub aad: &'a [u8],
    /// Everything before `sig_len`: what the sender signed.
    pub signed: &'a [u8],
}

/// Appends the header's bytes to `out`.
pub fn encode_header(h: &Header, out: &mut Vec<u8>) {
    out.extend_from_slice(&[VERSION, h.kem, h.sig, h.content]);
    out.extend_from_slice(h.id.as_bytes());
    out.extend_from_slice(&h.counter.to_be_bytes());
    out.extend_from_slice(&h.sent_at.to_be_bytes());
    for phone in [&h.sender, &h.recipient] {
        out.push(phone.as_str().len() as u8);
        out.extend_from_slice(phone.as_str().as_bytes());
    }
}

/// Appends a `u16` length and the key block.
pub fn encode_key_block(key_block: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(key_block.len() as u16).to_be_bytes());
    out.extend_from_slice(key_block);
}

/// Appends the nonce, a `u32` length and the ciphertext with its tag.
pub fn encode_body(nonce: &[u8; NONCE_LEN], ciphertext: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(nonce);
    out.extend_from_slice(&(ciphertext.len() as u32).to_be_bytes());
    out.extend_from_slice(ciphertext);
}

/// Appends a `u16` length and the signature.
pub fn encode_signature(signature: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(signature.len() as u16).to_be_bytes());
    out.extend_from_slice(signature);
}

/// Parses an envelope, checking every length against the bytes present and
/// the named maxima. Nothing is verified or decrypted here.
pub fn parse(bytes: &[u8]) -> Result<EnvelopeView<'_>, EnvelopeError> {
    let mut r = Reader { bytes, pos: 0 };
    let version = r.u8()?;
    if version != VERSION {
        return Err(EnvelopeError::Version(version));
    }
    let kem = r.u8()?;
    if kem != KEM_P256_HKDF && kem != KEM_RSA_OAEP {
        return Err(EnvelopeError::Algorithm("key", kem));
    }
    let sig = r.u8()?;
    if sig != SIG_ECDSA_P256 && sig != SIG_RSA_PSS {
        return Err(EnvelopeError::Algorithm("signature", sig));
    }
    let content = r.u8()?;
    if content != CONTENT_TEXT {
        return Err(EnvelopeError::Algorithm("content", content));
    }
    let id = MessageId::from_slice(r.take(16)?).ok_or(EnvelopeError::Truncated)?;
    let counter = r.u64()?;
    let sent_at = r.u64()?;
    let sender = r.phone("sender")?;
    let recipient = r.phone("recipient")?;
    let key_len = r.u16()? as usize;
    if key_len > MAX_KEY_BLOCK {
        return Err(EnvelopeError::TooLong("key block"));
    }
    let key_block = r.take(key_len)?;
    let aad_end = r.pos;
    let nonce: [u8; NONCE_LEN] = r.take(NONCE_LEN)?.try_into().expect("length checked");
    let ct_len = r.u32()? as usize;
    if ct_len > super::MAX_ENVELOPE_BYTES {
        return Err(EnvelopeError::TooLong("ciphertext"));
    }
    if ct_len < TAG_LEN {
        return Err(EnvelopeError::Truncated);
    }
    let ciphertext = r.take(ct_len)?;
    let signed_end = r.pos;
    let sig_len = r.u16()? as usize;
    if sig_len > MAX_SIGNATURE {
        return Err(EnvelopeError::TooLong("signature"));
    }
    let signature = r.take(sig_len)?;
    if r.pos != bytes.len() {
        return Err(EnvelopeError::TrailingBytes(bytes.len() - r.pos));
    }
    Ok(EnvelopeView {
        header: Header {
            kem,
            sig,
            content,
            id,
            counter,
            sent_at,
            sender,
            recipient,
        },
        key_block,
        nonce,
        ciphertext,
        signature,
        aad: &bytes[..aad_end],
        signed: &bytes[..signed_end],
    })
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], EnvelopeError> {
        let end = self.pos.checked_add(n).ok_or(EnvelopeError::Truncated)?;
        let slice = self
            .bytes
            .get(self.pos..end)
            .ok_or(EnvelopeError::Truncated)?;
        self.pos = end;
        Ok(slice)
    }
    fn u8(&mut self) -> Result<u8, EnvelopeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, EnvelopeError> {
        Ok(u16::from_be_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }
    fn u32(&mut self) -> Result<u32, EnvelopeError> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, EnvelopeError> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn phone(&mut self, what: &'static str) -> Result<PhoneNumber, EnvelopeError> {
        let len = self.u8()? as usize;
        if len > crate::domain::MAX_PHONE_LEN {
            return Err(EnvelopeError::TooLong(what));
        }
        let raw = std::str::from_utf8(self.take(len)?).map_err(|_| EnvelopeError::Phone(what))?;
        PhoneNumber::from_canonical(raw).map_err(|_| EnvelopeError::Phone(what))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let h = Header {
            kem: KEM_P256_HKDF,
            sig: SIG_ECDSA_P256,
            content: CONTENT_TEXT,
            id: MessageId::from_bytes([1; 16]),
            counter: 5,
            sent_at: 1_700_000_000_000,
            sender: PhoneNumber::from_canonical("+12025550101").unwrap(),
            recipient: PhoneNumber::from_canonical("+12025550102").unwrap(),
        };
        let mut out = Vec::new();
        encode_header(&h, &mut out);
        encode_key_block(&[4; 65], &mut out);
        encode_body(&[9; 12], &[0xaa; 20], &mut out);
        encode_signature(&[0x55; 64], &mut out);
        out
    }

    #[test]
    fn parses_what_it_encodes() {
        let bytes = sample();
        let v = parse(&bytes).unwrap();
        assert_eq!(v.header.counter, 5);
        assert_eq!(v.header.recipient.as_str(), "+12025550102");
        assert_eq!(v.key_block.len(), 65);
        assert_eq!(v.ciphertext.len(), 20);
        assert_eq!(v.signature.len(), 64);
        assert_eq!(v.signed.len(), bytes.len() - 2 - 64);
    }

    #[test]
    fn every_truncation_is_refused() {
        let bytes = sample();
        for cut in 0..bytes.len() {
            assert!(parse(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(parse(&longer).unwrap_err(), EnvelopeError::TrailingBytes(1));
    }
}
