//! The login binding over WebSocket. On the TCP port a login proof is bound
//! to the TLS exporter; a browser cannot read one, so `/ws` opens with a
//! `hello` frame carrying a fresh challenge and a connection id, and the
//! 32 bytes proofs bind to on that connection are a hash of those and the
//! server's key fingerprint (docs/PROTOCOL.md, "The WebSocket transport").

use sha2::{Digest, Sha256};

use crate::domain::Fingerprint;

/// Domain separation of the binding hash.
pub const BINDING_LABEL: &[u8] = b"carrier-ws binding\0";
/// Length of the hello's challenge.
pub const CHALLENGE_LEN: usize = 32;
/// Length of the per-connection id.
pub const CONNECTION_ID_LEN: usize = 16;

/// What one WebSocket connection's proofs are bound to.
pub struct Hello {
    challenge: [u8; CHALLENGE_LEN],
    connection: [u8; CONNECTION_ID_LEN],
    fingerprint: Fingerprint,
}

impl Hello {
    /// A hello with a fresh challenge and connection id from the operating
    /// system's generator.
    pub fn fresh(fingerprint: Fingerprint) -> Self {
        use rand::TryRng;
        let mut challenge = [0u8; CHALLENGE_LEN];
        let mut connection = [0u8; CONNECTION_ID_LEN];
        let mut rng = rand::rngs::SysRng;
        rng.try_fill_bytes(&mut challenge)
            .and_then(|()| rng.try_fill_bytes(&mut connection))
            .expect("the operating system's random generator failed");
        Self {
            challenge,
            connection,
            fingerprint,
        }
    }

    /// The value that takes the TLS exporter's place in this connection's
    /// login, registration and device-login transcripts.
    pub fn binding(&self) -> [u8; 32] {
        binding(
            &self.challenge,
            self.fingerprint.as_bytes(),
            &self.connection,
        )
    }

    /// The first frame the server sends on `/ws` (pushed, without `re`).
    pub fn frame(&self) -> String {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        serde_json::json!({
            "type": "hello",
            "version": crate::protocol::HELLO_VERSION,
            "challenge": b64.encode(self.challenge),
            "connection": b64.encode(self.connection),
            "fingerprint": self.fingerprint.to_hex(),
        })
        .to_string()
    }
}

/// SHA-256(label ‖ challenge ‖ fingerprint ‖ connection id).
pub fn binding(
    challenge: &[u8; CHALLENGE_LEN],
    fingerprint: &[u8; 32],
    connection: &[u8; CONNECTION_ID_LEN],
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(BINDING_LABEL);
    h.update(challenge);
    h.update(fingerprint);
    h.update(connection);
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vector of docs/PROTOCOL.md (the WebSocket transport): the
    /// document and the code cannot drift apart.
    #[test]
    fn the_documented_vector() {
        let doc = include_str!("../../docs/PROTOCOL.md");
        let section = doc
            .split("<!-- ws-binding-vector -->")
            .nth(1)
            .expect("docs/PROTOCOL.md carries the WebSocket binding vector");
        let value = |name: &str| -> Vec<u8> {
            let line = section
                .lines()
                .find(|l| l.trim_start().starts_with(&format!("{name}:")))
                .unwrap_or_else(|| panic!("the vector names {name}"));
            hex::decode(line.split(':').nth(1).unwrap().trim()).unwrap()
        };
        let binding = binding(
            &value("challenge").try_into().unwrap(),
            &value("fingerprint").try_into().unwrap(),
            &value("connection").try_into().unwrap(),
        );
        assert_eq!(binding.to_vec(), value("binding"));
        assert_eq!(
            hex::encode(binding),
            "68766cd8950ad03d89a89ca87f4dc92ad9a718b4fb71e479f71e31bea4d197ef",
            "the value an independent SHA-256 gave"
        );
    }

    #[test]
    fn every_input_changes_the_binding() {
        let base = binding(&[1; 32], &[2; 32], &[3; 16]);
        assert_ne!(base, binding(&[9; 32], &[2; 32], &[3; 16]));
        assert_ne!(base, binding(&[1; 32], &[9; 32], &[3; 16]));
        assert_ne!(base, binding(&[1; 32], &[2; 32], &[9; 16]));
    }
}
