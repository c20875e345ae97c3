//! How many one-time prekeys of our users a neighbour may take. A claim
//! from a neighbour carries no account we could charge (the asking server
//! charges its own user, and a hostile server need not), so the home
//! server counts claimed devices per (server the claim started at,
//! claimed user), per neighbour it came through overall, and per claimed
//! device over every claimer, local and remote. Past any limit the claim
//! is still answered, with claim results that hold no one-time prekey:
//! the asking client sets the session up with the last-resort keys of the
//! bundle (docs/PROTOCOL.md §11.5), so messages still flow, and the
//! one-time keys left stay for others.
//!
//! Charging the server a claim started at (the first on its path) rather
//! than the neighbour it came through keeps a hostile server behind an
//! honest one from spending the honest server's share. The path's first
//! element is the neighbour's word; a neighbour that lies about it is
//! still held by its own overall bucket and by the per-device budget.

use super::Router;
use super::limits::Limits;
use crate::clock::Clock;
use crate::domain::{Fingerprint, PhoneNumber};
use crate::rate::{Buckets, Rate};

/// A neighbour may take this many times the devices one account may claim
/// a minute, over all our users together.
const NEIGHBOUR_FACTOR: u64 = 10;
/// Devices of one user a server may claim at once (refilled at the rate
/// one account may claim).
const ORIGIN_BURST: u64 = 5;
/// One-time prekeys of one device that all claimers together may take
/// in a burst; refilled at one a minute (10 per 10 minutes). Past it,
/// neighbours get last-resort keys; our own users are counted but not
/// held back.
const DEVICE_BUDGET: u64 = 10;

/// The home server's buckets of devices claimed by neighbours.
pub(super) struct NeighbourClaims {
    /// Per (server the claim started at, claimed user): a small burst,
    /// since a server asking for one user much faster than any one
    /// account may is draining that user.
    per_user: Buckets<(Fingerprint, PhoneNumber), 1>,
    /// Per neighbour, over all users.
    per_neighbour: Buckets<Fingerprint, 1>,
    /// Per claimed device, over all claimers.
    per_device: Buckets<(PhoneNumber, u32), 1>,
}

impl NeighbourClaims {
    pub(super) fn new(limits: &Limits, clock: Clock) -> Self {
        let [per_user, per_neighbour] = rates(limits);
        Self {
            per_user: Buckets::new([per_user], clock.clone()),
            per_neighbour: Buckets::new([per_neighbour], clock.clone()),
            per_device: Buckets::new([Rate::per_minute(1, DEVICE_BUDGET)], clock),
        }
    }

    /// Applies reloaded limits.
    pub(super) fn set_limits(&self, limits: &Limits) {
        let [per_user, per_neighbour] = rates(limits);
        self.per_user.set_rates([per_user]);
        self.per_neighbour.set_rates([per_neighbour]);
    }

    /// Counts `devices` claimed of `phone` for server `origin` through
    /// neighbour `from`; false when either limit is reached (nothing more
    /// is then counted).
    fn allow(
        &self,
        origin: Fingerprint,
        from: Fingerprint,
        phone: &PhoneNumber,
        devices: usize,
    ) -> bool {
        let cost = [devices as u64];
        self.per_user.take(&(origin, phone.clone()), cost).is_ok()
            && self.per_neighbour.take(&from, cost).is_ok()
    }

    /// Counts one one-time prekey of `device` of `phone`; false when its
    /// budget is spent.
    pub(super) fn device_may(&self, phone: &PhoneNumber, device: u32) -> bool {
        self.per_device.take(&(phone.clone(), device), [1]).is_ok()
    }
}

fn rates(limits: &Limits) -> [Rate; 2] {
    let one = limits.claim_devices;
    [
        Rate::per_minute(one.per_minute, one.burst.min(ORIGIN_BURST)),
        Rate::per_minute(
            one.per_minute.saturating_mul(NEIGHBOUR_FACTOR),
            one.burst.saturating_mul(NEIGHBOUR_FACTOR),
        ),
    ]
}

impl Router {
    /// Whether server `origin`, through neighbour `from`, may take
    /// one-time prekeys of `devices` of our user `phone` now; logged when
    /// not.
    pub(super) fn neighbour_may_claim(
        &self,
        origin: Fingerprint,
        from: Fingerprint,
        phone: &PhoneNumber,
        devices: usize,
    ) -> bool {
        let allowed = self.neighbour_claims.allow(origin, from, phone, devices);
        if !allowed {
            tracing::warn!(%phone, neighbour = %from.to_hex()[..16], devices,
                "a neighbour claims prekeys past its limit; answered without one-time keys");
        }
        allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phone(p: &str) -> PhoneNumber {
        PhoneNumber::from_canonical(p).unwrap()
    }

    #[test]
    fn a_neighbour_is_limited_per_user_and_overall_and_refilled_with_time() {
        let clock = Clock::manual();
        let limits = Limits::default();
        let claims = NeighbourClaims::new(&limits, clock.clone());
        let (a, b) = (Fingerprint::of_spki(b"a"), Fingerprint::of_spki(b"b"));
        let carol = phone("+12025550103");
        let burst = ORIGIN_BURST as usize;
        assert!((0..burst).all(|_| claims.allow(a, a, &carol, 1)));
        assert!(
            !claims.allow(a, a, &carol, 1),
            "past the burst for one user"
        );
        assert!(
            claims.allow(b, b, &carol, 1),
            "another neighbour has its own"
        );
        assert!(claims.allow(b, a, &carol, 1), "so has a server behind one");
        // Over many users, the neighbour's overall bucket ends it.
        let mut allowed = burst + 1;
        for n in 0..200 {
            let user = phone(&format!("+1202555{n:04}"));
            while claims.allow(a, a, &user, 1) {
                allowed += 1;
            }
        }
        let overall = (limits.claim_devices.burst * NEIGHBOUR_FACTOR) as usize;
        assert_eq!(allowed, overall);
        clock.advance_ms(60_000);
        assert!(claims.allow(b, a, &carol, 1), "refilled a minute later");
    }

    #[test]
    fn a_device_budget_is_shared_by_every_claimer() {
        let clock = Clock::manual();
        let claims = NeighbourClaims::new(&Limits::default(), clock.clone());
        let carol = phone("+12025550103");
        assert!((0..DEVICE_BUDGET).all(|_| claims.device_may(&carol, 1)));
        assert!(!claims.device_may(&carol, 1), "spent");
        assert!(claims.device_may(&carol, 2), "another device has its own");
        clock.advance_ms(60_000);
        assert!(claims.device_may(&carol, 1), "one more a minute later");
    }
}
