//! Accepting TCP connections without leaving any in the listen backlog.
//! A process out of file descriptors cannot accept, and connections then
//! wait unseen until their clients give up. [`Listener`] keeps one
//! descriptor in reserve: when accepting fails for want of descriptors, it
//! gives the reserve up for a moment to accept a waiting connection and
//! close it at once, so that client learns at once, and logs a warning at
//! most every [`WARN_EVERY`]. Connections past a server's own limits are
//! turned away by its accept loops in the same spirit, and [`Unproven`]
//! keeps connections that have not proved who they are from holding slots
//! against those that will.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::domain::ClientPrefix;
use crate::telemetry::Throttle;

/// Shortest interval between two warnings about connections turned away.
pub const WARN_EVERY: Duration = Duration::from_secs(10);
/// Pause after an accept error that shedding cannot clear, so the loop does
/// not spin.
const BACK_OFF: Duration = Duration::from_millis(50);

/// A listening socket that never leaves connections waiting unseen.
pub struct Listener {
    inner: TcpListener,
    reserve: Option<File>,
    /// What the warnings call this listener ("client", "link").
    name: &'static str,
    warn: Throttle,
}

impl Listener {
    pub fn new(inner: TcpListener, name: &'static str) -> Self {
        Self {
            inner,
            reserve: open_reserve(),
            name,
            warn: Throttle::new(WARN_EVERY),
        }
    }

    /// The next connection. Those that cannot be served for want of file
    /// descriptors are accepted and closed here.
    pub async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            match self.inner.accept().await {
                Ok(accepted) => {
                    if self.reserve.is_none() {
                        self.reserve = open_reserve();
                    }
                    return accepted;
                }
                Err(e) if out_of_descriptors(&e) => self.shed(&e).await,
                Err(e) => {
                    if let Some(held_back) = self.warn.ready() {
                        tracing::warn!(listener = self.name, error = %e, held_back, "accept failed");
                    }
                    tokio::time::sleep(BACK_OFF).await;
                }
            }
        }
    }

    /// Accepts one waiting connection with the reserve descriptor and
    /// closes it.
    async fn shed(&mut self, e: &std::io::Error) {
        let freed = self.reserve.take().is_some();
        let closed = freed && matches!(self.inner.accept().now_or_never(), Some(Ok(_)));
        self.reserve = open_reserve();
        if let Some(held_back) = self.warn.ready() {
            tracing::warn!(
                listener = self.name,
                error = %e,
                held_back,
                "out of file descriptors: closing new connections at once (raise ulimit -n, or lower server.max_connections)"
            );
        }
        if !closed {
            tokio::time::sleep(BACK_OFF).await;
        }
    }
}

/// How long a new connection waits for the slot of the connection it had
/// closed to make room: that connection's task ends as soon as it sees it
/// was closed, so this is only a bound, never a pause.
pub const EVICTION_WAIT: Duration = Duration::from_secs(1);

/// The connections of a listener (or of the listeners that share its
/// slots) that have not proved who they are yet: on the client port and
/// `/ws` until they log in, on the link port until their TLS handshake
/// shows a configured key. Each is counted against its address (an IPv4
/// address, an IPv6 /64: [`ClientPrefix`]) and kept in the order it came.
///
/// A connection that has proved nothing yields to one that may: a new
/// connection from an address at its limit closes one of that address's
/// unproven ones (and takes its slot when every slot is taken:
/// [`Unproven::evict_own`]; it never closes another address's, even when
/// all of its own are closing already), and a new connection from an
/// address under its limit that finds every slot taken closes one of all
/// ([`Unproven::evict_first`]): the least proved ([`Proof`]), the oldest
/// of them. Idle strangers, however many addresses they hold, then only
/// delay a newcomer, and connections that have proved who they are are
/// never closed to make room.
pub struct Unproven {
    max_per_address: usize,
    /// Most connections ranked above [`Proof::Nothing`] at once.
    max_ranked: usize,
    state: Mutex<Registry>,
}

/// How much an unproven connection has shown of itself, least first:
/// a newcomer closes one of the least proved, the oldest of them.
/// Sending a request is no step up: a `challenge` costs nothing, and a
/// stranger whose connections had all sent one would see every real
/// client, still in its handshake, closed before them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Proof {
    /// Has shown nothing that costs its sender anything.
    Nothing,
    /// Was sent a code it is to prove it received (`register`, then
    /// `verify`): a user reading the code on the same connection. Codes
    /// are rate-limited per address and per phone, and at most half the
    /// registry's room ([`Unproven::new`]) is kept this way, so the rest
    /// always turns over oldest first.
    AwaitingCode,
}

struct Entry {
    prefix: ClientPrefix,
    token: CancellationToken,
    proof: Proof,
    /// False once it was told to close, while it lets go.
    open: bool,
}

#[derive(Default)]
struct Registry {
    /// Start order: the number the next connection gets.
    next: u64,
    /// Every counted connection, by its number.
    all: BTreeMap<u64, Entry>,
    /// Those not told to close yet, in the order a newcomer closes them:
    /// least proved first, then oldest first.
    open: BTreeSet<(Proof, u64)>,
    /// Every counted connection, by address.
    by_prefix: HashMap<ClientPrefix, BTreeSet<u64>>,
}

impl Registry {
    /// How many connections of `prefix` are counted, and how many of them
    /// were closed and are letting go.
    fn counts(&self, prefix: ClientPrefix) -> (usize, usize) {
        let Some(set) = self.by_prefix.get(&prefix) else {
            return (0, 0);
        };
        let closing = set.iter().filter(|n| !self.all[n].open).count();
        (set.len(), closing)
    }

    /// The connection of `prefix` a newcomer from it closes: the least
    /// proved of those not closed yet, the oldest of them.
    fn first_open_of(&self, prefix: ClientPrefix) -> Option<u64> {
        let set = self.by_prefix.get(&prefix)?;
        set.iter()
            .filter(|n| self.all[n].open)
            .min_by_key(|n| (self.all[n].proof, **n))
            .copied()
    }

    /// Tells connection `n` to close. It stays counted, against its
    /// address too, until its task ends and drops its slot.
    fn evict(&mut self, n: u64) {
        if let Some(entry) = self.all.get_mut(&n)
            && entry.open
        {
            entry.open = false;
            self.open.remove(&(entry.proof, n));
            entry.token.cancel();
        }
    }

    /// Records that connection `n` has shown `proof`, if that is more and
    /// fewer than `max_ranked` open connections have shown as much.
    fn proved(&mut self, n: u64, proof: Proof, max_ranked: usize) {
        let ranked = self.open.range((proof, 0)..).count();
        if ranked < max_ranked
            && let Some(entry) = self.all.get_mut(&n)
            && entry.open
            && proof > entry.proof
        {
            self.open.remove(&(entry.proof, n));
            self.open.insert((proof, n));
            entry.proof = proof;
        }
    }

    /// Forgets connection `n`, once its task has let it go.
    fn forget(&mut self, n: u64) {
        let Some(entry) = self.all.remove(&n) else {
            return;
        };
        self.open.remove(&(entry.proof, n));
        if let Some(set) = self.by_prefix.get_mut(&entry.prefix) {
            set.remove(&n);
            if set.is_empty() {
                self.by_prefix.remove(&entry.prefix);
            }
        }
    }
}

impl Unproven {
    /// A registry that lets at most `max_per_address` connections of one
    /// address wait unproven at once, for a listener of `slots` slots: at
    /// most half of them rank above [`Proof::Nothing`].
    pub fn new(max_per_address: usize, slots: usize) -> Arc<Self> {
        Arc::new(Self {
            max_per_address,
            max_ranked: slots / 2,
            state: Mutex::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a new connection from `peer` as unproven. When its address
    /// already has the most allowed, the least proved of them (the oldest
    /// of those) is closed to make room, and the second value is true.
    /// `None` when the address's connections that were closed and have not
    /// let go yet fill its limit by themselves: until they do, it gets no
    /// more.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<(UnprovenSlot, bool)> {
        let prefix = ClientPrefix::of(peer);
        let token = CancellationToken::new();
        let mut registry = self.lock();
        let (counted, closing) = registry.counts(prefix);
        if closing >= self.max_per_address {
            return None;
        }
        let evicted = counted >= self.max_per_address;
        if evicted {
            // Open ones exist: fewer than `counted` are closing.
            let first = registry.first_open_of(prefix)?;
            registry.evict(first);
        }
        let n = registry.next;
        registry.next += 1;
        let entry = Entry {
            prefix,
            token: token.clone(),
            proof: Proof::Nothing,
            open: true,
        };
        registry.all.insert(n, entry);
        registry.open.insert((Proof::Nothing, n));
        registry.by_prefix.entry(prefix).or_default().insert(n);
        let slot = UnprovenSlot {
            owner: self.clone(),
            n,
            closed: token,
        };
        Some((slot, evicted))
    }

    /// Closes the least proved of the unproven connections of `peer`'s
    /// address not closed yet (the oldest of them) when that address has
    /// the most allowed, those closed and letting go included: a newcomer
    /// from it is to take that one's slot, never another address's.
    pub fn evict_own(&self, peer: IpAddr) -> Own {
        let prefix = ClientPrefix::of(peer);
        let mut registry = self.lock();
        if registry.counts(prefix).0 < self.max_per_address {
            return Own::UnderLimit;
        }
        let Some(first) = registry.first_open_of(prefix) else {
            return Own::AllClosing;
        };
        registry.evict(first);
        Own::Closed
    }

    /// Closes the least proved unproven connection not closed yet (the
    /// oldest of them), to free its slot for a new one; false when there is
    /// none (every slot is held by connections that have proved who they
    /// are, or that were closed and are letting go).
    pub fn evict_first(&self) -> bool {
        let mut registry = self.lock();
        let Some(&(_, first)) = registry.open.first() else {
            return false;
        };
        registry.evict(first);
        true
    }
}

/// What [`Unproven::evict_own`] did for a newcomer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Own {
    /// Its address is under its limit: it may make room like any other.
    UnderLimit,
    /// One of its address's connections was closed for it.
    Closed,
    /// Its address is at its limit with connections that were all closed
    /// already and are letting go: it may only wait for their slots.
    AllClosing,
}

/// One connection counted as unproven; it stops counting when dropped
/// (once it has proved who it is, or when it closes).
pub struct UnprovenSlot {
    owner: Arc<Unproven>,
    n: u64,
    closed: CancellationToken,
}

impl UnprovenSlot {
    /// Cancelled when the connection was closed to make room for another:
    /// its task then ends at once, giving its slot back.
    pub fn evicted(&self) -> CancellationToken {
        self.closed.clone()
    }

    /// Records that the connection has shown `proof`: it is closed after
    /// those that have shown less.
    pub fn proved(&self, proof: Proof) {
        self.owner
            .lock()
            .proved(self.n, proof, self.owner.max_ranked);
    }
}

impl Drop for UnprovenSlot {
    fn drop(&mut self) {
        self.owner.lock().forget(self.n);
    }
}

/// Most new connections of a listener (or of the listeners that share
/// its slots) waiting at once, each in its own task, for the slot of a
/// connection closed for it. Past it a new connection is turned away at
/// once: waiting tasks cannot pile up, and a flood of connects is refused,
/// not queued.
pub const MAX_WAITING: usize = 64;

/// What a new connection holds as its accept loop hands it to its task,
/// taken without waiting: a free slot, or one of [`MAX_WAITING`] places
/// to wait for one in ([`Claim::slot`]).
pub enum Claim {
    Free(OwnedSemaphorePermit),
    Wait(OwnedSemaphorePermit),
}

impl Claim {
    /// A free slot of `slots`, else a place among `waiting`; `None` when
    /// both are taken.
    pub fn take(slots: &Arc<Semaphore>, waiting: &Arc<Semaphore>) -> Option<Self> {
        if let Ok(permit) = slots.clone().try_acquire_owned() {
            return Some(Self::Free(permit));
        }
        waiting.clone().try_acquire_owned().ok().map(Self::Wait)
    }

    /// The slot of a connection from `peer`, waited for in its own task:
    /// the accept loop never waits for one.
    pub async fn slot(self, slots: &Arc<Semaphore>, unproven: &Unproven, peer: IpAddr) -> Slot {
        match self {
            Self::Free(permit) => Slot::Free(permit),
            Self::Wait(_waiting) => slot_or_evict(slots, unproven, peer).await,
        }
    }
}

/// What [`slot_or_evict`] found.
pub enum Slot {
    Free(OwnedSemaphorePermit),
    /// Free once unproven connections were closed for it.
    Freed(OwnedSemaphorePermit),
    /// Free once the oldest unproven connection of its own address was
    /// closed for it: the address was at its limit.
    FreedOwn(OwnedSemaphorePermit),
    /// No slot: every one is held by a connection that has proved who it
    /// is, or by one that was closed and has not let go yet; or the
    /// address is at its limit and none of its own freed one in time.
    Full,
}

/// One of `slots` for a new connection from `peer`: a free one, or else
/// the one an unproven connection gives back when closed for it. The
/// address's own limit comes first: a newcomer from an address at it
/// (counting its connections closed and letting go) never closes another
/// address's connection ([`own_slot`]). Otherwise the oldest of all
/// `unproven` is closed; one that does not let go within
/// [`EVICTION_WAIT`] is left to end alone, and the next oldest is closed,
/// until none is left to close.
pub async fn slot_or_evict(slots: &Arc<Semaphore>, unproven: &Unproven, peer: IpAddr) -> Slot {
    if let Ok(permit) = slots.clone().try_acquire_owned() {
        return Slot::Free(permit);
    }
    match unproven.evict_own(peer) {
        Own::UnderLimit => {}
        own => return own_slot(slots, unproven, peer, own).await,
    }
    while unproven.evict_first() {
        if let Some(permit) = freed(slots).await {
            return Slot::Freed(permit);
        }
    }
    Slot::Full
}

/// The slot of a newcomer from an address at its limit, once `own` was
/// done for it: it waits for a slot given back by its address's closing
/// connections. When none comes within [`EVICTION_WAIT`] (the one freed
/// went to an earlier newcomer, or the one closed did not let go), it
/// closes another of its own while any is open, and is turned away once
/// none is: a burst from one address, however many of its connections
/// are already letting go, never closes another address's.
async fn own_slot(slots: &Arc<Semaphore>, unproven: &Unproven, peer: IpAddr, mut own: Own) -> Slot {
    while own != Own::UnderLimit {
        if let Some(permit) = freed(slots).await {
            return Slot::FreedOwn(permit);
        }
        if own == Own::AllClosing {
            break;
        }
        own = unproven.evict_own(peer);
    }
    Slot::Full
}

/// A slot given back within [`EVICTION_WAIT`].
async fn freed(slots: &Arc<Semaphore>) -> Option<OwnedSemaphorePermit> {
    match tokio::time::timeout(EVICTION_WAIT, slots.clone().acquire_owned()).await {
        Ok(Ok(permit)) => Some(permit),
        _ => None,
    }
}

fn open_reserve() -> Option<File> {
    File::open("/dev/null").ok()
}

fn out_of_descriptors(e: &std::io::Error) -> bool {
    use rustix::io::Errno;
    matches!(
        Errno::from_io_error(e),
        Some(Errno::MFILE | Errno::NFILE | Errno::NOBUFS | Errno::NOMEM)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A host that picks a new address in its /64 for each connection
    /// still counts as one address: past its limit its oldest connection
    /// is closed, and no other address's.
    #[test]
    fn an_address_past_its_limit_loses_its_oldest() {
        let unproven = Unproven::new(2, 16);
        let (first, _) = unproven.admit(ip("2001:db8:1:2::1")).unwrap();
        let (other, _) = unproven.admit(ip("192.0.2.7")).unwrap();
        let (second, _) = unproven.admit(ip("2001:db8:1:2::2")).unwrap();
        let (third, evicted) = unproven.admit(ip("2001:db8:1:2:ffff::3")).unwrap();
        assert!(evicted, "the address was at its limit");
        assert!(first.evicted().is_cancelled(), "the oldest is closed");
        assert!(!second.evicted().is_cancelled());
        assert!(!third.evicted().is_cancelled());
        assert!(!other.evicted().is_cancelled(), "other addresses are left");
        let (_, evicted) = unproven.admit(ip("2001:db8:1:3::1")).unwrap();
        assert!(!evicted, "another /64 is another address");
    }

    /// A closed connection counts against its address until its task
    /// lets it go: an address whose closed connections fill its limit
    /// gets no more, and none of them is closed twice.
    #[test]
    fn closed_connections_count_until_they_let_go() {
        let unproven = Unproven::new(2, 16);
        let (first, _) = unproven.admit(ip("192.0.2.1")).unwrap();
        let (second, _) = unproven.admit(ip("192.0.2.1")).unwrap();
        let (third, evicted) = unproven.admit(ip("192.0.2.1")).unwrap();
        assert!(evicted && first.evicted().is_cancelled());
        let (fourth, evicted) = unproven.admit(ip("192.0.2.1")).unwrap();
        assert!(evicted && second.evicted().is_cancelled());
        assert!(
            unproven.admit(ip("192.0.2.1")).is_none(),
            "two closed and not let go fill the address's limit"
        );
        assert!(!third.evicted().is_cancelled() && !fourth.evicted().is_cancelled());
        drop(first);
        let (_, evicted) = unproven.admit(ip("192.0.2.1")).unwrap();
        assert!(evicted && third.evicted().is_cancelled());
        drop((second, third));
        assert!(unproven.evict_first(), "fourth is still open");
        assert!(fourth.evicted().is_cancelled());
    }

    /// Across addresses, connections are closed oldest first; those that
    /// proved who they are are not there to be closed.
    #[test]
    fn the_oldest_of_all_goes_first() {
        let unproven = Unproven::new(4, 16);
        let (a, _) = unproven.admit(ip("192.0.2.1")).unwrap();
        let (proved, _) = unproven.admit(ip("192.0.2.2")).unwrap();
        let (b, _) = unproven.admit(ip("192.0.2.3")).unwrap();
        let (c, _) = unproven.admit(ip("192.0.2.1")).unwrap();
        drop(proved);
        assert!(unproven.evict_first());
        assert!(a.evicted().is_cancelled());
        assert!(!b.evicted().is_cancelled());
        assert!(unproven.evict_first());
        assert!(b.evicted().is_cancelled());
        assert!(!c.evicted().is_cancelled());
        assert!(unproven.evict_first());
        assert!(c.evicted().is_cancelled());
        assert!(!unproven.evict_first(), "nothing unproven is left");
    }

    /// A new connection takes a free slot, else the slot of the oldest
    /// unproven connection once that one's task lets it go, else none.
    #[tokio::test]
    async fn a_full_listener_frees_the_oldest_unproven_slot() {
        let slots = Arc::new(Semaphore::new(1));
        let unproven = Unproven::new(4, 16);
        let Slot::Free(permit) = slot_or_evict(&slots, &unproven, ip("192.0.2.9")).await else {
            panic!("the first slot is free");
        };
        let (held, _) = unproven.admit(ip("192.0.2.1")).unwrap();
        let closed = held.evicted();
        let task = tokio::spawn(async move {
            closed.cancelled().await;
            drop((held, permit));
        });
        let Slot::Freed(permit) = slot_or_evict(&slots, &unproven, ip("192.0.2.9")).await else {
            panic!("the unproven connection makes room");
        };
        task.await.unwrap();
        assert!(matches!(
            slot_or_evict(&slots, &unproven, ip("192.0.2.9")).await,
            Slot::Full
        ));
        drop(permit);
    }

    /// With every slot taken, a newcomer from an address at its own limit
    /// takes the slot of that address's oldest connection: no other
    /// address's connection is closed for it, and no second one of its own.
    #[tokio::test]
    async fn an_address_at_its_limit_makes_room_with_its_own() {
        let slots = Arc::new(Semaphore::new(3));
        let unproven = Unproven::new(2, 16);
        let mut held = Vec::new();
        for peer in ["192.0.2.1", "192.0.2.2", "192.0.2.2"] {
            let permit = slots.clone().try_acquire_owned().unwrap();
            let (slot, _) = unproven.admit(ip(peer)).unwrap();
            let closed = slot.evicted();
            held.push(closed.clone());
            tokio::spawn(async move {
                closed.cancelled().await;
                drop((slot, permit));
            });
        }
        let Slot::FreedOwn(_permit) = slot_or_evict(&slots, &unproven, ip("192.0.2.2")).await
        else {
            panic!("the address's own oldest makes room");
        };
        let (_newcomer, evicted) = unproven.admit(ip("192.0.2.2")).unwrap();
        let closed: Vec<_> = held.iter().map(|t| t.is_cancelled()).collect();
        assert_eq!(
            closed,
            [false, true, false],
            "only its own oldest is closed"
        );
        assert!(!evicted, "its room was made already");
    }

    /// Holds a slot and an unproven place for `peer` in a task that lets
    /// both go as soon as the connection is closed; the token tells
    /// whether it was.
    fn hold(slots: &Arc<Semaphore>, unproven: &Arc<Unproven>, peer: &str) -> CancellationToken {
        let permit = slots.clone().try_acquire_owned().unwrap();
        let (slot, _) = unproven.admit(ip(peer)).unwrap();
        let closed = slot.evicted();
        let token = closed.clone();
        tokio::spawn(async move {
            closed.cancelled().await;
            drop((slot, permit));
        });
        token
    }

    /// Several newcomers at once from an address at its limit, every slot
    /// taken: they close its own connections, and the one that finds
    /// them all closing already waits for their slots and is turned away,
    /// never closing the other address's connection.
    #[tokio::test(start_paused = true)]
    async fn a_burst_from_an_address_at_its_limit_leaves_others_alone() {
        let slots = Arc::new(Semaphore::new(3));
        let unproven = Unproven::new(2, 16);
        let own = [
            hold(&slots, &unproven, "192.0.2.1"),
            hold(&slots, &unproven, "192.0.2.1"),
        ];
        let other = hold(&slots, &unproven, "192.0.2.2");
        let burst = (0..3).map(|_| slot_or_evict(&slots, &unproven, ip("192.0.2.1")));
        let slots_got = futures::future::join_all(burst).await;
        assert!(own.iter().all(CancellationToken::is_cancelled));
        assert!(
            !other.is_cancelled(),
            "another address's connection is left"
        );
        let freed_own = slots_got.iter().filter(|s| matches!(s, Slot::FreedOwn(_)));
        let full = slots_got.iter().filter(|s| matches!(s, Slot::Full));
        assert_eq!((freed_own.count(), full.count()), (2, 1));
    }

    /// When the slot its own closed connection gave back goes to an
    /// earlier waiter, a newcomer from an address at its limit is turned
    /// away rather than closing another address's connection.
    #[tokio::test(start_paused = true)]
    async fn a_slot_taken_by_an_earlier_waiter_closes_no_other() {
        let slots = Arc::new(Semaphore::new(2));
        let unproven = Unproven::new(1, 16);
        let own = hold(&slots, &unproven, "192.0.2.1");
        let other = hold(&slots, &unproven, "192.0.2.2");
        let earlier = tokio::spawn(slots.clone().acquire_owned());
        tokio::task::yield_now().await;
        let newcomer = slot_or_evict(&slots, &unproven, ip("192.0.2.1")).await;
        assert!(matches!(newcomer, Slot::Full));
        assert!(own.is_cancelled());
        assert!(
            !other.is_cancelled(),
            "another address's connection is left"
        );
        assert!(earlier.await.unwrap().is_ok(), "the earlier waiter got it");
    }

    /// A closed connection that does not let go of its slot does not keep
    /// a newcomer out while others could be closed: after
    /// [`EVICTION_WAIT`] the next oldest is closed.
    #[tokio::test(start_paused = true)]
    async fn one_that_does_not_let_go_is_passed_over() {
        let slots = Arc::new(Semaphore::new(2));
        let unproven = Unproven::new(4, 16);
        let mut tasks = Vec::new();
        for lets_go in [false, true] {
            let permit = slots.clone().try_acquire_owned().unwrap();
            let (held, _) = unproven.admit(ip("192.0.2.1")).unwrap();
            let closed = held.evicted();
            tasks.push(tokio::spawn(async move {
                closed.cancelled().await;
                if lets_go {
                    drop((held, permit));
                } else {
                    std::future::pending::<()>().await;
                }
            }));
        }
        let Slot::Freed(_permit) = slot_or_evict(&slots, &unproven, ip("192.0.2.9")).await else {
            panic!("the second oldest makes room when the oldest does not");
        };
        assert!(matches!(
            slot_or_evict(&slots, &unproven, ip("192.0.2.9")).await,
            Slot::Full
        ));
        for task in tasks {
            task.abort();
        }
    }

    /// With every slot taken, a new connection gets a place to wait in its
    /// own task, and past [`MAX_WAITING`] of them it is refused at once:
    /// neither waits in the accept loop.
    #[test]
    fn past_the_waiting_places_a_connection_is_refused_at_once() {
        let slots = Arc::new(Semaphore::new(1));
        let waiting = Arc::new(Semaphore::new(MAX_WAITING));
        let Some(Claim::Free(_held)) = Claim::take(&slots, &waiting) else {
            panic!("the first slot is free");
        };
        let claims: Vec<_> = (0..MAX_WAITING)
            .map(|i| match Claim::take(&slots, &waiting) {
                Some(Claim::Wait(place)) => place,
                _ => panic!("connection {i} may wait"),
            })
            .collect();
        assert!(Claim::take(&slots, &waiting).is_none());
        drop(claims);
        assert!(matches!(
            Claim::take(&slots, &waiting),
            Some(Claim::Wait(_))
        ));
    }

    /// A user reading a code sent to them is closed after the others,
    /// which go oldest first; but at most half the slots rank so, or a
    /// stranger with codes could leave real clients a pool that turns
    /// over at once.
    #[test]
    fn a_user_reading_a_code_goes_last_within_bounds() {
        let unproven = Unproven::new(8, 4);
        let (verifying, _) = unproven.admit(ip("192.0.2.1")).unwrap();
        let (old, _) = unproven.admit(ip("192.0.2.1")).unwrap();
        let (also_verifying, _) = unproven.admit(ip("192.0.2.2")).unwrap();
        let (past_the_bound, _) = unproven.admit(ip("192.0.2.3")).unwrap();
        let (new, _) = unproven.admit(ip("192.0.2.1")).unwrap();
        verifying.proved(Proof::AwaitingCode);
        also_verifying.proved(Proof::AwaitingCode);
        past_the_bound.proved(Proof::AwaitingCode);
        for (closed, left) in [(&old, &new), (&past_the_bound, &new)] {
            assert!(unproven.evict_first());
            assert!(closed.evicted().is_cancelled());
            assert!(!left.evicted().is_cancelled());
        }
        assert!(unproven.evict_first());
        assert!(new.evicted().is_cancelled());
        assert!(!verifying.evicted().is_cancelled());
        assert!(unproven.evict_first());
        assert!(verifying.evicted().is_cancelled(), "then oldest first");
        assert!(!also_verifying.evicted().is_cancelled());
    }
}
