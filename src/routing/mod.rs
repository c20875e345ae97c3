//! Where a message goes. A `send` is checked against the clear envelope
//! header and committed through the group-commit writer either to the
//! recipient's queue (their home is here) or to the outbound queue of the
//! neighbour that leads to their home. A local message is pushed to the
//! recipient's live sessions at once, while it commits (the sender is
//! answered after the commit); an outbound one wakes its link once
//! committed. Every hop does the same with messages relayed to it, so a
//! message is always held by at least one server until the next one has
//! committed it.
//!
//! [`Router`] is the one door: sessions, links and start-up call its
//! methods and never touch its state. Each concern lives in its own file:
//! `deliver` (local sends, fetch, ack, expiry), `relay` (messages to and
//! from neighbours), `directory` (who lives where, and flooding it),
//! `broadcast`, `presence` (who is online, and `list`), `registry` (live
//! sessions and the unsent bytes they may hold), `limits` (what one user may
//! send and hold), `neighbours` (live links and the keys pinned for them)
//! and `cluster` (the other members sharing our database and identity);
//! for protocol v2, `devices` (each account's signed device list, kept in
//! memory), `prekeys` (publishing, and claims that hand each one-time key
//! out once), `device_send` (one envelope per recipient device, refused
//! under an out-of-date list), `remote_devices` (other servers' users'
//! device lists and bundles, flooded with the directory), `remote_claims`
//! (claims passed to a remote user's home server and answered back) and
//! `rendezvous` (link codes' sealed
//! requests and answers passed between two devices); `operator` (what the
//! admin commands ask of a running server).
//!
//! Routing never opens an envelope: it has no key to do so.

mod broadcast;
mod cluster;
mod deliver;
mod device_send;
mod devices;
pub mod directory;
mod error;
mod limits;
mod neighbours;
mod operator;
mod outbound;
mod prekeys;
mod presence;
mod registry;
mod relay;
mod relayed_copies;
mod remote_claim_limits;
mod remote_claims;
mod remote_devices;
mod remote_refusals;
mod remote_senders;
mod rendezvous;
mod shared_rates;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use tokio::sync::{Notify, mpsc};

use crate::clock::Clock;
use crate::db::writer::Committed;
use crate::db::{DbError, Store};
use crate::domain::Fingerprint;
use crate::protocol::link::LinkMessage;
pub use deliver::{MAX_FETCH, PendingSend};
pub use device_send::DeviceSend;
use directory::Directory;
pub use error::RouteError;
pub use limits::Limits;
use neighbours::Neighbours;
pub use outbound::{Feed, Next};
pub use prekeys::MAX_PREKEYS_PER_REQUEST;
use registry::Registry;
pub use registry::SessionLink;
pub use relay::Refusal;
pub use remote_claims::CLAIM_TIMEOUT;
pub use rendezvous::{LINK_CODE_TTL_MS, MAX_LINK_MESSAGE};

/// How far ahead of our clock a neighbour's presence report or directory
/// entry may be dated (clocks differ a little; a later date would let it
/// outrank everything that follows).
const FUTURE_LIMIT_MS: i64 = 10 * 60_000;

/// Who this server is, as its neighbours and directory entries know it.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    pub fingerprint: Fingerprint,
    /// SPKI DER of the long-term key.
    pub public_key: Vec<u8>,
    /// The client address people use, e.g. "127.0.0.1:5000".
    pub name: String,
}

/// Delivery rules shared by every session and link.
pub struct Router {
    store: Store,
    registry: Registry,
    directory: Directory,
    neighbours: Neighbours,
    me: ServerInfo,
    clock: Clock,
    message_ttl_ms: i64,
    /// Replaced on a configuration reload; a std lock, never held across
    /// an await.
    limits: std::sync::RwLock<Limits>,
    senders: limits::SenderBuckets,
    claimers: limits::ClaimBuckets,
    devices: devices::DeviceLists,
    /// Users of other servers: their devices as the neighbourhood passed
    /// them on, and claims of their prekeys waiting for an answer.
    remote: remote_devices::RemoteLists,
    pending_claims: remote_claims::PendingClaims,
    /// Prekeys of our users claimed by each neighbour.
    neighbour_claims: remote_claim_limits::NeighbourClaims,
    /// Relayed messages from a device whose list is still on its way.
    waiting_senders: remote_senders::WaitingSenders,
    /// Copies relayed to each neighbour, for checking refusals.
    relayed_copies: relayed_copies::RelayedCopies,
    rendezvous: rendezvous::Rendezvous,
    presence_changed: Arc<Notify>,
    /// Users connected to the other members of a cluster.
    elsewhere: cluster::Elsewhere,
    /// What senders spent here since the other members were last told.
    spent: shared_rates::Spent,
    /// Last sequence number of our own presence reports.
    presence_seq: AtomicU64,
}

impl Router {
    /// Loads the directory and starts the router's background tasks (link
    /// wake-ups in commit order, expiry sweeps, presence announcements).
    /// They end when the router is dropped.
    pub async fn start(
        store: Store,
        committed: mpsc::UnboundedReceiver<Committed>,
        me: ServerInfo,
        clock: Clock,
        message_ttl_ms: i64,
        limits: Limits,
    ) -> Result<Arc<Self>, DbError> {
        let directory = Directory::load(&store).await?;
        let devices = devices::DeviceLists::load(&store).await?;
        let remote = remote_devices::RemoteLists::load(&store).await?;
        let members = store.listen().await?;
        let router = Arc::new(Self {
            store,
            registry: Registry::new(&limits),
            directory,
            neighbours: Neighbours::default(),
            me,
            senders: limits::sender_buckets(&limits, clock.clone()),
            claimers: limits::claim_buckets(&limits, clock.clone()),
            devices,
            remote,
            pending_claims: remote_claims::PendingClaims::default(),
            neighbour_claims: remote_claim_limits::NeighbourClaims::new(&limits, clock.clone()),
            waiting_senders: remote_senders::WaitingSenders::default(),
            relayed_copies: relayed_copies::RelayedCopies::new(clock.clone()),
            rendezvous: rendezvous::Rendezvous::default(),
            clock,
            message_ttl_ms,
            limits: std::sync::RwLock::new(limits),
            presence_changed: Arc::new(Notify::new()),
            elsewhere: cluster::Elsewhere::default(),
            spent: shared_rates::Spent::default(),
            presence_seq: AtomicU64::new(0),
        });
        router.waiting_senders.bind(&router);
        tokio::spawn(relay::wake_links(committed, Arc::downgrade(&router)));
        if let Some(events) = members {
            router.refresh_elsewhere().await?;
            tokio::spawn(cluster::follow(Arc::downgrade(&router), events));
            tokio::spawn(shared_rates::share(Arc::downgrade(&router)));
        }
        tokio::spawn(deliver::sweep_expired(Arc::downgrade(&router)));
        tokio::spawn(presence::announce(
            Arc::downgrade(&router),
            router.presence_changed.clone(),
        ));
        Ok(router)
    }

    pub fn me(&self) -> &ServerInfo {
        &self.me
    }
}

/// Encodes a link message as a frame body.
pub fn link_frame(m: &LinkMessage) -> Vec<u8> {
    serde_json::to_vec(m).expect("a link message always serialises")
}
