//! Session set-up with the structure of Signal's PQXDH specification
//! over P-256 and ML-KEM-768 (docs/PROTOCOL.md §11):
//!
//! ```text
//! DH1 = DH(IK_A, SPK_B)   DH2 = DH(EK_A, IK_B)   DH3 = DH(EK_A, SPK_B)
//! DH4 = DH(EK_A, OPK_B)   (only when a one-time prekey was claimed)
//! (CT, SS) = ML-KEM-768.Encaps(PQPK_B)
//! SK = HKDF-SHA256(salt = 0^32, IKM = 0xFF^32 ‖ DH1 ‖ DH2 ‖ DH3 [‖ DH4] ‖ SS,
//!                  info = "carrier-v2 pqxdh" ‖ 0x00 ‖ SHA-256(binding))
//! ```
//!
//! Where PQXDH puts the two identity keys in the associated data, Carrier
//! hashes every public input (both phones, device ids and identity keys,
//! each prekey with its id, the ML-KEM key, the base key and the ciphertext)
//! into the binding and feeds its hash to the KDF, so two devices agree on a
//! root key only if they agree on all of them; the same hash is each
//! message's associated data and the first 16 bytes name the session.

use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::DeviceId;
use super::codec::Put;
use super::ec::{DeviceKey, EcSecret, PublicPoint, Secret32};
use super::kem::{KEM_CIPHERTEXT_LEN, KemPublic};
use crate::domain::PhoneNumber;

const BINDING_LABEL: &[u8] = b"carrier-v2 session\0";
const KDF_INFO_LABEL: &[u8] = b"carrier-v2 pqxdh\0";
/// PQXDH's prefix F: 32 bytes of 0xFF before the key material.
const KDF_PREFIX: [u8; 32] = [0xff; 32];

/// One side's identity as it enters the binding.
#[derive(Clone, Copy)]
pub(crate) struct Party<'a> {
    pub(crate) phone: &'a PhoneNumber,
    pub(crate) device_id: DeviceId,
    pub(crate) key: &'a PublicPoint,
}

/// The responder's prekeys a set-up used.
pub(crate) struct Prekeys<'a> {
    pub(crate) signed: (u32, &'a PublicPoint),
    pub(crate) one_time: Option<(u32, &'a PublicPoint)>,
    pub(crate) kem: (u32, &'a KemPublic),
}

/// What both sides end with.
pub(crate) struct Agreement {
    pub(crate) root_key: Secret32,
    /// SHA-256 of the binding: the associated data of every message.
    pub(crate) session_hash: [u8; 32],
}

/// The public values hashed into the KDF (docs/PROTOCOL.md §11.2).
pub(crate) fn binding(
    initiator: Party<'_>,
    responder: Party<'_>,
    prekeys: &Prekeys<'_>,
    base_key: &PublicPoint,
    ciphertext: &[u8; KEM_CIPHERTEXT_LEN],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(2600);
    out.put(BINDING_LABEL);
    for party in [initiator, responder] {
        out.put_phone(party.phone);
        out.put_u32(party.device_id.get());
        out.put(party.key.as_bytes());
    }
    out.put_u32(prekeys.signed.0);
    out.put(prekeys.signed.1.as_bytes());
    match prekeys.one_time {
        Some((id, key)) => {
            out.put_u32(id);
            out.put(key.as_bytes());
        }
        None => out.put_u32(0),
    }
    out.put_u32(prekeys.kem.0);
    out.put(prekeys.kem.1.as_bytes());
    out.put(base_key.as_bytes());
    out.put(ciphertext);
    out
}

/// The initiator's side: `ephemeral` is EK_A, `kem_m` the encapsulation's
/// randomness (both fresh from the OS generator outside test vectors).
pub(crate) fn initiate(
    own_key: &DeviceKey,
    own: Party<'_>,
    peer: Party<'_>,
    prekeys: &Prekeys<'_>,
    ephemeral: &EcSecret,
    kem_m: &[u8; 32],
) -> (Agreement, Box<[u8; KEM_CIPHERTEXT_LEN]>) {
    let mut dhs = vec![
        own_key.dh(prekeys.signed.1),
        ephemeral.dh(peer.key),
        ephemeral.dh(prekeys.signed.1),
    ];
    if let Some((_, opk)) = prekeys.one_time {
        dhs.push(ephemeral.dh(opk));
    }
    let (ciphertext, shared) = prekeys.kem.1.encapsulate_with(kem_m);
    let bound = binding(own, peer, prekeys, &ephemeral.public(), &ciphertext);
    (derive(&dhs, &shared, &bound), ciphertext)
}

/// The responder's secrets for one set-up.
pub(crate) struct ResponderSecrets<'a> {
    pub(crate) own_key: &'a DeviceKey,
    pub(crate) signed: &'a EcSecret,
    pub(crate) one_time: Option<&'a EcSecret>,
    pub(crate) kem_shared: Secret32,
}

/// The responder's side, from the initiator's identity and base key and
/// the shared secret decapsulated from the ciphertext.
pub(crate) fn respond(
    secrets: &ResponderSecrets<'_>,
    initiator: Party<'_>,
    own: Party<'_>,
    prekeys: &Prekeys<'_>,
    base_key: &PublicPoint,
    ciphertext: &[u8; KEM_CIPHERTEXT_LEN],
) -> Agreement {
    let mut dhs = vec![
        secrets.signed.dh(initiator.key),
        secrets.own_key.dh(base_key),
        secrets.signed.dh(base_key),
    ];
    if let Some(opk) = secrets.one_time {
        dhs.push(opk.dh(base_key));
    }
    let bound = binding(initiator, own, prekeys, base_key, ciphertext);
    derive(&dhs, &secrets.kem_shared, &bound)
}

fn derive(dhs: &[Secret32], kem_shared: &Secret32, binding: &[u8]) -> Agreement {
    let session_hash: [u8; 32] = Sha256::digest(binding).into();
    let mut ikm = Zeroizing::new(Vec::with_capacity(32 * 6));
    ikm.extend_from_slice(&KDF_PREFIX);
    for dh in dhs {
        ikm.extend_from_slice(&dh[..]);
    }
    ikm.extend_from_slice(&kem_shared[..]);
    let info = [KDF_INFO_LABEL, &session_hash].concat();
    let mut root_key = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(Some(&[0u8; 32]), &ikm)
        .expand(&info, root_key.as_mut())
        .expect("32 bytes is a valid HKDF-SHA256 length");
    Agreement {
        root_key,
        session_hash,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::v2::kem::KemSecret;

    #[test]
    fn both_sides_agree_with_and_without_one_time_prekey() {
        let (alice, bob) = (DeviceKey::generate(), DeviceKey::generate());
        let (pa, pb) = (
            PhoneNumber::from_canonical("+12025550101").unwrap(),
            PhoneNumber::from_canonical("+12025550102").unwrap(),
        );
        let (ka, kb) = (alice.public(), bob.public());
        let a = Party {
            phone: &pa,
            device_id: DeviceId::new(1).unwrap(),
            key: &ka,
        };
        let b = Party {
            phone: &pb,
            device_id: DeviceId::new(2).unwrap(),
            key: &kb,
        };
        let (spk, opk, kem) = (
            EcSecret::generate(),
            EcSecret::generate(),
            KemSecret::generate(),
        );
        let (spk_pub, opk_pub, kem_pub) = (spk.public(), opk.public(), kem.public());
        for with_opk in [true, false] {
            let prekeys = Prekeys {
                signed: (1, &spk_pub),
                one_time: with_opk.then_some((2, &opk_pub)),
                kem: (3, &kem_pub),
            };
            let ek = EcSecret::generate();
            let (sent, ct) = initiate(&alice, a, b, &prekeys, &ek, &[7; 32]);
            let secrets = ResponderSecrets {
                own_key: &bob,
                signed: &spk,
                one_time: with_opk.then_some(&opk),
                kem_shared: kem.decapsulate(&ct),
            };
            let got = respond(&secrets, a, b, &prekeys, &ek.public(), &ct);
            assert_eq!(*sent.root_key, *got.root_key);
            assert_eq!(sent.session_hash, got.session_hash);

            let other = Party {
                device_id: DeviceId::new(9).unwrap(),
                ..a
            };
            let wrong = respond(&secrets, other, b, &prekeys, &ek.public(), &ct);
            assert_ne!(*wrong.root_key, *sent.root_key, "identities are bound");
        }
    }
}
