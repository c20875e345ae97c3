//! The bytes a client signs to register or log in.
//!
//! Binding the TLS exporter ties the proof to this one TLS connection (no
//! relaying to another server), the server's nonce makes it fresh, and the
//! purpose, phone number and key stop a signature made for one step or
//! account from being accepted for another.

use super::Identity;
use crate::domain::PhoneNumber;

/// Why a transcript is signed; part of the signed bytes so a registration
/// proof can never serve as a login proof or the reverse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Proving possession of a key being registered.
    Register,
    /// Proving possession of the registered key.
    Login,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Purpose::Register => b"register",
            Purpose::Login => b"login",
        }
    }
}

/// Builds the transcript: `"carrier-v1 " ‖ purpose ‖ 0x00 ‖ exporter[32] ‖
/// nonce[32] ‖ u8 phone_len ‖ phone ‖ u16 spki_len ‖ spki_der` (big-endian).
/// The client signs it with `Identity::sign`; the server checks it with
/// `PublicKey::verify`.
///
/// # Panics
/// If `spki_der` is longer than 65535 bytes. Pass the DER of a parsed
/// [`PublicKey`](super::PublicKey) (at most ~550 bytes), never raw input.
pub fn auth_transcript(
    purpose: Purpose,
    exporter: &[u8; 32],
    nonce: &[u8; 32],
    phone: &PhoneNumber,
    spki_der: &[u8],
) -> Vec<u8> {
    let spki_len = u16::try_from(spki_der.len()).expect("a parsed public key fits a u16 length");
    let phone = phone.as_str().as_bytes();
    let phone_len = u8::try_from(phone.len()).expect("E.164 numbers are at most 16 bytes");
    let mut out = Vec::with_capacity(96 + phone.len() + spki_der.len());
    out.extend_from_slice(b"carrier-v1 ");
    out.extend_from_slice(purpose.label());
    out.push(0);
    out.extend_from_slice(exporter);
    out.extend_from_slice(nonce);
    out.push(phone_len);
    out.extend_from_slice(phone);
    out.extend_from_slice(&spki_len.to_be_bytes());
    out.extend_from_slice(spki_der);
    out
}

/// Signs the proof that registers or logs in `phone` with `identity` on one
/// connection: the transcript of this purpose, the connection's TLS
/// `exporter` value and the server's `nonce`. Every client (the `carrier`
/// library, the benchmark, the tests) signs through here; the server checks
/// the result with `auth::proof::verify`.
pub fn sign_proof(
    identity: &Identity,
    purpose: Purpose,
    exporter: &[u8; 32],
    nonce: &[u8; 32],
    phone: &PhoneNumber,
) -> Vec<u8> {
    let spki = identity.public_key().to_spki_der();
    identity.sign(&auth_transcript(purpose, exporter, nonce, phone, &spki))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::KeyType;

    #[test]
    fn layout() {
        let phone = PhoneNumber::from_canonical("+12025550101").unwrap();
        let t = auth_transcript(Purpose::Login, &[1; 32], &[2; 32], &phone, b"SPKI");
        let mut expected = b"carrier-v1 login\0".to_vec();
        expected.extend_from_slice(&[1; 32]);
        expected.extend_from_slice(&[2; 32]);
        expected.push(12);
        expected.extend_from_slice(b"+12025550101");
        expected.extend_from_slice(&[0, 4]);
        expected.extend_from_slice(b"SPKI");
        assert_eq!(t, expected);

        let r = auth_transcript(Purpose::Register, &[1; 32], &[2; 32], &phone, b"SPKI");
        assert!(r.starts_with(b"carrier-v1 register\0"));
    }

    #[test]
    fn signature_binds_every_field() {
        let id = Identity::generate(KeyType::P256);
        let spki = id.public_key().to_spki_der();
        let phone = PhoneNumber::from_canonical("+12025550101").unwrap();
        let other = PhoneNumber::from_canonical("+12025550102").unwrap();
        let t =
            |p, e: u8, n: u8, ph: &PhoneNumber| auth_transcript(p, &[e; 32], &[n; 32], ph, &spki);
        let sig = id.sign(&t(Purpose::Login, 1, 2, &phone));
        id.public_key()
            .verify(&t(Purpose::Login, 1, 2, &phone), &sig)
            .unwrap();
        for changed in [
            t(Purpose::Register, 1, 2, &phone),
            t(Purpose::Login, 9, 2, &phone),
            t(Purpose::Login, 1, 9, &phone),
            t(Purpose::Login, 1, 2, &other),
        ] {
            assert!(id.public_key().verify(&changed, &sig).is_err());
        }
    }

    #[test]
    fn a_signed_proof_is_a_signature_over_the_transcript() {
        let id = Identity::generate(KeyType::P256);
        let key = id.public_key();
        let phone = PhoneNumber::from_canonical("+12025550101").unwrap();
        let proof = sign_proof(&id, Purpose::Register, &[3; 32], &[4; 32], &phone);
        let t = |p| auth_transcript(p, &[3; 32], &[4; 32], &phone, &key.to_spki_der());
        key.verify(&t(Purpose::Register), &proof).unwrap();
        assert!(key.verify(&t(Purpose::Login), &proof).is_err());
    }
}
