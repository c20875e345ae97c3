//! The envelope's byte layout (`protocol::envelope`): what is encoded parses
//! back field for field, every parsed envelope has exactly one encoding, and
//! no byte string makes the parser panic.

use carrier::domain::MessageId;
use carrier::protocol::envelope::{
    CONTENT_TEXT, EnvelopeView, Header, KEM_P256_HKDF, KEM_RSA_OAEP, MAX_KEY_BLOCK, MAX_SIGNATURE,
    NONCE_LEN, SIG_ECDSA_P256, SIG_RSA_PSS, TAG_LEN, encode_body, encode_header, encode_key_block,
    encode_signature, parse,
};
use proptest::prelude::*;

use super::phone;

fn header() -> impl Strategy<Value = Header> {
    (
        prop::sample::select(&[KEM_P256_HKDF, KEM_RSA_OAEP][..]),
        prop::sample::select(&[SIG_ECDSA_P256, SIG_RSA_PSS][..]),
        any::<[u8; 16]>(),
        any::<u64>(),
        any::<u64>(),
        phone(),
        phone(),
    )
        .prop_map(
            |(kem, sig, id, counter, sent_at, sender, recipient)| Header {
                kem,
                sig,
                content: CONTENT_TEXT,
                id: MessageId::from_bytes(id),
                counter,
                sent_at,
                sender,
                recipient,
            },
        )
}

/// The parts of an envelope, in the parser's limits.
#[derive(Debug, Clone)]
struct Parts {
    header: Header,
    key_block: Vec<u8>,
    nonce: [u8; NONCE_LEN],
    ciphertext: Vec<u8>,
    signature: Vec<u8>,
}

fn parts() -> impl Strategy<Value = Parts> {
    (
        header(),
        prop::collection::vec(any::<u8>(), 0..=MAX_KEY_BLOCK),
        any::<[u8; NONCE_LEN]>(),
        prop::collection::vec(any::<u8>(), TAG_LEN..TAG_LEN + 400),
        prop::collection::vec(any::<u8>(), 0..=MAX_SIGNATURE),
    )
        .prop_map(|(header, key_block, nonce, ciphertext, signature)| Parts {
            header,
            key_block,
            nonce,
            ciphertext,
            signature,
        })
}

fn encode(p: &Parts) -> Vec<u8> {
    let mut out = Vec::new();
    encode_header(&p.header, &mut out);
    encode_key_block(&p.key_block, &mut out);
    encode_body(&p.nonce, &p.ciphertext, &mut out);
    encode_signature(&p.signature, &mut out);
    out
}

/// The encoding of a parsed envelope.
fn reencode(v: &EnvelopeView<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    encode_header(&v.header, &mut out);
    encode_key_block(v.key_block, &mut out);
    encode_body(&v.nonce, v.ciphertext, &mut out);
    encode_signature(v.signature, &mut out);
    out
}

proptest! {
    #[test]
    fn layout_round_trips(p in parts()) {
        let bytes = encode(&p);
        let v = parse(&bytes).unwrap();
        prop_assert_eq!(&v.header, &p.header);
        prop_assert_eq!(v.key_block, &p.key_block[..]);
        prop_assert_eq!(v.nonce, p.nonce);
        prop_assert_eq!(v.ciphertext, &p.ciphertext[..]);
        prop_assert_eq!(v.signature, &p.signature[..]);
        let aad_len = bytes.len() - NONCE_LEN - 4 - p.ciphertext.len() - 2 - p.signature.len();
        prop_assert_eq!(v.aad, &bytes[..aad_len]);
        prop_assert_eq!(v.signed, &bytes[..bytes.len() - 2 - p.signature.len()]);
    }

    #[test]
    fn every_cut_and_every_extension_is_refused(p in parts(), cut in any::<prop::sample::Index>(), extra in 1u8..) {
        let bytes = encode(&p);
        prop_assert!(parse(&bytes[..cut.index(bytes.len())]).is_err());
        let longer = [&bytes[..], &[extra]].concat();
        prop_assert!(parse(&longer).is_err());
    }

    #[test]
    fn parsing_arbitrary_bytes_never_panics_and_is_canonical(bytes in prop::collection::vec(any::<u8>(), 0..1200)) {
        if let Ok(v) = parse(&bytes) {
            prop_assert_eq!(reencode(&v), bytes);
        }
    }

    #[test]
    fn mutating_a_valid_envelope_never_panics_and_stays_canonical(
        p in parts(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let mut bytes = encode(&p);
        for (at, value) in edits {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        if let Ok(v) = parse(&bytes) {
            prop_assert_eq!(reencode(&v), bytes);
        }
    }
}
