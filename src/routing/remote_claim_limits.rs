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
        let burst = limits.claim_devices.burst as usize;
        assert!((0..burst).all(|_| claims.allow(a, &carol, 1)));
        assert!(!claims.allow(a, &carol, 1), "past the burst for one user");
        assert!(claims.allow(b, &carol, 1), "another neighbour has its own");
        // Over many users, the neighbour's overall bucket ends it.
        let mut allowed = burst;
        for n in 0..100 {
            let user = phone(&format!("+1202555{n:04}"));
            while claims.allow(a, &user, 8) {
                allowed += 8;
            }
        }
        let overall = (limits.claim_devices.burst * NEIGHBOUR_FACTOR) as usize;
        assert!(allowed <= overall && allowed + 8 > overall, "{allowed}");
        clock.advance_ms(60_000);
        assert!(claims.allow(a, &carol, 1), "refilled a minute later");
    }
}
