//! Bytes in JSON: standard base64 with padding, as every byte string on
//! the wire is carried.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

/// Bytes carried in JSON as standard base64 with padding (RFC 4648 §4).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct B64(pub Vec<u8>);

impl std::fmt::Debug for B64 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "B64({} bytes)", self.0.len())
    }
}

impl Serialize for B64 {
    /// Encodes straight into the serializer's output: no intermediate
    /// string per envelope a `fetch` answer carries.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&base64::display::Base64Display::new(&self.0, &STANDARD))
    }
}

impl<'de> Deserialize<'de> for B64 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(B64Visitor)
    }
}

/// Decodes the string where the deserializer holds it, borrowed or not,
/// rather than copying it into a `String` first.
struct B64Visitor;

impl serde::de::Visitor<'_> for B64Visitor {
    type Value = B64;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("standard base64")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<B64, E> {
        STANDARD
            .decode(v.as_bytes())
            .map(B64)
            .map_err(|_| E::custom("expected standard base64"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_json_and_refuses_bad_text() {
        let bytes = B64((0..=255).collect());
        let json = serde_json::to_string(&bytes).unwrap();
        assert_eq!(json, format!("\"{}\"", STANDARD.encode(&bytes.0)));
        assert_eq!(serde_json::from_str::<B64>(&json).unwrap(), bytes);
        // Escaped text (not borrowable) decodes too.
        assert_eq!(
            serde_json::from_str::<B64>("\"AAE\\u003d\"").unwrap(),
            B64(vec![0, 1])
        );
        for bad in ["\"AAE\"", "\"AA=E\"", "\"!!!!\"", "17"] {
            assert!(serde_json::from_str::<B64>(bad).is_err(), "{bad}");
        }
    }
}
