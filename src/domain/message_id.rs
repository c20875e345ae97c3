use std::fmt;

/// A 128-bit message id chosen at random by the sending client. Random ids
/// are unique across every server of a neighbourhood without coordination,
/// so they also serve to drop duplicates at each hop.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId([u8; 16]);

impl MessageId {
    /// A fresh id: the current time in milliseconds (6 bytes, big-endian)
    /// followed by 10 bytes from the operating system's generator. Ids made
    /// later sort later, so servers append to their id indexes instead of
    /// writing at random places; 80 random bits keep them unique.
    pub fn random() -> Self {
        let mut bytes = [0u8; 16];
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        bytes[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
        getrandom_fill(&mut bytes[6..]);
        Self(bytes)
    }

    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// Reads an id from its slice form (database rows, envelope headers).
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }

    /// Parses the 32-character lowercase or uppercase hex form used in JSON.
    pub fn parse_hex(s: &str) -> Option<Self> {
        if s.len() != 32 {
            return None;
        }
        let mut out = [0u8; 16];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Self(out))
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

fn getrandom_fill(buf: &mut [u8]) {
    use rand::TryRng;
    rand::rngs::SysRng
        .try_fill_bytes(buf)
        .expect("the operating system's random generator failed");
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({})", self.to_hex())
    }
}

impl serde::Serialize for MessageId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for MessageId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse_hex(&s)
            .ok_or_else(|| serde::de::Error::custom("a message id is 32 hexadecimal characters"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let id = MessageId::random();
        assert_eq!(MessageId::parse_hex(&id.to_hex()), Some(id));
        assert_ne!(MessageId::random(), id);
    }

    #[test]
    fn refuses_bad_hex() {
        for bad in ["", "00", &"g".repeat(32), &"0".repeat(34)] {
            assert!(MessageId::parse_hex(bad).is_none(), "{bad}");
        }
    }
}
