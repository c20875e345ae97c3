//! Signed statements: the directory entry and broadcast layouts decode back
//! to what was put in (so two different statements never share bytes), and
//! every place Carrier checks a P-256 signature accepts the signer's own
//! signature and refuses its high-S twin, zero values and misfit lengths.

use std::sync::OnceLock;

use carrier::auth::proof;
use carrier::crypto::{Identity, PublicKey, Purpose, sign_proof};
use carrier::domain::{Fingerprint, MessageId, PhoneNumber};
use carrier::protocol::link::DirectoryEntry;
use carrier::protocol::signed::{broadcast_bytes, directory_entry_bytes};
use carrier::protocol::{B64, KeyType};
use carrier::routing::directory::{parse_entry, verify_signature};
use p256::ecdsa::Signature;
use proptest::prelude::*;

use super::phone;

/// A reader for the test's own decoding of statement layouts.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }
    fn short(&mut self) -> &'a [u8] {
        let n = self.take(1)[0] as usize;
        self.take(n)
    }
    fn medium(&mut self) -> &'a [u8] {
        let n = u16::from_be_bytes(self.take(2).try_into().unwrap()) as usize;
        self.take(n)
    }
}

fn identity(cell: &'static OnceLock<Identity>) -> &'static Identity {
    cell.get_or_init(|| Identity::generate(KeyType::P256))
}

fn home() -> &'static Identity {
    static KEY: OnceLock<Identity> = OnceLock::new();
    identity(&KEY)
}

fn user() -> &'static Identity {
    static KEY: OnceLock<Identity> = OnceLock::new();
    identity(&KEY)
}

/// A valid signature's malformed relatives, each of which must be refused.
fn malformed(sig: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let parsed = Signature::from_slice(sig).unwrap();
    let (r, s) = parsed.split_scalars();
    let twin = Signature::from_scalars(r.to_bytes(), (-*s).to_bytes()).unwrap();
    vec![
        ("(r, n - s)", twin.to_vec()),
        ("r = 0", [&[0u8; 32][..], &sig[32..]].concat()),
        ("s = 0", [&sig[..32], &[0u8; 32][..]].concat()),
        ("s = n", [&sig[..32], &ORDER[..]].concat()),
        ("empty", Vec::new()),
        ("63 bytes", sig[..63].to_vec()),
        ("65 bytes", [sig, &[0]].concat()),
        ("512 bytes", [sig, &[0u8; 448]].concat()),
    ]
}

/// The order n of P-256.
const ORDER: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

fn is_low_s(sig: &[u8]) -> bool {
    let parsed = Signature::from_slice(sig).unwrap();
    parsed.normalize_s() == parsed
}

fn home_name() -> impl Strategy<Value = String> {
    "[a-z0-9.:é-]{0,80}".prop_filter("at most 255 bytes", |s| s.len() <= 255)
}

/// A directory entry signed by `home()` for `user()`.
fn signed_entry(phone: &PhoneNumber, registered_at: i64, name: &str, hops: u32) -> DirectoryEntry {
    let user_key = user().public_key().to_spki_der();
    let home_key = home().public_key().to_spki_der();
    let bytes = directory_entry_bytes(
        phone.as_str(),
        "p256",
        &user_key,
        registered_at,
        &home_key,
        name,
    );
    DirectoryEntry {
        phone: phone.as_str().to_owned(),
        key_type: KeyType::P256,
        public_key: B64(user_key),
        home_key: B64(home_key),
        home_name: name.to_owned(),
        registered_at,
        signature: B64(home().sign(&bytes)),
        hops,
    }
}

/// The server's check of a registration or login proof.
fn proof_holds(
    purpose: Purpose,
    exporter: [u8; 32],
    nonce: [u8; 32],
    phone: &PhoneNumber,
    signature: &[u8],
) -> bool {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    let runtime = RUNTIME.get_or_init(|| tokio::runtime::Runtime::new().unwrap());
    let check = proof::check(
        purpose,
        exporter,
        nonce,
        phone,
        user().public_key(),
        signature.to_vec(),
    );
    runtime.block_on(check).is_ok()
}

fn entry_verifies(e: &DirectoryEntry) -> bool {
    let via = Fingerprint::of_spki(b"neighbour");
    parse_entry(e, via).is_ok_and(|entry| verify_signature(&entry).is_ok())
}

proptest! {
    #[test]
    fn directory_entry_layout_decodes_to_its_fields(
        phone in phone(),
        key in prop::collection::vec(any::<u8>(), 0..600),
        registered_at in any::<i64>(),
        home_key in prop::collection::vec(any::<u8>(), 0..200),
        name in home_name(),
        key_type in prop::sample::select(&["p256", "rsa"][..]),
    ) {
        let bytes = directory_entry_bytes(phone.as_str(), key_type, &key, registered_at, &home_key, &name);
        let mut f = Fields(&bytes);
        prop_assert_eq!(f.take(21), b"carrier-v1 directory\0");
        prop_assert_eq!(f.short(), phone.as_str().as_bytes());
        prop_assert_eq!(f.short(), key_type.as_bytes());
        prop_assert_eq!(f.medium(), &key[..]);
        prop_assert_eq!(f.take(8), registered_at.to_be_bytes());
        prop_assert_eq!(f.medium(), &home_key[..]);
        prop_assert_eq!(f.short(), name.as_bytes());
        prop_assert!(f.0.is_empty());
    }

    #[test]
    fn broadcast_layout_decodes_to_its_fields(
        id in any::<[u8; 16]>(),
        sent_at in any::<u64>(),
        from in phone(),
        text in "\\PC{0,200}",
    ) {
        let bytes = broadcast_bytes(&MessageId::from_bytes(id), sent_at, from.as_str(), &text);
        let mut f = Fields(&bytes);
        prop_assert_eq!(f.take(21), b"carrier-v1 broadcast\0");
        prop_assert_eq!(f.take(16), id);
        prop_assert_eq!(f.take(8), sent_at.to_be_bytes());
        prop_assert_eq!(f.short(), from.as_str().as_bytes());
        let len = u32::from_be_bytes(f.take(4).try_into().unwrap()) as usize;
        prop_assert_eq!(f.take(len), text.as_bytes());
        prop_assert!(f.0.is_empty());
    }

    #[test]
    fn directory_entries_verify_only_as_their_home_signed_them(
        phone in phone(),
        registered_at in any::<i64>(),
        name in home_name(),
        hops in any::<u32>(),
    ) {
        let entry = signed_entry(&phone, registered_at, &name, hops);
        prop_assert!(is_low_s(&entry.signature.0));
        prop_assert!(entry_verifies(&entry));
        let rerouted = DirectoryEntry { hops: hops.wrapping_add(1), ..entry.clone() };
        prop_assert!(entry_verifies(&rerouted), "hops are not signed");
        for (what, sig) in malformed(&entry.signature.0) {
            let bad = DirectoryEntry { signature: B64(sig), ..entry.clone() };
            prop_assert!(!entry_verifies(&bad), "{} accepted", what);
        }
        let renamed = DirectoryEntry { home_name: format!("{name}x"), ..entry.clone() };
        prop_assert!(!entry_verifies(&renamed));
        let redated = DirectoryEntry { registered_at: registered_at.wrapping_add(1), ..entry };
        prop_assert!(!entry_verifies(&redated));
    }

    #[test]
    fn broadcasts_verify_only_as_their_author_signed_them(
        id in any::<[u8; 16]>(),
        sent_at in any::<u64>(),
        from in phone(),
        text in "\\PC{0,100}",
    ) {
        let id = MessageId::from_bytes(id);
        let bytes = broadcast_bytes(&id, sent_at, from.as_str(), &text);
        let sig = user().sign(&bytes);
        let key: PublicKey = user().public_key();
        prop_assert!(is_low_s(&sig));
        prop_assert!(key.verify(&bytes, &sig).is_ok());
        for (what, bad) in malformed(&sig) {
            prop_assert!(key.verify(&bytes, &bad).is_err(), "{} accepted", what);
        }
        let edited = broadcast_bytes(&id, sent_at, from.as_str(), &format!("{text}!"));
        prop_assert!(key.verify(&edited, &sig).is_err());
    }

    #[test]
    fn login_and_registration_proofs_refuse_malformed_signatures(
        exporter in any::<[u8; 32]>(),
        nonce in any::<[u8; 32]>(),
        phone in phone(),
        login in any::<bool>(),
    ) {
        let purpose = if login { Purpose::Login } else { Purpose::Register };
        let sig = sign_proof(user(), purpose, &exporter, &nonce, &phone);
        prop_assert!(is_low_s(&sig));
        prop_assert!(proof_holds(purpose, exporter, nonce, &phone, &sig));
        for (what, bad) in malformed(&sig) {
            prop_assert!(!proof_holds(purpose, exporter, nonce, &phone, &bad), "{} accepted", what);
        }
        let other = if login { Purpose::Register } else { Purpose::Login };
        prop_assert!(!proof_holds(other, exporter, nonce, &phone, &sig));
    }
}
