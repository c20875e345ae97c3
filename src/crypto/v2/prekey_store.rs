//! A device's prekey secrets: what it generates, publishes, rotates,
//! replenishes and deletes (docs/PROTOCOL.md §10.4). The whole store has
//! one versioned encoding, so the client saves it in the same database
//! transaction as the session a prekey message created.

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::Error;
use super::codec::{Put, Reader};
use super::ec::{DeviceKey, EcSecret};
use super::kem::{KEM_SEED_LEN, KemSecret};
use super::prekeys::{PrekeyKind, PrekeyPublic, PublicPrekey};

/// A signed prekey or last-resort ML-KEM prekey is replaced after a week.
pub const ROTATE_AFTER_MS: u64 = 7 * 24 * 3600 * 1000;
/// A replaced one is kept as long as a message made with it may still be
/// queued (the servers' 30-day message lifetime), then deleted.
pub const RETAIN_REPLACED_MS: u64 = 30 * 24 * 3600 * 1000;
/// One-time P-256 prekeys are topped up to this many...
pub const ONE_TIME_BATCH: usize = 100;
/// ...when fewer than this many are left.
pub const ONE_TIME_LOW: usize = 25;
/// One-time ML-KEM prekeys (1 184 bytes each, so fewer) are topped up to
/// this many when fewer than [`KEM_ONE_TIME_LOW`] are left.
pub const KEM_ONE_TIME_BATCH: usize = 40;
pub const KEM_ONE_TIME_LOW: usize = 10;
/// Sessions set up with neither one-time key are remembered by their base
/// key so a replayed prekey message cannot set one up twice; at most this
/// many per signed prekey, after which its replacement must be published.
pub const MAX_SEEN_BASE_KEYS: usize = 4096;
/// One-time prekeys a device holds at most, of each kind, as multiples of
/// the batch: keys the server handed out whose message never came would
/// otherwise pile up for ever. The oldest go first.
pub const MAX_HELD_BATCHES: usize = 4;
/// Encoding version of [`PrekeyStore::to_bytes`].
const STORE_FORMAT: u8 = 1;

#[derive(Clone)]
struct Record<S> {
    id: u32,
    created_at_ms: u64,
    secret: S,
}

/// The secrets a responder needs for one prekey message.
pub(crate) struct ResponderKeys<'a> {
    pub(crate) signed: &'a EcSecret,
    pub(crate) one_time: Option<&'a EcSecret>,
    pub(crate) kem: &'a KemSecret,
}

/// All prekey secrets of one device.
#[derive(Clone, Default)]
pub struct PrekeyStore {
    next_id: u32,
    /// Oldest first; the last one is current.
    signed: Vec<(Record<EcSecret>, Vec<[u8; 32]>)>,
    one_time: Vec<Record<EcSecret>>,
    /// Oldest first; the last one is current.
    kem_last_resort: Vec<Record<KemSecret>>,
    kem_one_time: Vec<Record<KemSecret>>,
}

impl std::fmt::Debug for PrekeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrekeyStore")
            .field("signed", &self.signed.len())
            .field("one_time", &self.one_time.len())
            .field("kem_last_resort", &self.kem_last_resort.len())
            .field("kem_one_time", &self.kem_one_time.len())
            .finish()
    }
}

impl PrekeyStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Brings the store up to date and returns the public prekeys to
    /// publish: the first keys of a new device, a new signed and last-resort
    /// prekey each week, one-time keys topped up when they run low. Deletes
    /// replaced keys past their retention. Save the store before publishing.
    pub fn maintain(&mut self, device: &DeviceKey, now_ms: u64) -> Vec<PublicPrekey> {
        let mut out = Vec::new();
        if self.signed.last().is_none_or(|(r, _)| due(r, now_ms)) {
            let secret = EcSecret::generate();
            let id = self.allocate_id();
            out.push(sign_ec(device, PrekeyKind::Signed, id, now_ms, &secret));
            self.signed.push((record(id, now_ms, secret), Vec::new()));
        }
        if self.kem_last_resort.last().is_none_or(|r| due(r, now_ms)) {
            let secret = KemSecret::generate();
            let id = self.allocate_id();
            out.push(sign_kem(
                device,
                PrekeyKind::KemLastResort,
                id,
                now_ms,
                &secret,
            ));
            self.kem_last_resort.push(record(id, now_ms, secret));
        }
        if self.one_time.len() < ONE_TIME_LOW {
            let missing = ONE_TIME_BATCH - self.one_time.len();
            self.add_one_time(device, now_ms, missing, &mut out);
        }
        if self.kem_one_time.len() < KEM_ONE_TIME_LOW {
            let missing = KEM_ONE_TIME_BATCH - self.kem_one_time.len();
            self.add_kem_one_time(device, now_ms, missing, &mut out);
        }
        retire(&mut self.signed, |(r, _)| r.created_at_ms, now_ms);
        retire(&mut self.kem_last_resort, |r| r.created_at_ms, now_ms);
        out
    }

    /// Makes `n` new one-time EC prekeys, held here and signed into `out`.
    fn add_one_time(
        &mut self,
        device: &DeviceKey,
        now_ms: u64,
        n: usize,
        out: &mut Vec<PublicPrekey>,
    ) {
        for _ in 0..n {
            let secret = EcSecret::generate();
            let id = self.allocate_id();
            out.push(sign_ec(device, PrekeyKind::OneTime, id, now_ms, &secret));
            self.one_time.push(record(id, now_ms, secret));
        }
    }

    /// Makes `n` new one-time ML-KEM prekeys, held here and signed into `out`.
    fn add_kem_one_time(
        &mut self,
        device: &DeviceKey,
        now_ms: u64,
        n: usize,
        out: &mut Vec<PublicPrekey>,
    ) {
        for _ in 0..n {
            let secret = KemSecret::generate();
            let id = self.allocate_id();
            out.push(sign_kem(
                device,
                PrekeyKind::KemOneTime,
                id,
                now_ms,
                &secret,
            ));
            self.kem_one_time.push(record(id, now_ms, secret));
        }
    }

    /// Tops up the server's pools: `maintain` counts the keys this device
    /// holds, but the server hands keys out when they are claimed, and a
    /// sender that claims and never writes drains its pools while they stay
    /// held here. Given the server's pool sizes, makes enough new one-time
    /// keys to bring a pool below its low mark back to a batch, and keeps at
    /// most [`MAX_HELD_BATCHES`] batches of each kind held (the oldest, long
    /// handed out, are dropped). Save the store before publishing.
    pub fn replenish(
        &mut self,
        device: &DeviceKey,
        now_ms: u64,
        server_one_time: usize,
        server_kem_one_time: usize,
    ) -> Vec<PublicPrekey> {
        let mut out = Vec::new();
        if server_one_time < ONE_TIME_LOW {
            let missing = ONE_TIME_BATCH - server_one_time;
            self.add_one_time(device, now_ms, missing, &mut out);
        }
        if server_kem_one_time < KEM_ONE_TIME_LOW {
            let missing = KEM_ONE_TIME_BATCH - server_kem_one_time;
            self.add_kem_one_time(device, now_ms, missing, &mut out);
        }
        let excess = |len: usize, batch: usize| len.saturating_sub(batch * MAX_HELD_BATCHES);
        self.one_time
            .drain(..excess(self.one_time.len(), ONE_TIME_BATCH));
        self.kem_one_time
            .drain(..excess(self.kem_one_time.len(), KEM_ONE_TIME_BATCH));
        out
    }

    /// The current signed and last-resort ML-KEM prekeys, as published
    /// (signatures are deterministic, so these equal what `maintain` gave).
    pub fn current(&self, device: &DeviceKey) -> Option<(PublicPrekey, PublicPrekey)> {
        let (spk, _) = self.signed.last()?;
        let kem = self.kem_last_resort.last()?;
        Some((
            sign_ec(
                device,
                PrekeyKind::Signed,
                spk.id,
                spk.created_at_ms,
                &spk.secret,
            ),
            sign_kem(
                device,
                PrekeyKind::KemLastResort,
                kem.id,
                kem.created_at_ms,
                &kem.secret,
            ),
        ))
    }

    /// How many one-time P-256 and ML-KEM prekeys are left.
    pub fn one_time_counts(&self) -> (usize, usize) {
        (self.one_time.len(), self.kem_one_time.len())
    }

    fn allocate_id(&mut self) -> u32 {
        self.next_id = self.next_id.checked_add(1).unwrap_or(1);
        self.next_id
    }

    /// Finds the secrets a prekey message names, and refuses a replay of a
    /// set-up that used no one-time key. Changes nothing.
    pub(crate) fn responder_keys(
        &self,
        signed_id: u32,
        one_time_id: Option<u32>,
        kem_id: u32,
        base_key: &[u8],
    ) -> Result<ResponderKeys<'_>, Error> {
        let (spk, seen) = self
            .signed
            .iter()
            .find(|(r, _)| r.id == signed_id)
            .ok_or(Error::UnknownPrekey(signed_id))?;
        let one_time = match one_time_id {
            Some(id) => Some(&find(&self.one_time, id)?.secret),
            None => None,
        };
        let kem_one_time = find(&self.kem_one_time, kem_id).ok();
        let kem = match kem_one_time {
            Some(r) => &r.secret,
            None => &find(&self.kem_last_resort, kem_id)?.secret,
        };
        if one_time.is_none() && kem_one_time.is_none() {
            let digest = base_key_digest(base_key);
            if seen.contains(&digest) {
                return Err(Error::Replay);
            }
            if seen.len() >= MAX_SEEN_BASE_KEYS {
                return Err(Error::Exhausted);
            }
        }
        Ok(ResponderKeys {
            signed: &spk.secret,
            one_time,
            kem,
        })
    }

    /// After a prekey message opened: deletes the one-time keys it used, or
    /// remembers its base key if it used none.
    pub(crate) fn consume(
        &mut self,
        signed_id: u32,
        one_time_id: Option<u32>,
        kem_id: u32,
        base_key: &[u8],
    ) {
        let had_one_time = one_time_id.is_some_and(|id| remove(&mut self.one_time, id))
            | remove(&mut self.kem_one_time, kem_id);
        let seen = self.signed.iter_mut().find(|(r, _)| r.id == signed_id);
        if let (false, Some((_, seen))) = (had_one_time, seen) {
            seen.push(base_key_digest(base_key));
        }
    }

    /// Lets a test play an attacker who ignores the replay check.
    #[cfg(test)]
    pub(crate) fn forget_base_keys_for_tests(&mut self) {
        self.signed.iter_mut().for_each(|(_, seen)| seen.clear());
    }

    /// Versioned encoding of every secret, for the client's database.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let seen: usize = self.signed.iter().map(|(_, seen)| seen.len() * 32).sum();
        let records = self.signed.len() + self.one_time.len();
        let kem_records = self.kem_last_resort.len() + self.kem_one_time.len();
        let capacity = 13 + seen + records * 46 + kem_records * (12 + KEM_SEED_LEN);
        let mut out = Zeroizing::new(Vec::with_capacity(capacity));
        out.put_u8(STORE_FORMAT);
        out.put_u32(self.next_id);
        out.put_u16(self.signed.len() as u16);
        for (r, seen) in &self.signed {
            put_head(&mut out, r);
            out.put(&*r.secret.to_bytes());
            out.put_u16(seen.len() as u16);
            seen.iter().for_each(|d| out.put(d));
        }
        out.put_u16(self.one_time.len() as u16);
        for r in &self.one_time {
            put_head(&mut out, r);
            out.put(&*r.secret.to_bytes());
        }
        for list in [&self.kem_last_resort, &self.kem_one_time] {
            out.put_u16(list.len() as u16);
            for r in list {
                put_head(&mut out, r);
                out.put(&*r.secret.to_seed());
            }
        }
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let mut r = Reader::new(bytes);
        let version = r.u8("prekey store version")?;
        if version != STORE_FORMAT {
            return Err(Error::StateVersion(version));
        }
        let mut store = Self {
            next_id: r.u32("prekey store next id")?,
            ..Self::default()
        };
        for _ in 0..r.u16("signed prekeys")? {
            let (id, created_at_ms) = (r.u32("prekey id")?, r.u64("prekey time")?);
            let secret = EcSecret::from_bytes(r.take(32, "prekey secret")?)?;
            let seen = (0..r.u16("base keys")?)
                .map(|_| r.array("base key"))
                .collect::<Result<_, _>>()?;
            store.signed.push((record(id, created_at_ms, secret), seen));
        }
        for _ in 0..r.u16("one-time prekeys")? {
            let (id, created_at_ms) = (r.u32("prekey id")?, r.u64("prekey time")?);
            let secret = EcSecret::from_bytes(r.take(32, "prekey secret")?)?;
            store.one_time.push(record(id, created_at_ms, secret));
        }
        for one_time in [false, true] {
            for _ in 0..r.u16("kem prekeys")? {
                let (id, created_at_ms) = (r.u32("prekey id")?, r.u64("prekey time")?);
                let seed: Zeroizing<[u8; KEM_SEED_LEN]> = Zeroizing::new(r.array("kem seed")?);
                let rec = record(id, created_at_ms, KemSecret::from_seed(&seed));
                let list = if one_time {
                    &mut store.kem_one_time
                } else {
                    &mut store.kem_last_resort
                };
                list.push(rec);
            }
        }
        r.finish("prekey store")?;
        Ok(store)
    }
}

fn record<S>(id: u32, created_at_ms: u64, secret: S) -> Record<S> {
    Record {
        id,
        created_at_ms,
        secret,
    }
}

fn due<S>(r: &Record<S>, now_ms: u64) -> bool {
    now_ms.saturating_sub(r.created_at_ms) >= ROTATE_AFTER_MS
}

/// Drops entries replaced more than [`RETAIN_REPLACED_MS`] ago: an entry is
/// replaced when the next one was created.
fn retire<T>(list: &mut Vec<T>, created: impl Fn(&T) -> u64, now_ms: u64) {
    let keep_from = (1..list.len())
        .rev()
        .find(|&i| now_ms.saturating_sub(created(&list[i])) >= RETAIN_REPLACED_MS)
        .unwrap_or(0);
    list.drain(..keep_from);
}

fn find<S>(list: &[Record<S>], id: u32) -> Result<&Record<S>, Error> {
    list.iter()
        .find(|r| r.id == id)
        .ok_or(Error::UnknownPrekey(id))
}

fn remove<S>(list: &mut Vec<Record<S>>, id: u32) -> bool {
    let before = list.len();
    list.retain(|r| r.id != id);
    list.len() != before
}

fn put_head<S>(out: &mut Vec<u8>, r: &Record<S>) {
    out.put_u32(r.id);
    out.put_u64(r.created_at_ms);
}

fn sign_ec(device: &DeviceKey, kind: PrekeyKind, id: u32, at: u64, s: &EcSecret) -> PublicPrekey {
    PublicPrekey::sign(device, kind, id, at, PrekeyPublic::Ec(s.public()))
}

fn sign_kem(device: &DeviceKey, kind: PrekeyKind, id: u32, at: u64, s: &KemSecret) -> PublicPrekey {
    PublicPrekey::sign(device, kind, id, at, PrekeyPublic::Kem(s.public()))
}

fn base_key_digest(base_key: &[u8]) -> [u8; 32] {
    Sha256::digest(base_key).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 24 * 3600 * 1000;

    #[test]
    fn first_maintain_publishes_everything_then_nothing() {
        let device = DeviceKey::generate();
        let mut store = PrekeyStore::new();
        let published = store.maintain(&device, 0);
        assert_eq!(published.len(), 2 + ONE_TIME_BATCH + KEM_ONE_TIME_BATCH);
        let mut ids: Vec<_> = published.iter().map(|p| p.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), published.len(), "ids are unique across kinds");
        for p in &published {
            p.verify(&device.public(), p.kind).unwrap();
        }
        assert!(store.maintain(&device, DAY).is_empty());
        let (spk, kem) = store.current(&device).unwrap();
        assert_eq!((&spk, &kem), (&published[0], &published[1]));
    }

    #[test]
    fn pools_drained_on_the_server_are_topped_up_and_the_held_keys_stay_bounded() {
        let device = DeviceKey::generate();
        let mut store = PrekeyStore::new();
        store.maintain(&device, 0);
        assert!(
            store
                .replenish(&device, 1, ONE_TIME_LOW, KEM_ONE_TIME_LOW)
                .is_empty(),
            "at the low marks nothing is due"
        );
        let new = store.replenish(&device, 2, 0, KEM_ONE_TIME_LOW - 1);
        let kinds = |k: PrekeyKind| new.iter().filter(|p| p.kind == k).count();
        assert_eq!(kinds(PrekeyKind::OneTime), ONE_TIME_BATCH);
        assert_eq!(
            kinds(PrekeyKind::KemOneTime),
            KEM_ONE_TIME_BATCH - KEM_ONE_TIME_LOW + 1
        );
        for p in &new {
            p.verify(&device.public(), p.kind).unwrap();
        }
        for round in 0..10 {
            store.replenish(&device, 3 + round, 0, 0);
        }
        let (one_time, kem) = store.one_time_counts();
        assert_eq!(one_time, ONE_TIME_BATCH * MAX_HELD_BATCHES);
        assert_eq!(kem, KEM_ONE_TIME_BATCH * MAX_HELD_BATCHES);
        let newest = store.one_time.last().unwrap().id;
        let back = PrekeyStore::from_bytes(&store.to_bytes()).unwrap();
        assert_eq!(back.one_time_counts(), (one_time, kem));
        assert_eq!(
            back.one_time.last().unwrap().id,
            newest,
            "the newest are kept"
        );
    }

    #[test]
    fn rotation_keeps_the_replaced_key_for_its_retention() {
        let device = DeviceKey::generate();
        let mut store = PrekeyStore::new();
        store.maintain(&device, 0);
        let first = store.current(&device).unwrap().0.id;
        let rotated = store.maintain(&device, 7 * DAY);
        assert_eq!(rotated.len(), 2, "a new signed and last-resort prekey");
        assert!(
            store
                .responder_keys(first, None, rotated[1].id, b"k")
                .is_ok()
        );
        store.maintain(&device, 37 * DAY - 1);
        assert!(
            store
                .responder_keys(first, None, rotated[1].id, b"k")
                .is_ok()
        );
        store.maintain(&device, 37 * DAY);
        assert_eq!(
            store.responder_keys(first, None, rotated[1].id, b"k").err(),
            Some(Error::UnknownPrekey(first))
        );
    }

    #[test]
    fn replenishes_below_the_threshold_and_round_trips() {
        let device = DeviceKey::generate();
        let mut store = PrekeyStore::new();
        let published = store.maintain(&device, 0);
        let spk = published[0].id;
        let kem = published[1].id;
        let one_time: Vec<_> = published
            .iter()
            .filter(|p| p.kind == PrekeyKind::OneTime)
            .map(|p| p.id)
            .collect();
        for id in &one_time[..ONE_TIME_BATCH - ONE_TIME_LOW] {
            store.responder_keys(spk, Some(*id), kem, b"k").unwrap();
            store.consume(spk, Some(*id), kem, b"k");
        }
        assert_eq!(store.one_time_counts().0, ONE_TIME_LOW);
        assert!(store.maintain(&device, 1).is_empty());
        store.consume(
            spk,
            Some(one_time[ONE_TIME_BATCH - ONE_TIME_LOW]),
            kem,
            b"k",
        );
        assert_eq!(
            store.maintain(&device, 2).len(),
            ONE_TIME_BATCH - ONE_TIME_LOW + 1
        );

        store.consume(spk, None, kem, b"base");
        assert_eq!(
            store.responder_keys(spk, None, kem, b"base").err(),
            Some(Error::Replay)
        );
        let back = PrekeyStore::from_bytes(&store.to_bytes()).unwrap();
        assert_eq!(*back.to_bytes(), *store.to_bytes());
        assert_eq!(
            back.responder_keys(spk, None, kem, b"base").err(),
            Some(Error::Replay)
        );
        assert!(PrekeyStore::from_bytes(&[9]).is_err());
        assert!(!format!("{store:?}").contains("secret"));
    }
}
