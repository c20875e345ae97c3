//! The safety number two people compare in person (docs/PROTOCOL.md
//! §17): 60 digits in 12 groups of 5, from both account keys and phones,
//! the same on both sides. Built like Signal's displayable fingerprint:
//! each side's half is an iterated SHA-512, so that finding a second key
//! with the same 30 digits costs about 2^100 hashes times the iterations.

use sha2::{Digest, Sha512};

use super::codec::Put;
use crate::crypto::PublicKey;
use crate::domain::PhoneNumber;

const LABEL: &[u8] = b"carrier-v2 safety number\0";
/// SHA-512 iterations per half.
pub const ITERATIONS: usize = 5200;

/// `"ddddd ddddd … ddddd"`: 12 groups of 5 digits, the two halves in
/// ascending order so both people see the same number.
pub fn safety_number(
    own_phone: &PhoneNumber,
    own_key: &PublicKey,
    peer_phone: &PhoneNumber,
    peer_key: &PublicKey,
) -> String {
    let mut halves = [half(own_phone, own_key), half(peer_phone, peer_key)];
    halves.sort();
    halves
        .concat()
        .iter()
        .map(|group| format!("{group:05}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Six 5-digit groups: each of the first six 5-byte big-endian chunks of
/// the iterated hash, modulo 100 000.
fn half(phone: &PhoneNumber, key: &PublicKey) -> [u64; 6] {
    let spki = key.to_spki_der();
    let mut input = Vec::with_capacity(LABEL.len() + 20 + spki.len());
    input.put(LABEL);
    input.put_phone(phone);
    input.put_medium(&spki);
    let mut hash = Sha512::digest(&input);
    for _ in 1..ITERATIONS {
        hash = Sha512::new()
            .chain_update(hash)
            .chain_update(&spki)
            .finalize();
    }
    let mut groups = [0u64; 6];
    for (group, chunk) in groups.iter_mut().zip(hash.chunks(5)) {
        let mut wide = [0u8; 8];
        wide[3..].copy_from_slice(chunk);
        *group = u64::from_be_bytes(wide) % 100_000;
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Identity;
    use crate::protocol::KeyType;

    #[test]
    fn same_on_both_sides_and_sixty_digits() {
        let (a, b) = (
            Identity::generate(KeyType::P256),
            Identity::generate(KeyType::P256),
        );
        let (pa, pb) = (
            PhoneNumber::from_canonical("+12025550101").unwrap(),
            PhoneNumber::from_canonical("+12025550102").unwrap(),
        );
        let n = safety_number(&pa, &a.public_key(), &pb, &b.public_key());
        assert_eq!(n, safety_number(&pb, &b.public_key(), &pa, &a.public_key()));
        assert_eq!(n.len(), 71);
        let groups: Vec<_> = n.split(' ').collect();
        assert_eq!(groups.len(), 12);
        assert!(
            groups
                .iter()
                .all(|g| g.len() == 5 && g.bytes().all(|c| c.is_ascii_digit()))
        );

        let c = Identity::generate(KeyType::P256);
        assert_ne!(n, safety_number(&pa, &a.public_key(), &pb, &c.public_key()));
        assert_ne!(n, safety_number(&pa, &a.public_key(), &pa, &b.public_key()));
    }
}
