use std::fmt;

use sha2::{Digest, Sha256};

/// The identity of a public key: SHA-256 of its SubjectPublicKeyInfo DER,
/// shown as 64 lowercase hex characters. Users compare these out of band;
/// servers and contacts are pinned by them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of a key given as SPKI DER.
    pub fn of_spki(spki_der: &[u8]) -> Self {
        Self(Sha256::digest(spki_der).into())
    }

    /// Parses the hex form; accepts upper case and ':' or ' ' separators so a
    /// fingerprint copied from a console works as typed.
    pub fn parse(s: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        // Plain hex, as every relayed path carries it, needs no copy.
        if s.len() == 64 && hex::decode_to_slice(s, &mut out).is_ok() {
            return Some(Self(out));
        }
        let cleaned: String = s.chars().filter(|c| !matches!(c, ':' | ' ')).collect();
        if cleaned.len() != 64 {
            return None;
        }
        hex::decode_to_slice(cleaned, &mut out).ok()?;
        Some(Self(out))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_separators() {
        let fp = Fingerprint::of_spki(b"key");
        let hex = fp.to_hex().to_uppercase();
        let spaced: Vec<String> = hex
            .as_bytes()
            .chunks(4)
            .map(|c| String::from_utf8_lossy(c).into())
            .collect();
        assert_eq!(Fingerprint::parse(&spaced.join(" ")), Some(fp));
        assert_eq!(Fingerprint::parse(&fp.to_hex()[1..]), None);
    }
}
