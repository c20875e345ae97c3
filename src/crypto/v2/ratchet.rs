//! The Double Ratchet (Signal's specification, Perrin and Marlinspike,
//! revision 1, 2016) with P-256 ECDH, HKDF-SHA256 for the root chain and
//! HMAC-SHA256 for the message chains (docs/PROTOCOL.md §12).
//!
//! Two choices the specification allows are taken: a new ratchet key pair is
//! made when the next message is *sent*, not when one is received (its §6.5,
//! "deferring new ratchet key generation"), so opening needs no randomness;
//! and the initiator starts as if it had received the responder's signed
//! prekey as a ratchet key, so both sides run the same steps.
//!
//! Receiving is all-or-nothing: chain steps and skipped keys are computed on
//! a copy and kept only if the message authenticates. A used message key is
//! gone, so a replayed message cannot be opened twice.

use std::collections::VecDeque;

use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::Error;
use super::codec::{Put, Reader};
use super::ec::{EcSecret, POINT_LEN, PublicPoint, Secret32};

/// Most message keys one received message may make the ratchet skip in a
/// chain (the specification's MAX_SKIP).
pub const MAX_SKIP: u32 = 1000;
/// Most skipped message keys a session keeps; the oldest go first.
pub const MAX_SKIPPED_KEYS: usize = 2000;
/// A skipped key is dropped this long after it was stored: the servers'
/// message lifetime, after which the message it waits for cannot arrive.
pub const MAX_SKIPPED_AGE_MS: u64 = 30 * 24 * 3600 * 1000;

const ROOT_INFO: &[u8] = b"carrier-v2 ratchet";
const MESSAGE_INFO: &[u8] = b"carrier-v2 message key";

/// The ratchet part of a message header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    /// The sender's current ratchet public key.
    pub(crate) dh: PublicPoint,
    /// Length of the sender's previous sending chain.
    pub(crate) pn: u32,
    /// Number of this message in its chain.
    pub(crate) n: u32,
}

#[derive(Clone)]
struct Chains {
    root: Secret32,
    /// Our ratchet key; `None` after a receiving step until we next send.
    dhs: Option<EcSecret>,
    dhr: Option<PublicPoint>,
    cks: Option<Secret32>,
    ckr: Option<Secret32>,
    ns: u32,
    nr: u32,
    pn: u32,
}

struct Skipped {
    dh: [u8; POINT_LEN],
    n: u32,
    key: Secret32,
    stored_at_ms: u64,
}

/// One session's ratchet state.
pub(crate) struct Ratchet {
    chains: Chains,
    skipped: VecDeque<Skipped>,
}

impl Ratchet {
    /// The initiator: the responder's signed prekey is its first ratchet key.
    pub(crate) fn initiator(root: Secret32, peer_signed_prekey: PublicPoint) -> Self {
        Self::new(root, None, Some(peer_signed_prekey))
    }

    /// The responder: its signed prekey is its first ratchet key, used for
    /// one step when the first message arrives and then dropped.
    pub(crate) fn responder(root: Secret32, signed_prekey: EcSecret) -> Self {
        Self::new(root, Some(signed_prekey), None)
    }

    fn new(root: Secret32, dhs: Option<EcSecret>, dhr: Option<PublicPoint>) -> Self {
        Self {
            chains: Chains {
                root,
                dhs,
                dhr,
                cks: None,
                ckr: None,
                ns: 0,
                nr: 0,
                pn: 0,
            },
            skipped: VecDeque::new(),
        }
    }

    /// Advances the sending chain. `fresh` is called for a new ratchet key
    /// only when a DH step is due.
    pub(crate) fn send(
        &mut self,
        fresh: impl FnOnce() -> EcSecret,
    ) -> Result<(Header, Secret32), Error> {
        let c = &mut self.chains;
        if c.ns == u32::MAX {
            return Err(Error::Exhausted);
        }
        let cks = match c.cks.take() {
            Some(ck) => ck,
            None => {
                let dhr = c.dhr.as_ref().ok_or(Error::WrongSession)?;
                let dhs = fresh();
                let (root, ck) = kdf_root(&c.root, &dhs.dh(dhr));
                c.root = root;
                c.dhs = Some(dhs);
                ck
            }
        };
        let (next, message_key) = kdf_chain(&cks);
        c.cks = Some(next);
        let dhs = c.dhs.as_ref().expect("a sending chain has a ratchet key");
        let header = Header {
            dh: dhs.public(),
            pn: c.pn,
            n: c.ns,
        };
        c.ns += 1;
        Ok((header, message_key))
    }

    /// Finds or derives the message key for `header` and passes it to
    /// `open`; the new state is kept only if `open` succeeds.
    pub(crate) fn receive<T>(
        &mut self,
        header: &Header,
        now_ms: u64,
        open: impl FnOnce(&Secret32) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let dh = header.dh.as_bytes();
        if let Some(i) = self
            .skipped
            .iter()
            .position(|s| s.n == header.n && &s.dh == dh)
        {
            let out = open(&self.skipped[i].key)?;
            self.skipped.remove(i);
            self.expire(now_ms);
            return Ok(out);
        }
        let mut next = self.chains.clone();
        let mut skipped = Vec::new();
        if next.dhr.as_ref() != Some(&header.dh) {
            skip_until(&mut next, header.pn, &mut skipped)?;
            let dhs = next.dhs.take().ok_or(Error::WrongSession)?;
            let (root, ckr) = kdf_root(&next.root, &dhs.dh(&header.dh));
            next.root = root;
            next.ckr = Some(ckr);
            next.dhr = Some(header.dh.clone());
            next.pn = next.ns;
            (next.ns, next.nr, next.cks) = (0, 0, None);
        } else if header.n < next.nr {
            return Err(Error::Replay);
        }
        skip_until(&mut next, header.n, &mut skipped)?;
        let ckr = next.ckr.take().ok_or(Error::WrongSession)?;
        let (ck, message_key) = kdf_chain(&ckr);
        next.ckr = Some(ck);
        next.nr += 1;
        let out = open(&message_key)?;
        self.chains = next;
        for (dh, n, key) in skipped {
            self.skipped.push_back(Skipped {
                dh,
                n,
                key,
                stored_at_ms: now_ms,
            });
        }
        while self.skipped.len() > MAX_SKIPPED_KEYS {
            self.skipped.pop_front();
        }
        self.expire(now_ms);
        Ok(out)
    }

    /// How many skipped message keys are kept.
    #[cfg(test)]
    pub(crate) fn skipped_count(&self) -> usize {
        self.skipped.len()
    }

    fn expire(&mut self, now_ms: u64) {
        self.skipped
            .retain(|s| now_ms.saturating_sub(s.stored_at_ms) < MAX_SKIPPED_AGE_MS);
    }

    /// An upper bound of the encoding's length, so the buffer holding the
    /// secrets is allocated once and never leaves a copy behind by growing.
    pub(crate) fn encoded_len(&self) -> usize {
        32 + 1 + 32 + POINT_LEN + 32 + 32 + 12 + 2 + self.skipped.len() * (POINT_LEN + 4 + 32 + 8)
    }

    /// Appends the state's encoding (docs/PROTOCOL.md §15).
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        let c = &self.chains;
        out.put(&c.root[..]);
        let flags = u8::from(c.dhs.is_some())
            | u8::from(c.dhr.is_some()) << 1
            | u8::from(c.cks.is_some()) << 2
            | u8::from(c.ckr.is_some()) << 3;
        out.put_u8(flags);
        if let Some(k) = &c.dhs {
            out.put(&k.to_bytes()[..]);
        }
        if let Some(p) = &c.dhr {
            out.put(p.as_bytes());
        }
        for ck in [&c.cks, &c.ckr].into_iter().flatten() {
            out.put(&ck[..]);
        }
        out.put_u32(c.ns);
        out.put_u32(c.nr);
        out.put_u32(c.pn);
        out.put_u16(self.skipped.len() as u16);
        for s in &self.skipped {
            out.put(&s.dh);
            out.put_u32(s.n);
            out.put(&s.key[..]);
            out.put_u64(s.stored_at_ms);
        }
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        let root = secret(r)?;
        let flags = r.u8("ratchet flags")?;
        if flags > 0x0f {
            return Err(Error::Malformed("ratchet flags"));
        }
        let has = |bit: u8| flags & (1 << bit) != 0;
        let dhs = if has(0) {
            Some(EcSecret::from_bytes(&secret(r)?[..])?)
        } else {
            None
        };
        let dhr = if has(1) {
            Some(PublicPoint::from_bytes(r.take(POINT_LEN, "ratchet key")?)?)
        } else {
            None
        };
        let cks = if has(2) { Some(secret(r)?) } else { None };
        let ckr = if has(3) { Some(secret(r)?) } else { None };
        let chains = Chains {
            root,
            dhs,
            dhr,
            cks,
            ckr,
            ns: r.u32("ns")?,
            nr: r.u32("nr")?,
            pn: r.u32("pn")?,
        };
        let count = usize::from(r.u16("skipped keys")?);
        if count > MAX_SKIPPED_KEYS {
            return Err(Error::Malformed("skipped keys"));
        }
        let mut skipped = VecDeque::with_capacity(count);
        for _ in 0..count {
            skipped.push_back(Skipped {
                dh: r.array("skipped ratchet key")?,
                n: r.u32("skipped number")?,
                key: secret(r)?,
                stored_at_ms: r.u64("skipped time")?,
            });
        }
        Ok(Self { chains, skipped })
    }
}

impl Clone for Ratchet {
    fn clone(&self) -> Self {
        let mut out = Zeroizing::new(Vec::with_capacity(self.encoded_len()));
        self.encode(&mut out);
        Self::decode(&mut Reader::new(&out)).expect("a state decodes its own encoding")
    }
}

/// Stores the keys of messages `nr .. until` of the receiving chain.
fn skip_until(
    c: &mut Chains,
    until: u32,
    out: &mut Vec<([u8; POINT_LEN], u32, Secret32)>,
) -> Result<(), Error> {
    let (Some(ckr), Some(dhr)) = (c.ckr.as_ref(), c.dhr.as_ref()) else {
        return Ok(());
    };
    if until.saturating_sub(c.nr) > MAX_SKIP {
        return Err(Error::TooFarAhead);
    }
    let mut ck = ckr.clone();
    while c.nr < until {
        let (next, message_key) = kdf_chain(&ck);
        out.push((*dhr.as_bytes(), c.nr, message_key));
        ck = next;
        c.nr += 1;
    }
    c.ckr = Some(ck);
    Ok(())
}

fn secret(r: &mut Reader<'_>) -> Result<Secret32, Error> {
    Ok(Zeroizing::new(r.array("secret")?))
}

/// KDF_RK: HKDF-SHA256 with the root key as salt and the DH output as
/// input; 64 bytes give the next root key and a chain key.
pub(crate) fn kdf_root(root: &[u8; 32], dh_out: &[u8; 32]) -> (Secret32, Secret32) {
    let mut okm = Zeroizing::new([0u8; 64]);
    Hkdf::<Sha256>::new(Some(root), dh_out)
        .expand(ROOT_INFO, okm.as_mut())
        .expect("64 bytes is a valid HKDF-SHA256 length");
    (split32(&okm[..32]), split32(&okm[32..]))
}

/// KDF_CK: the message key is HMAC-SHA256(ck, 0x01), the next chain key
/// HMAC-SHA256(ck, 0x02). Returns (next chain key, message key).
pub(crate) fn kdf_chain(ck: &[u8; 32]) -> (Secret32, Secret32) {
    let mac = |byte: u8| {
        let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(ck).expect("HMAC takes any key");
        m.update(&[byte]);
        split32(&m.finalize().into_bytes())
    };
    (mac(0x02), mac(0x01))
}

/// The AES-256-GCM key and nonce of one message: HKDF-SHA256 of the message
/// key (salt 32 zero bytes), 44 bytes. Each message key is used once, so
/// each (key, nonce) pair is too.
pub(crate) fn aead_key(message_key: &[u8; 32]) -> (Secret32, [u8; 12]) {
    let mut okm = Zeroizing::new([0u8; 44]);
    Hkdf::<Sha256>::new(Some(&[0u8; 32]), message_key)
        .expand(MESSAGE_INFO, okm.as_mut())
        .expect("44 bytes is a valid HKDF-SHA256 length");
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&okm[32..]);
    (split32(&okm[..32]), nonce)
}

fn split32(bytes: &[u8]) -> Secret32 {
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(bytes);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Ratchet, Ratchet) {
        let spk = EcSecret::generate();
        let root = Zeroizing::new([9u8; 32]);
        (
            Ratchet::initiator(root.clone(), spk.public()),
            Ratchet::responder(root, spk),
        )
    }

    fn key_matches(expected: &Secret32) -> impl FnOnce(&Secret32) -> Result<(), Error> + '_ {
        move |k| {
            if k[..] == expected[..] {
                Ok(())
            } else {
                Err(Error::Decrypt)
            }
        }
    }

    #[test]
    fn both_directions_with_ratchet_steps_and_out_of_order() {
        let (mut a, mut b) = pair();
        let sent: Vec<_> = (0..3)
            .map(|_| a.send(EcSecret::generate).unwrap())
            .collect();
        b.receive(&sent[2].0, 0, key_matches(&sent[2].1)).unwrap();
        assert_eq!(b.skipped_count(), 2);
        b.receive(&sent[0].0, 0, key_matches(&sent[0].1)).unwrap();
        assert_eq!(
            b.receive(&sent[0].0, 0, key_matches(&sent[0].1)),
            Err(Error::Replay)
        );
        let reply = b.send(EcSecret::generate).unwrap();
        assert_ne!(reply.0.dh, sent[0].0.dh);
        assert_eq!(reply.0.pn, 0);
        a.receive(&reply.0, 0, key_matches(&reply.1)).unwrap();
        let again = a.send(EcSecret::generate).unwrap();
        assert_eq!((again.0.pn, again.0.n), (3, 0));
        b.receive(&again.0, 0, key_matches(&again.1)).unwrap();
        b.receive(&sent[1].0, 0, key_matches(&sent[1].1)).unwrap();
        assert_eq!(b.skipped_count(), 0);
    }

    #[test]
    fn failed_open_changes_nothing_and_skips_are_bounded() {
        let (mut a, mut b) = pair();
        let first = a.send(EcSecret::generate).unwrap();
        let before = {
            let mut v = Vec::new();
            b.encode(&mut v);
            v
        };
        assert_eq!(
            b.receive(&first.0, 0, |_| Err::<(), _>(Error::Decrypt)),
            Err(Error::Decrypt)
        );
        let after = {
            let mut v = Vec::new();
            b.encode(&mut v);
            v
        };
        assert_eq!(before, after);
        b.receive(&first.0, 0, key_matches(&first.1)).unwrap();

        let far = Header {
            n: MAX_SKIP + 2,
            ..first.0.clone()
        };
        assert_eq!(b.receive(&far, 0, |_| Ok(())), Err(Error::TooFarAhead));
        for _ in 0..MAX_SKIP {
            a.send(EcSecret::generate).unwrap();
        }
        let last = a.send(EcSecret::generate).unwrap();
        b.receive(&last.0, 0, key_matches(&last.1)).unwrap();
        assert_eq!(b.skipped_count(), MAX_SKIP as usize);
        let one_more = a.send(EcSecret::generate).unwrap();
        b.receive(&one_more.0, MAX_SKIPPED_AGE_MS, key_matches(&one_more.1))
            .unwrap();
        assert_eq!(b.skipped_count(), 0, "aged keys are dropped");
    }

    #[test]
    fn state_round_trips() {
        let (mut a, mut b) = pair();
        let m = a.send(EcSecret::generate).unwrap();
        let m2 = a.send(EcSecret::generate).unwrap();
        b.receive(&m2.0, 5, key_matches(&m2.1)).unwrap();
        let mut bytes = Vec::new();
        b.encode(&mut bytes);
        let mut copy = Ratchet::decode(&mut Reader::new(&bytes)).unwrap();
        copy.receive(&m.0, 6, key_matches(&m.1)).unwrap();
        let mut again = Vec::new();
        b.clone().encode(&mut again);
        assert_eq!(again, bytes);
    }
}
