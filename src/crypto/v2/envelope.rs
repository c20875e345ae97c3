//! The v2 envelope's byte layout (docs/PROTOCOL.md §14). One envelope
//! goes to one device. Servers read its clear header; the rest is between
//! the two devices. Parsing here checks structure only; [`Envelope::verify`]
//! checks the sender device's signature.
//!
//! ```text
//! version u8 = 2 | kind u8 | id [16] | session [16]
//! | u8 len | sender phone | sender device u32 | u8 len | recipient phone | recipient device u32
//! | (kind 1 only) signed prekey id u32 | one-time prekey id u32 (0 = none)
//! |               ML-KEM prekey id u32 | base key [65] | ML-KEM ciphertext [1088]
//! | ratchet key [65] | pn u32 | n u32 | C u32          <- end of the AEAD's associated data
//! | ciphertext ‖ tag [C]                               <- end of the signed bytes
//! | signature [64]                                     <- end
//! ```

use super::codec::{Put, Reader};
use super::ec::{DeviceKey, POINT_LEN, PublicPoint, SIGNATURE_LEN};
use super::kem::KEM_CIPHERTEXT_LEN;
use super::padding::is_padded_size;
use super::ratchet::Header;
use super::{DeviceId, Error, VERSION};
use crate::domain::{MessageId, PhoneNumber};

/// Largest v2 envelope; the largest possible one (a prekey message with
/// the largest payload and two 16-byte phones) is 67 446 bytes, so the
/// servers' v1 limit holds unchanged.
pub const MAX_ENVELOPE_V2: usize = 67_584;
/// Prefix of the bytes the sending device signs.
const SIGNATURE_LABEL: &[u8] = b"carrier-v2 envelope\0";
const TAG_LEN: usize = 16;

/// Names one session between two devices: the first 16 bytes of the
/// session hash (docs/PROTOCOL.md §11.2).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub [u8; 16]);

impl std::fmt::Debug for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SessionId({})", hex::encode(self.0))
    }
}

/// What an envelope is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnvelopeKind {
    /// Carries the session set-up; sent until the initiator hears back.
    Prekey = 1,
    /// A message in an established session.
    Message = 2,
}

/// The session set-up an initiator repeats in each envelope until the
/// responder answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PrekeyPart {
    pub(crate) signed_id: u32,
    pub(crate) one_time_id: Option<u32>,
    pub(crate) kem_id: u32,
    pub(crate) base_key: PublicPoint,
    pub(crate) ciphertext: Box<[u8; KEM_CIPHERTEXT_LEN]>,
}

impl PrekeyPart {
    /// Signed prekey id ‖ one-time prekey id (0 = none) ‖ ML-KEM prekey id ‖
    /// base key ‖ ML-KEM ciphertext: 1 165 bytes, in envelopes and in the
    /// initiator's stored session.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.put_u32(self.signed_id);
        out.put_u32(self.one_time_id.unwrap_or(0));
        out.put_u32(self.kem_id);
        out.put(self.base_key.as_bytes());
        out.put(&self.ciphertext[..]);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(Self {
            signed_id: r.u32("signed prekey id")?,
            one_time_id: Some(r.u32("one-time prekey id")?).filter(|&id| id != 0),
            kem_id: r.u32("kem prekey id")?,
            base_key: PublicPoint::from_bytes(r.take(POINT_LEN, "base key")?)?,
            ciphertext: Box::new(r.array("kem ciphertext")?),
        })
    }
}

/// The addressing fields of the clear header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Route {
    pub(crate) id: MessageId,
    pub(crate) session: SessionId,
    pub(crate) sender: PhoneNumber,
    pub(crate) sender_device: DeviceId,
    pub(crate) recipient: PhoneNumber,
    pub(crate) recipient_device: DeviceId,
}

/// A structurally valid v2 envelope, not yet authenticated.
#[derive(Clone, Debug)]
pub struct Envelope {
    bytes: Vec<u8>,
    pub(crate) route: Route,
    pub(crate) prekey: Option<PrekeyPart>,
    pub(crate) header: Header,
    /// Offset of the ciphertext: everything before it is associated data.
    ciphertext_at: usize,
}

impl Envelope {
    /// Parses every field and length; nothing is verified or decrypted.
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        let mut r = versioned(bytes)?;
        let kind = r.u8("envelope kind")?;
        let route = Route {
            id: MessageId::from_bytes(r.array("message id")?),
            session: SessionId(r.array("session id")?),
            sender: r.phone("sender phone")?,
            sender_device: DeviceId::new(r.u32("sender device")?)?,
            recipient: r.phone("recipient phone")?,
            recipient_device: DeviceId::new(r.u32("recipient device")?)?,
        };
        let prekey = match kind {
            1 => Some(PrekeyPart::decode(&mut r)?),
            2 => None,
            _ => return Err(Error::Malformed("envelope kind")),
        };
        let header = Header {
            dh: PublicPoint::from_bytes(r.take(POINT_LEN, "ratchet key")?)?,
            pn: r.u32("pn")?,
            n: r.u32("n")?,
        };
        let ciphertext_at = ciphertext_and_signature(r)?;
        Ok(Self {
            bytes: bytes.to_vec(),
            route,
            prekey,
            header,
            ciphertext_at,
        })
    }

    pub fn kind(&self) -> EnvelopeKind {
        if self.prekey.is_some() {
            EnvelopeKind::Prekey
        } else {
            EnvelopeKind::Message
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn id(&self) -> MessageId {
        self.route.id
    }

    pub fn session_id(&self) -> SessionId {
        self.route.session
    }

    /// The sending account and device, as claimed until [`Envelope::verify`].
    pub fn sender(&self) -> (&PhoneNumber, DeviceId) {
        (&self.route.sender, self.route.sender_device)
    }

    pub fn recipient(&self) -> (&PhoneNumber, DeviceId) {
        (&self.route.recipient, self.route.recipient_device)
    }

    /// Checks the sender device's signature over everything before it.
    pub fn verify(&self, sender_key: &PublicPoint) -> Result<(), Error> {
        let signed_end = self.bytes.len() - SIGNATURE_LEN;
        let msg = [SIGNATURE_LABEL, &self.bytes[..signed_end]].concat();
        sender_key.verify(&msg, &self.bytes[signed_end..])
    }

    /// The AES-GCM associated data: session hash ‖ every byte before the
    /// ciphertext.
    pub(crate) fn associated_data(&self, session_hash: &[u8; 32]) -> Vec<u8> {
        [&session_hash[..], &self.bytes[..self.ciphertext_at]].concat()
    }

    pub(crate) fn ciphertext(&self) -> &[u8] {
        &self.bytes[self.ciphertext_at..self.bytes.len() - SIGNATURE_LEN]
    }
}

/// The clear header of an envelope (§14.1, `[0, 44+S+R)`), borrowed from
/// its bytes: what a server reads of an envelope it stores and forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClearHeader<'a> {
    pub kind: EnvelopeKind,
    pub id: MessageId,
    /// The sender's phone as written, not yet checked to be canonical.
    pub sender: &'a [u8],
    pub sender_device: u32,
    /// The recipient's phone as written, not yet checked to be canonical.
    pub recipient: &'a [u8],
    pub recipient_device: u32,
}

impl<'a> ClearHeader<'a> {
    /// Reads the clear header and walks the lengths of the rest of §14.1
    /// (set-up, ratchet header, a ciphertext of a padded size, the signature,
    /// nothing after it) without copying anything or decoding a point: a
    /// server stores and forwards the envelope, so its keys are the
    /// recipient device's to check, and [`Envelope::parse`] would cost the
    /// server a copy of the envelope and a curve check per message.
    pub fn read(bytes: &'a [u8]) -> Result<Self, Error> {
        let mut r = versioned(bytes)?;
        let kind = match r.u8("envelope kind")? {
            1 => EnvelopeKind::Prekey,
            2 => EnvelopeKind::Message,
            _ => return Err(Error::Malformed("envelope kind")),
        };
        let id = MessageId::from_bytes(r.array("message id")?);
        r.take(16, "session id")?;
        let sender = r.short("sender phone")?;
        let sender_device = r.u32("sender device")?;
        let recipient = r.short("recipient phone")?;
        let recipient_device = r.u32("recipient device")?;
        if kind == EnvelopeKind::Prekey {
            r.take(12 + POINT_LEN + KEM_CIPHERTEXT_LEN, "prekey set-up")?;
        }
        r.take(POINT_LEN + 8, "ratchet header")?;
        ciphertext_and_signature(r)?;
        Ok(Self {
            kind,
            id,
            sender,
            sender_device,
            recipient,
            recipient_device,
        })
    }
}

/// A reader past an envelope's version byte, once the length and the
/// version are right: where both [`Envelope::parse`] and
/// [`ClearHeader::read`] begin.
fn versioned(bytes: &[u8]) -> Result<Reader<'_>, Error> {
    if bytes.len() > MAX_ENVELOPE_V2 {
        return Err(Error::Malformed("envelope too long"));
    }
    let mut r = Reader::new(bytes);
    if r.u8("envelope version")? != VERSION {
        return Err(Error::Malformed("envelope version (expected 2)"));
    }
    Ok(r)
}

/// Reads the ciphertext (a padded size of §13 and the tag) and the
/// signature that end an envelope, and nothing after them; returns where the
/// ciphertext starts.
fn ciphertext_and_signature(mut r: Reader<'_>) -> Result<usize, Error> {
    let len = r.u32("ciphertext length")? as usize;
    if !len.checked_sub(TAG_LEN).is_some_and(is_padded_size) {
        return Err(Error::Malformed("ciphertext length"));
    }
    let ciphertext_at = r.position();
    r.take(len, "ciphertext")?;
    r.take(SIGNATURE_LEN, "signature")?;
    r.finish("envelope")?;
    Ok(ciphertext_at)
}

/// Writes an envelope: the clear part, then the ciphertext that `encrypt`
/// makes from the associated data, then the device's signature.
pub(crate) fn assemble(
    route: &Route,
    prekey: Option<&PrekeyPart>,
    header: &Header,
    session_hash: &[u8; 32],
    plaintext_len: usize,
    encrypt: impl FnOnce(&[u8]) -> Result<Vec<u8>, Error>,
    device: &DeviceKey,
) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(plaintext_len + 1500);
    out.put_u8(VERSION);
    out.put_u8(if prekey.is_some() { 1 } else { 2 });
    out.put(route.id.as_bytes());
    out.put(&route.session.0);
    out.put_phone(&route.sender);
    out.put_u32(route.sender_device.get());
    out.put_phone(&route.recipient);
    out.put_u32(route.recipient_device.get());
    if let Some(p) = prekey {
        p.encode(&mut out);
    }
    out.put(header.dh.as_bytes());
    out.put_u32(header.pn);
    out.put_u32(header.n);
    out.put_u32((plaintext_len + TAG_LEN) as u32);
    let ciphertext = encrypt(&[&session_hash[..], &out].concat())?;
    debug_assert_eq!(ciphertext.len(), plaintext_len + TAG_LEN);
    out.put(&ciphertext);
    let signature = device.sign(&[SIGNATURE_LABEL, &out].concat());
    out.put(&signature);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{NOW, Party};
    use super::*;
    use crate::crypto::v2::{Content, MAX_PADDED, MIN_PADDED, Session};

    /// A kind 1 and a kind 2 envelope from Alice's device 1 to Bob's device 2.
    fn sealed() -> [Vec<u8>; 2] {
        let alice = Party::new("+12025550101", 1);
        let mut bob = Party::new("+12025550102", 2);
        let content = Content::Text("hi".into());
        let mut a = Session::initiate(&alice.device, &bob.verified_bundle(false), NOW);
        let first = a
            .seal(&alice.device, MessageId::random(), &content, NOW)
            .unwrap();
        let (mut b, _) = Session::accept(
            &bob.device,
            &mut bob.store,
            &alice.verified(),
            &Envelope::parse(&first).unwrap(),
            NOW,
        )
        .unwrap();
        let reply = b
            .seal(&bob.device, MessageId::random(), &content, NOW)
            .unwrap();
        a.open(
            &alice.device,
            &bob.verified(),
            &Envelope::parse(&reply).unwrap(),
            NOW,
        )
        .unwrap();
        let second = a
            .seal(&alice.device, MessageId::random(), &content, NOW)
            .unwrap();
        [first, second]
    }

    #[test]
    fn the_clear_header_agrees_with_the_full_parse() {
        for (bytes, kind) in sealed()
            .into_iter()
            .zip([EnvelopeKind::Prekey, EnvelopeKind::Message])
        {
            let full = Envelope::parse(&bytes).unwrap();
            let clear = ClearHeader::read(&bytes).unwrap();
            assert_eq!(clear.kind, kind);
            assert_eq!(full.kind(), kind);
            assert_eq!(clear.id, full.id());
            assert_eq!(clear.sender, full.sender().0.as_str().as_bytes());
            assert_eq!(clear.sender_device, full.sender().1.get());
            assert_eq!(clear.recipient, full.recipient().0.as_str().as_bytes());
            assert_eq!(clear.recipient_device, 2);
        }
    }

    #[test]
    fn the_layout_walk_refuses_what_the_full_parse_refuses() {
        for bytes in sealed() {
            for cut in 0..bytes.len() {
                assert!(ClearHeader::read(&bytes[..cut]).is_err(), "cut at {cut}");
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(ClearHeader::read(&longer).is_err());
            for (at, value) in [(0, 1), (1, 3), (1, 0)] {
                let mut bad = bytes.clone();
                bad[at] = value;
                assert!(ClearHeader::read(&bad).is_err(), "byte {at} = {value}");
                assert!(Envelope::parse(&bad).is_err(), "byte {at} = {value}");
            }
        }
    }

    #[test]
    fn the_ciphertext_length_is_a_padded_size_and_the_tag() {
        for bytes in sealed() {
            let c = MIN_PADDED + TAG_LEN;
            let at = bytes.len() - SIGNATURE_LEN - c - 4;
            assert_eq!(bytes[at..at + 4], (c as u32).to_be_bytes());
            let off_sizes = [
                0,
                TAG_LEN - 1,
                TAG_LEN,
                MIN_PADDED - 1 + TAG_LEN,
                MIN_PADDED + 1 + TAG_LEN,
                272 - 1 + TAG_LEN,
                272 + 1 + TAG_LEN,
                65_536 - 1 + TAG_LEN,
                65_536 + 1 + TAG_LEN,
                MAX_PADDED - 1 + TAG_LEN,
                MAX_PADDED + 1 + TAG_LEN,
                u32::MAX as usize,
            ];
            for len in off_sizes {
                let mut bad = bytes.clone();
                bad[at..at + 4].copy_from_slice(&(len as u32).to_be_bytes());
                assert_eq!(
                    ClearHeader::read(&bad).err(),
                    Some(Error::Malformed("ciphertext length")),
                    "C = {len}"
                );
                assert!(Envelope::parse(&bad).is_err(), "C = {len}");
            }
            // A padded size other than the one the bytes hold.
            for len in [272 + TAG_LEN, MAX_PADDED + TAG_LEN] {
                let mut bad = bytes.clone();
                bad[at..at + 4].copy_from_slice(&(len as u32).to_be_bytes());
                assert!(ClearHeader::read(&bad).is_err(), "C = {len}");
                assert!(Envelope::parse(&bad).is_err(), "C = {len}");
            }
        }
    }
}
