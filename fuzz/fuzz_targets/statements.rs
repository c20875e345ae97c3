//! Signed statements under edit: a directory entry signed by a home server,
//! a broadcast and a login transcript signed by a user, each changed by an
//! arbitrary list of edits to its fields and its signature (including the
//! high-S twin (r, n − s), zero values and other lengths), then checked where
//! Carrier checks it. The oracle: a statement verifies only if its signed
//! bytes and its signature are exactly the signer's; nobody without the key
//! can make a second valid signature.
#![no_main]

use std::sync::LazyLock;

use arbitrary::Arbitrary;
use carrier::auth::proof;
use carrier::crypto::{Identity, Purpose, sign_proof};
use carrier::domain::{Fingerprint, MessageId};
use carrier::protocol::link::DirectoryEntry;
use carrier::protocol::signed::{broadcast_bytes, directory_entry_bytes};
use carrier::protocol::{B64, KeyType};
use carrier::routing::directory::{parse_entry, signed_bytes, verify_signature};
use carrier_fuzz::{p256_identity, phone};
use libfuzzer_sys::fuzz_target;
use p256::ecdsa::Signature;

#[derive(Arbitrary, Debug)]
enum SigEdit {
    /// (r, s) → (r, n − s).
    NegateS,
    ZeroR,
    ZeroS,
    FlipBit(u16),
    Truncate(u16),
    Append(Vec<u8>),
    Replace(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum FieldEdit {
    /// Flip a bit of the text-like field (home name, broadcast text).
    FlipText(u16),
    /// Change the number (registered_at, sent_at, exporter byte).
    Nudge(i64),
    /// Flip a bit of a key (the user's or home's key, the nonce).
    FlipKey(u16),
    /// Another valid phone.
    Phone(bool),
    /// Hops are outside the entry's signature: any value may be claimed.
    Hops(u32),
}

#[derive(Arbitrary, Debug)]
enum Statement {
    Entry,
    Broadcast,
    Login,
}

#[derive(Arbitrary, Debug)]
struct Input {
    statement: Statement,
    fields: Vec<FieldEdit>,
    signature: Vec<SigEdit>,
}

struct Keys {
    home: Identity,
    user: Identity,
    /// For the server's proof check, which runs off the async threads.
    runtime: tokio::runtime::Runtime,
}

static KEYS: LazyLock<Keys> = LazyLock::new(|| Keys {
    home: p256_identity(0x33),
    user: p256_identity(0x44),
    runtime: tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime"),
});

const PHONES: [&str; 2] = ["+12025550101", "+447700900123"];

fn edit_signature(sig: &mut Vec<u8>, edit: &SigEdit) {
    match edit {
        SigEdit::NegateS => {
            if let Ok(s) = Signature::from_slice(sig) {
                let (r, s) = s.split_scalars();
                *sig = Signature::from_scalars(r.to_bytes(), (-*s).to_bytes())
                    .expect("n - s is in range")
                    .to_vec();
            }
        }
        SigEdit::ZeroR => sig.iter_mut().take(32).for_each(|b| *b = 0),
        SigEdit::ZeroS => sig.iter_mut().skip(32).for_each(|b| *b = 0),
        SigEdit::FlipBit(at) => {
            if !sig.is_empty() {
                let bit = usize::from(*at) % (sig.len() * 8);
                sig[bit / 8] ^= 1 << (bit % 8);
            }
        }
        SigEdit::Truncate(len) => sig.truncate(usize::from(*len)),
        SigEdit::Append(more) => sig.extend_from_slice(more),
        SigEdit::Replace(other) => sig.clone_from(other),
    }
}

fn flip(bytes: &mut [u8], at: u16) {
    if !bytes.is_empty() {
        let i = usize::from(at) % bytes.len();
        bytes[i] ^= 1 << (at % 8);
    }
}

/// The signer's signature after the edits.
fn edited(original: &[u8], edits: &[SigEdit]) -> Vec<u8> {
    let mut sig = original.to_vec();
    for e in edits {
        edit_signature(&mut sig, e);
    }
    sig
}

fn entry(input: &Input, k: &Keys) {
    let user_key = k.user.public_key().to_spki_der();
    let home_key = k.home.public_key().to_spki_der();
    let (phone0, at0, name0) = (PHONES[0], 1_700_000_000_000i64, "home.example:5000");
    let bytes = directory_entry_bytes(phone0, "p256", &user_key, at0, &home_key, name0);
    let original = DirectoryEntry {
        phone: phone0.into(),
        key_type: KeyType::P256,
        public_key: B64(user_key),
        home_key: B64(home_key),
        home_name: name0.into(),
        registered_at: at0,
        signature: B64(k.home.sign(&bytes)),
        hops: 0,
    };
    let mut e = original.clone();
    for f in &input.fields {
        match f {
            FieldEdit::FlipText(at) => {
                let mut name = e.home_name.clone().into_bytes();
                flip(&mut name, *at);
                e.home_name = String::from_utf8_lossy(&name).into_owned();
            }
            FieldEdit::Nudge(d) => e.registered_at = e.registered_at.wrapping_add(*d),
            FieldEdit::FlipKey(at) if at % 2 == 0 => flip(&mut e.public_key.0, at / 2),
            FieldEdit::FlipKey(at) => flip(&mut e.home_key.0, at / 2),
            FieldEdit::Phone(p) => e.phone = PHONES[usize::from(*p)].into(),
            FieldEdit::Hops(h) => e.hops = *h,
        }
    }
    e.signature = B64(edited(&original.signature.0, &input.signature));
    let via = Fingerprint::of_spki(b"neighbour");
    let Ok(parsed) = parse_entry(&e, via) else {
        return;
    };
    if verify_signature(&parsed).is_ok() {
        let first = parse_entry(&original, via).expect("the original parses");
        assert_eq!(
            signed_bytes(&parsed),
            signed_bytes(&first),
            "a changed entry verified"
        );
        assert_eq!(
            e.signature, original.signature,
            "a second signature for one entry verified"
        );
    }
}

fn broadcast(input: &Input, k: &Keys) {
    let id = MessageId::from_bytes([7; 16]);
    let (mut sent_at, mut from, mut text) = (1_700_000_000_000u64, PHONES[0], b"hello".to_vec());
    for f in &input.fields {
        match f {
            FieldEdit::FlipText(at) | FieldEdit::FlipKey(at) => flip(&mut text, *at),
            FieldEdit::Nudge(d) => sent_at = sent_at.wrapping_add(*d as u64),
            FieldEdit::Phone(p) => from = PHONES[usize::from(*p)],
            FieldEdit::Hops(_) => {}
        }
    }
    let text = String::from_utf8_lossy(&text);
    let original_bytes = broadcast_bytes(&id, 1_700_000_000_000, PHONES[0], "hello");
    let original = k.user.sign(&original_bytes);
    let sig = edited(&original, &input.signature);
    let bytes = broadcast_bytes(&id, sent_at, from, &text);
    if k.user.public_key().verify(&bytes, &sig).is_ok() {
        assert_eq!(bytes, original_bytes, "a changed broadcast verified");
        assert_eq!(
            sig, original,
            "a second signature for one broadcast verified"
        );
    }
}

fn login(input: &Input, k: &Keys) {
    let key = k.user.public_key();
    let (mut exporter, mut nonce, mut who) = ([0x44u8; 32], [0x55u8; 32], PHONES[0]);
    let mut purpose = Purpose::Login;
    for f in &input.fields {
        match f {
            FieldEdit::FlipText(at) => flip(&mut exporter, *at),
            FieldEdit::FlipKey(at) => flip(&mut nonce, *at),
            FieldEdit::Phone(p) => who = PHONES[usize::from(*p)],
            FieldEdit::Nudge(_) => purpose = Purpose::Register,
            FieldEdit::Hops(_) => {}
        }
    }
    let original = sign_proof(
        &k.user,
        Purpose::Login,
        &[0x44; 32],
        &[0x55; 32],
        &phone(PHONES[0]),
    );
    let sig = edited(&original, &input.signature);
    let who_phone = phone(who);
    let check = proof::check(purpose, exporter, nonce, &who_phone, key, sig.clone());
    if k.runtime.block_on(check).is_ok() {
        assert!(
            matches!(purpose, Purpose::Login),
            "a register proof from a login signature"
        );
        assert_eq!((exporter, nonce, who), ([0x44; 32], [0x55; 32], PHONES[0]));
        assert_eq!(
            sig, original,
            "a second signature for one transcript verified"
        );
    }
}

fuzz_target!(|input: Input| {
    let k = &*KEYS;
    match input.statement {
        Statement::Entry => entry(&input, k),
        Statement::Broadcast => broadcast(&input, k),
        Statement::Login => login(&input, k),
    }
});
