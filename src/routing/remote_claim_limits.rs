//! How many one-time prekeys of our users a neighbour may take. A claim
//! from a neighbour carries no account we could charge (the asking server
//! charges its own user, and a hostile server need not), so the home
//! server counts claimed devices per (neighbour, claimed user) and per
//! neighbour overall. Past either limit the claim is still answered, with
//! claim results that hold no one-time prekey: the asking client sets the
//! session up with the last-resort keys of the bundle (docs/PROTOCOL-v2.md
//! §5.5), so messages still flow, and the one-time keys left stay for
//! others.

use super::Router;
use super::limits::Limits;
use crate::clock::Clock;
use crate::domain::{Fingerprint, PhoneNumber};
use crate::rate::{Buckets, Rate};

/// A neighbour may take this many times the devices one account may claim
/// a minute, over all our users together.
const NEIGHBOUR_FACTOR: u64 = 10;

/// The home server's buckets of devices claimed by neighbours.
pub(super) struct NeighbourClaims {
    /// Per (neighbour, claimed user): one account's claim rate, since a
    /// neighbour asking for one user much faster than any one account may
    /// is draining that user.
    per_user: Buckets<(Fingerprint, PhoneNumber), 1>,
    /// Per neighbour, over all users.
    per_neighbour: Buckets<Fingerprint, 1>,
}

impl NeighbourClaims {
    pub(super) fn new(limits: &Limits, clock: Clock) -> Self {
        let [per_user, per_neighbour] = rates(limits);
        Self {
            per_user: Buckets::new([per_user], clock.clone()),
            per_neighbour: Buckets::new([per_neighbour], clock),
        }
    }

    /// Applies reloaded limits.
    pub(super) fn set_limits(&self, limits: &Limits) {
        let [per_user, per_neighbour] = rates(limits);
        self.per_user.set_rates([per_user]);
        self.per_neighbour.set_rates([per_neighbour]);
    }

    /// Counts `devices` claimed of `phone` by neighbour `from`; false when
    /// either limit is reached (nothing more is then counted).
    fn allow(&self, from: Fingerprint, phone: &PhoneNumber, devices: usize) -> bool {
        let cost = [devices as u64];
        self.per_user.take(&(from, phone.clone()), cost).is_ok()
            && self.per_neighbour.take(&from, cost).is_ok()
    }
}

fn rates(limits: &Limits) -> [Rate; 2] {
    let one = limits.claim_devices;
    [
        one,
        Rate::per_minute(
            one.per_minute.saturating_mul(NEIGHBOUR_FACTOR),
            one.burst.saturating_mul(NEIGHBOUR_FACTOR),
        ),
    ]
}

impl Router {
    /// Whether neighbour `from` may take one-time prekeys of `devices` of
    /// our user `phone` now; logged when not.
    pub(super) fn neighbour_may_claim(
        &self,
        from: Fingerprint,
        phone: &PhoneNumber,
        devices: usize,
    ) -> bool {
        let allowed = self.neighbour_claims.allow(from, phone, devices);
        if !allowed {
            tracing::warn!(%phone, neighbour = %from.to_hex()[..16], devices,
                "a neighbour claims prekeys past its limit; answered without one-time keys");
        }
        allowed
    }
}
