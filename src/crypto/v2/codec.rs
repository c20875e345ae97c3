//! Big-endian byte layouts: a writer that appends fields and a strict reader
//! that refuses short input and trailing bytes, so every v2 format has
//! exactly one encoding and a parser that cannot read past its input.

use super::Error;
use crate::domain::{Fingerprint, PhoneNumber};

/// Appends fixed-width big-endian integers and length-prefixed fields.
pub(crate) trait Put {
    fn put_u8(&mut self, v: u8);
    fn put_u16(&mut self, v: u16);
    fn put_u32(&mut self, v: u32);
    fn put_u64(&mut self, v: u64);
    fn put(&mut self, bytes: &[u8]);
    /// `u8` length, then the bytes. Callers keep fields under 256 bytes.
    fn put_short(&mut self, bytes: &[u8]);
    /// `u16` length, then the bytes. Callers keep fields under 65 536 bytes.
    fn put_medium(&mut self, bytes: &[u8]);
    /// A phone number as `u8` length and E.164 ASCII.
    fn put_phone(&mut self, phone: &PhoneNumber) {
        self.put_short(phone.as_str().as_bytes());
    }
}

impl Put for Vec<u8> {
    fn put_u8(&mut self, v: u8) {
        self.push(v);
    }
    fn put_u16(&mut self, v: u16) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn put_u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn put_u64(&mut self, v: u64) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
    fn put_short(&mut self, bytes: &[u8]) {
        let len = u8::try_from(bytes.len()).expect("short fields are checked to fit a u8");
        self.push(len);
        self.extend_from_slice(bytes);
    }
    fn put_medium(&mut self, bytes: &[u8]) {
        let len = u16::try_from(bytes.len()).expect("medium fields are checked to fit a u16");
        self.extend_from_slice(&len.to_be_bytes());
        self.extend_from_slice(bytes);
    }
}

/// Reads a byte string front to back; every read names the field it wanted,
/// so a refusal says where the input went wrong.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    /// How many bytes were read so far (offsets of signed regions).
    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], Error> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or(Error::Malformed(field))?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    pub(crate) fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], Error> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, Error> {
        Ok(self.array::<1>(field)?[0])
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, Error> {
        self.array(field).map(u16::from_be_bytes)
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, Error> {
        self.array(field).map(u32::from_be_bytes)
    }

    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, Error> {
        self.array(field).map(u64::from_be_bytes)
    }

    /// A field with a `u8` length.
    pub(crate) fn short(&mut self, field: &'static str) -> Result<&'a [u8], Error> {
        let len = self.u8(field)?;
        self.take(usize::from(len), field)
    }

    /// A field with a `u16` length of at most `max` bytes.
    pub(crate) fn medium(&mut self, max: usize, field: &'static str) -> Result<&'a [u8], Error> {
        let len = usize::from(self.u16(field)?);
        if len > max {
            return Err(Error::Malformed(field));
        }
        self.take(len, field)
    }

    /// A phone number in canonical E.164 form with a `u8` length.
    pub(crate) fn phone(&mut self, field: &'static str) -> Result<PhoneNumber, Error> {
        let raw = self.short(field)?;
        std::str::from_utf8(raw)
            .ok()
            .and_then(|s| PhoneNumber::from_canonical(s).ok())
            .ok_or(Error::Malformed(field))
    }

    /// A 32-byte key fingerprint. (`domain::Fingerprint` has no constructor
    /// from raw bytes yet, so this goes through its hex form.)
    pub(crate) fn fingerprint(&mut self, field: &'static str) -> Result<Fingerprint, Error> {
        Fingerprint::parse(&hex::encode(self.take(32, field)?)).ok_or(Error::Malformed(field))
    }

    /// Everything not read yet.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let out = &self.bytes[self.pos..];
        self.pos = self.bytes.len();
        out
    }

    /// Refuses trailing bytes: one value has one encoding.
    pub(crate) fn finish(self, what: &'static str) -> Result<(), Error> {
        if self.pos == self.bytes.len() {
            Ok(())
        } else {
            Err(Error::Malformed(what))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_strictness() {
        let phone = PhoneNumber::from_canonical("+12025550101").unwrap();
        let mut out = Vec::new();
        out.put_u8(1);
        out.put_u16(0x0203);
        out.put_u32(0x0405_0607);
        out.put_u64(8);
        out.put_phone(&phone);
        out.put_medium(b"abc");
        let mut r = Reader::new(&out);
        assert_eq!(r.u8("a").unwrap(), 1);
        assert_eq!(r.u16("b").unwrap(), 0x0203);
        assert_eq!(r.u32("c").unwrap(), 0x0405_0607);
        assert_eq!(r.u64("d").unwrap(), 8);
        assert_eq!(r.phone("e").unwrap(), phone);
        assert!(Reader::new(&out[r.position()..]).medium(2, "f").is_err());
        assert_eq!(r.medium(3, "f").unwrap(), b"abc");
        r.finish("end").unwrap();

        let mut short = Reader::new(&[0, 5, 1]);
        assert!(matches!(short.medium(9, "x"), Err(Error::Malformed("x"))));
        let mut trailing = Reader::new(&[1, 2]);
        trailing.u8("x").unwrap();
        assert!(trailing.finish("t").is_err());
        assert!(Reader::new(&[3, b'+', b'0', b'1']).phone("p").is_err());
    }
}
