//! Sealing and opening envelopes (layout in `protocol::envelope`).
//!
//! Seal: wrap a fresh AES-256 key for the recipient (P-256: ephemeral ECDH +
//! HKDF-SHA256; RSA: OAEP-SHA256), encrypt the text with AES-256-GCM binding
//! the header and key block as associated data, then sign everything up to
//! the ciphertext with the sender's identity key. Open does the reverse,
//! verifying the signature before any decryption. Replays are the caller's
//! concern (message id and counter). Every primitive step goes through
//! `primitives`, which the Wycheproof vectors exercise; the message key and
//! its key block are [`key_block`]'s.

use p256::elliptic_curve::Generate;
use rand::Rng;
use rand::rand_core::UnwrapErr;
use rand::rngs::SysRng;
use zeroize::Zeroizing;

mod key_block;

use key_block::{unwrap_key, wrap_key};

use super::primitives::{AES_KEY_LEN, aes_gcm_open, aes_gcm_seal};
use super::{CryptoError, Identity, PublicKey};
use crate::domain::{MessageId, PhoneNumber};
use crate::protocol::KeyType;
use crate::protocol::MAX_TEXT_BYTES;
use crate::protocol::envelope::{
    CONTENT_TEXT, Header, KEM_P256_HKDF, KEM_RSA_OAEP, NONCE_LEN, SIG_ECDSA_P256, SIG_RSA_PSS,
    encode_body, encode_header, encode_key_block, encode_signature, parse,
};

/// A message to seal: the header fields the sender chooses, and the text.
/// Grouped so callers name each field rather than order eight arguments.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    /// Random id, used for de-duplication at every hop.
    pub id: MessageId,
    /// Per sender→recipient counter, strictly increasing; lets the recipient drop replays.
    pub counter: u64,
    /// Sender's clock, milliseconds since the Unix epoch.
    pub sent_at_ms: u64,
    /// Our own number, as registered.
    pub sender_phone: &'a PhoneNumber,
    /// Who the server should deliver to; also authenticated so it cannot be redirected.
    pub recipient_phone: &'a PhoneNumber,
    /// At most `MAX_TEXT_BYTES` bytes of UTF-8.
    pub text: &'a str,
}

/// An opened envelope: the authenticated header (for replay checks and
/// display) and the text.
#[derive(Debug)]
pub struct Opened {
    /// Signed by the sender; safe to trust once `open` returned it.
    pub header: Header,
    /// The decrypted message.
    pub text: String,
}

/// The random values a seal consumes, separated out so test vectors can fix
/// them. Only one of `ephemeral` / `aes_key` is used, by recipient key type.
pub(crate) struct SealRandomness {
    /// Ephemeral ECDH secret for a P-256 recipient.
    pub(crate) ephemeral: p256::SecretKey,
    /// Message key for an RSA recipient (P-256 derives its key instead).
    pub(crate) aes_key: Zeroizing<[u8; AES_KEY_LEN]>,
    /// AES-GCM nonce; unique because each key is used once.
    pub(crate) nonce: [u8; NONCE_LEN],
}

impl SealRandomness {
    fn fresh() -> Self {
        let mut rng = UnwrapErr(SysRng);
        let mut aes_key = Zeroizing::new([0u8; AES_KEY_LEN]);
        rng.fill_bytes(aes_key.as_mut());
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        let ephemeral = p256::SecretKey::generate_from_rng(&mut rng);
        Self {
            ephemeral,
            aes_key,
            nonce,
        }
    }
}

/// Encrypts `msg` so only the holder of `recipient_key` can read it, signed
/// so the recipient knows it came from `sender` unaltered.
pub fn seal(
    sender: &Identity,
    recipient_key: &PublicKey,
    msg: &Outgoing<'_>,
) -> Result<Vec<u8>, CryptoError> {
    seal_with(sender, recipient_key, msg, &SealRandomness::fresh())
}

/// [`seal`] with its randomness supplied, for reproducible test vectors.
pub(crate) fn seal_with(
    sender: &Identity,
    recipient_key: &PublicKey,
    msg: &Outgoing<'_>,
    rnd: &SealRandomness,
) -> Result<Vec<u8>, CryptoError> {
    if msg.text.len() > MAX_TEXT_BYTES {
        return Err(CryptoError::TextTooLong);
    }
    let mut out = Vec::new();
    encode_header(&header_for(sender, recipient_key, msg), &mut out);
    let (key_block, aes_key) = wrap_key(recipient_key, rnd)?;
    encode_key_block(&key_block, &mut out);
    let ciphertext = aes_gcm_seal(&aes_key, &rnd.nonce, msg.text.as_bytes(), &out)?;
    encode_body(&rnd.nonce, &ciphertext, &mut out);
    let signature = sender.sign(&out);
    encode_signature(&signature, &mut out);
    Ok(out)
}

/// Checks and decrypts an envelope addressed to `recipient_phone`, sent by
/// the holder of `sender_key`. The caller must have looked `sender_key` up
/// by `header.sender` (and compare the two if it got the key elsewhere).
pub fn open(
    recipient: &Identity,
    recipient_phone: &PhoneNumber,
    sender_key: &PublicKey,
    bytes: &[u8],
) -> Result<Opened, CryptoError> {
    let view = parse(bytes)?;
    if &view.header.recipient != recipient_phone {
        return Err(CryptoError::WrongRecipient);
    }
    let expected = (
        kem_for(recipient.key_type()),
        sig_for(sender_key.key_type()),
    );
    if (view.header.kem, view.header.sig) != expected {
        return Err(CryptoError::KeyMismatch);
    }
    sender_key.verify(view.signed, view.signature)?;
    let aes_key = unwrap_key(recipient, &view)?;
    let plaintext = aes_gcm_open(&aes_key, &view.nonce, view.ciphertext, view.aad)?;
    let text = std::str::from_utf8(&plaintext).map_err(|_| CryptoError::NotUtf8)?;
    Ok(Opened {
        text: text.to_owned(),
        header: view.header,
    })
}

fn kem_for(recipient: KeyType) -> u8 {
    match recipient {
        KeyType::P256 => KEM_P256_HKDF,
        KeyType::Rsa => KEM_RSA_OAEP,
    }
}

fn sig_for(sender: KeyType) -> u8 {
    match sender {
        KeyType::P256 => SIG_ECDSA_P256,
        KeyType::Rsa => SIG_RSA_PSS,
    }
}

fn header_for(sender: &Identity, recipient_key: &PublicKey, msg: &Outgoing<'_>) -> Header {
    Header {
        kem: kem_for(recipient_key.key_type()),
        sig: sig_for(sender.key_type()),
        content: CONTENT_TEXT,
        id: msg.id,
        counter: msg.counter,
        sent_at: msg.sent_at_ms,
        sender: msg.sender_phone.clone(),
        recipient: msg.recipient_phone.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::primitives::uncompressed;
    use crate::crypto::test_keys::{rsa_2048, rsa_3072};

    fn phone(s: &str) -> PhoneNumber {
        PhoneNumber::from_canonical(s).unwrap()
    }

    struct Case {
        alice: PhoneNumber,
        bob: PhoneNumber,
    }

    impl Case {
        fn new() -> Self {
            Self {
                alice: phone("+12025550101"),
                bob: phone("+12025550102"),
            }
        }
        fn msg<'a>(&'a self, text: &'a str) -> Outgoing<'a> {
            Outgoing {
                id: MessageId::random(),
                counter: 7,
                sent_at_ms: 1_700_000_000_000,
                sender_phone: &self.alice,
                recipient_phone: &self.bob,
                text,
            }
        }
    }

    fn round_trip(sender: &Identity, recipient: &Identity) -> Vec<u8> {
        let c = Case::new();
        let msg = c.msg("héllo, wörld ✉");
        let bytes = seal(sender, &recipient.public_key(), &msg).unwrap();
        let opened = open(recipient, &c.bob, &sender.public_key(), &bytes).unwrap();
        assert_eq!(opened.text, msg.text);
        assert_eq!(opened.header.id, msg.id);
        assert_eq!(opened.header.counter, 7);
        assert_eq!(opened.header.sent_at, 1_700_000_000_000);
        assert_eq!(opened.header.sender, c.alice);
        assert_eq!(opened.header.kem, kem_for(recipient.key_type()));
        assert_eq!(opened.header.sig, sig_for(sender.key_type()));
        bytes
    }

    /// Flips one bit at each position in `positions` and expects `open` to fail.
    fn assert_tamper_fails(
        sender: &Identity,
        recipient: &Identity,
        bytes: &[u8],
        positions: impl Iterator<Item = usize>,
    ) {
        let bob = phone("+12025550102");
        let key = sender.public_key();
        for i in positions {
            let mut t = bytes.to_vec();
            t[i] ^= 0x01;
            assert!(
                open(recipient, &bob, &key, &t).is_err(),
                "flip at {i} accepted"
            );
        }
    }

    #[test]
    fn p256_to_p256() {
        let (a, b) = (
            Identity::generate(KeyType::P256),
            Identity::generate(KeyType::P256),
        );
        let bytes = round_trip(&a, &b);
        assert_tamper_fails(&a, &b, &bytes, 0..bytes.len());
    }

    #[test]
    fn p256_to_rsa() {
        let a = Identity::generate(KeyType::P256);
        let bytes = round_trip(&a, rsa_3072());
        assert_tamper_fails(&a, rsa_3072(), &bytes, (0..bytes.len()).step_by(7));
    }

    #[test]
    fn rsa_to_p256() {
        let b = Identity::generate(KeyType::P256);
        let bytes = round_trip(rsa_2048(), &b);
        assert_tamper_fails(rsa_2048(), &b, &bytes, (0..bytes.len()).step_by(5));
    }

    #[test]
    fn rsa_to_rsa() {
        let bytes = round_trip(rsa_2048(), rsa_3072());
        assert_tamper_fails(rsa_2048(), rsa_3072(), &bytes, (0..bytes.len()).step_by(11));
    }

    #[test]
    fn truncation_and_extension_fail() {
        let (a, b) = (
            Identity::generate(KeyType::P256),
            Identity::generate(KeyType::P256),
        );
        let bytes = round_trip(&a, &b);
        let bob = phone("+12025550102");
        for cut in [0, 1, bytes.len() / 2, bytes.len() - 1] {
            assert!(open(&b, &bob, &a.public_key(), &bytes[..cut]).is_err());
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(open(&b, &bob, &a.public_key(), &longer).is_err());
    }

    #[test]
    fn wrong_recipient_and_wrong_keys_fail() {
        let c = Case::new();
        let (a, b) = (
            Identity::generate(KeyType::P256),
            Identity::generate(KeyType::P256),
        );
        let eve = Identity::generate(KeyType::P256);
        let bytes = seal(&a, &b.public_key(), &c.msg("secret")).unwrap();

        let err = open(&b, &c.alice, &a.public_key(), &bytes).unwrap_err();
        assert!(matches!(err, CryptoError::WrongRecipient));
        let err = open(&eve, &c.bob, &a.public_key(), &bytes).unwrap_err();
        assert!(matches!(err, CryptoError::Decrypt));
        let err = open(&b, &c.bob, &eve.public_key(), &bytes).unwrap_err();
        assert!(matches!(err, CryptoError::BadSignature));
        let err = open(&b, &c.bob, &rsa_2048().public_key(), &bytes).unwrap_err();
        assert!(matches!(err, CryptoError::KeyMismatch));
        let err = open(rsa_3072(), &c.bob, &a.public_key(), &bytes).unwrap_err();
        assert!(matches!(err, CryptoError::KeyMismatch));
    }

    #[test]
    fn signature_is_checked_before_decryption() {
        let c = Case::new();
        let (a, b) = (
            Identity::generate(KeyType::P256),
            Identity::generate(KeyType::P256),
        );
        let mut bytes = seal(&a, &b.public_key(), &c.msg("secret")).unwrap();
        let ct_byte = bytes.len() - 2 - 64 - 1;
        bytes[ct_byte] ^= 0x80;
        let err = open(&b, &c.bob, &a.public_key(), &bytes).unwrap_err();
        assert!(matches!(err, CryptoError::BadSignature));
    }

    #[test]
    fn text_length_limit() {
        let c = Case::new();
        let (a, b) = (
            Identity::generate(KeyType::P256),
            Identity::generate(KeyType::P256),
        );
        let max = "x".repeat(MAX_TEXT_BYTES);
        let bytes = seal(&a, &b.public_key(), &c.msg(&max)).unwrap();
        assert_eq!(
            open(&b, &c.bob, &a.public_key(), &bytes)
                .unwrap()
                .text
                .len(),
            MAX_TEXT_BYTES
        );
        let over = "x".repeat(MAX_TEXT_BYTES + 1);
        let err = seal(&a, &b.public_key(), &c.msg(&over)).unwrap_err();
        assert!(matches!(err, CryptoError::TextTooLong));
        let empty = seal(&a, &b.public_key(), &c.msg("")).unwrap();
        assert_eq!(open(&b, &c.bob, &a.public_key(), &empty).unwrap().text, "");
    }

    /// An envelope from `a` to `b` built by hand, validly signed by `a`, with
    /// the given key block and ciphertext, so the checks after the signature
    /// can be reached with hostile values.
    fn signed_by_hand(a: &Identity, b: &Identity, key_block: &[u8], ciphertext: &[u8]) -> Vec<u8> {
        let c = Case::new();
        let mut out = Vec::new();
        encode_header(&header_for(a, &b.public_key(), &c.msg("")), &mut out);
        encode_key_block(key_block, &mut out);
        encode_body(&[0; NONCE_LEN], ciphertext, &mut out);
        let sig = a.sign(&out);
        encode_signature(&sig, &mut out);
        out
    }

    #[test]
    fn invalid_utf8_is_refused_after_authentication() {
        let c = Case::new();
        let (a, b) = (
            Identity::generate(KeyType::P256),
            Identity::generate(KeyType::P256),
        );
        let msg = c.msg("");
        let rnd = SealRandomness::fresh();
        let mut out = Vec::new();
        encode_header(&header_for(&a, &b.public_key(), &msg), &mut out);
        let (key_block, key) = wrap_key(&b.public_key(), &rnd).unwrap();
        encode_key_block(&key_block, &mut out);
        let ct = aes_gcm_seal(&key, &rnd.nonce, &[0xff, 0xfe], &out).unwrap();
        encode_body(&rnd.nonce, &ct, &mut out);
        let sig = a.sign(&out);
        encode_signature(&sig, &mut out);
        let err = open(&b, &c.bob, &a.public_key(), &out).unwrap_err();
        assert!(matches!(err, CryptoError::NotUtf8));
    }

    #[test]
    fn hostile_ephemeral_points_are_refused_after_a_valid_signature() {
        let (a, b) = (
            Identity::generate(KeyType::P256),
            Identity::generate(KeyType::P256),
        );
        let bob = phone("+12025550102");
        let good =
            uncompressed(&p256::SecretKey::generate_from_rng(&mut UnwrapErr(SysRng)).public_key());
        let mut off_curve = good.clone();
        off_curve[40] ^= 0x10;
        let mut compressed = vec![2 + (good[64] & 1)];
        compressed.extend_from_slice(&good[1..33]);
        let zero_point = [&[4u8][..], &[0u8; 64]].concat();
        let mut hybrid = good.clone();
        hybrid[0] = 6 + (good[64] & 1);
        let cases: [(&str, &[u8]); 7] = [
            ("identity (SEC1 0x00)", &[0]),
            ("identity padded to 65 bytes", &[0u8; 65]),
            ("(0, 0)", &zero_point),
            ("off the curve", &off_curve),
            ("compressed", &compressed),
            ("hybrid encoding", &hybrid),
            ("empty", &[]),
        ];
        for (what, key_block) in cases {
            let bytes = signed_by_hand(&a, &b, key_block, &[0u8; 32]);
            let err = open(&b, &bob, &a.public_key(), &bytes).unwrap_err();
            assert!(matches!(err, CryptoError::Decrypt), "{what}: {err}");
        }
        let bytes = signed_by_hand(&a, &b, &good, &[0u8; 32]);
        let err = open(&b, &bob, &a.public_key(), &bytes).unwrap_err();
        assert!(matches!(err, CryptoError::Decrypt), "wrong key: {err}");
    }

    #[test]
    fn malformed_and_high_s_signatures_are_refused() {
        let c = Case::new();
        let (a, b) = (
            Identity::generate(KeyType::P256),
            Identity::generate(KeyType::P256),
        );
        let bytes = seal(&a, &b.public_key(), &c.msg("hi")).unwrap();
        let view = parse(&bytes).unwrap();
        let sig = view.signature.to_vec();
        let signed = view.signed.to_vec();
        let twin = {
            let parsed = p256::ecdsa::Signature::from_slice(&sig).unwrap();
            let (r, s) = parsed.split_scalars();
            p256::ecdsa::Signature::from_scalars(r.to_bytes(), (-*s).to_bytes())
                .unwrap()
                .to_vec()
        };
        let cases: [(&str, Vec<u8>); 6] = [
            ("(r, n - s)", twin),
            ("r = 0", [&[0u8; 32][..], &sig[32..]].concat()),
            ("s = 0", [&sig[..32], &[0u8; 32][..]].concat()),
            ("65 bytes", [&sig[..], &[0]].concat()),
            ("63 bytes", sig[..63].to_vec()),
            ("512 bytes", [&sig[..], &[0u8; 448][..]].concat()),
        ];
        for (what, bad) in cases {
            let mut out = signed.clone();
            encode_signature(&bad, &mut out);
            let err = open(&b, &c.bob, &a.public_key(), &out).unwrap_err();
            assert!(matches!(err, CryptoError::BadSignature), "{what}: {err}");
        }
        let mut oversized = signed.clone();
        encode_signature(&[1u8; 513], &mut oversized);
        let err = open(&b, &c.bob, &a.public_key(), &oversized).unwrap_err();
        assert!(matches!(err, CryptoError::Envelope(_)), "513 bytes: {err}");
    }

    #[test]
    fn every_seal_is_fresh() {
        let c = Case::new();
        let (a, b) = (
            Identity::generate(KeyType::P256),
            Identity::generate(KeyType::P256),
        );
        let msg = c.msg("same");
        let one = seal(&a, &b.public_key(), &msg).unwrap();
        let two = seal(&a, &b.public_key(), &msg).unwrap();
        let (v1, v2) = (parse(&one).unwrap(), parse(&two).unwrap());
        assert_ne!(v1.key_block, v2.key_block);
        assert_ne!(v1.nonce, v2.nonce);
    }
}
