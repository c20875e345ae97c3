//! What one user may take of the server: how fast they may send (token
//! buckets of messages and envelope bytes, shared by all their sessions and
//! their broadcasts), how many sessions they may keep logged in, and how
//! many unsent bytes those sessions may hold.

use super::{RouteError, Router};
use crate::domain::PhoneNumber;
use crate::protocol;
use crate::rate::{Buckets, Rate};

/// The limits a [`Router`] applies to each user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Messages (and broadcasts) one sender may send.
    pub send_messages: Rate,
    /// Envelope (and broadcast text) bytes one sender may send.
    pub send_bytes: Rate,
    /// Sessions one user may have logged in at once.
    pub sessions_per_user: usize,
    /// Bytes one session may have waiting to be written (answers and
    /// pushed events); a push past it closes the session.
    pub session_backlog_bytes: usize,
    /// Bytes all of one user's sessions together may have waiting; a push
    /// past it closes the session holding the most.
    pub user_backlog_bytes: usize,
    /// Devices one account may list (protocol v2).
    pub devices_per_account: usize,
    /// Devices whose one-time prekeys one account may claim: draining
    /// another user's prekeys forces weaker, last-resort set-ups.
    pub claim_devices: Rate,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            send_messages: Rate::per_second(20, 200),
            send_bytes: Rate::per_second(2 << 20, 16 << 20),
            sessions_per_user: 8,
            session_backlog_bytes: 8 << 20,
            user_backlog_bytes: 32 << 20,
            devices_per_account: 8,
            claim_devices: Rate::per_minute(60, 60),
        }
    }
}

impl Limits {
    /// Why these limits cannot work, naming the configuration key.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let max = protocol::MAX_ENVELOPE_BYTES as u64;
        if self.send_bytes.burst < max {
            return Err((
                "limits.send_byte_burst",
                format!("must be at least {max}, the largest envelope"),
            ));
        }
        let frame = protocol::MAX_RESPONSE_FRAME;
        if self.session_backlog_bytes < frame {
            return Err((
                "limits.max_session_backlog_bytes",
                format!("must be at least {frame}, the largest response frame"),
            ));
        }
        if self.user_backlog_bytes < self.session_backlog_bytes {
            return Err((
                "limits.max_user_backlog_bytes",
                "must be at least limits.max_session_backlog_bytes".into(),
            ));
        }
        Ok(())
    }
}

/// The per-sender token buckets: messages, then bytes.
pub(super) type SenderBuckets = Buckets<PhoneNumber, 2>;

pub(super) fn sender_buckets(limits: &Limits, clock: crate::clock::Clock) -> SenderBuckets {
    Buckets::new([limits.send_messages, limits.send_bytes], clock)
}

/// The per-account token buckets of devices claimed.
pub(super) type ClaimBuckets = Buckets<PhoneNumber, 1>;

pub(super) fn claim_buckets(limits: &Limits, clock: crate::clock::Clock) -> ClaimBuckets {
    Buckets::new([limits.claim_devices], clock)
}

impl Router {
    /// The limits this router applies.
    pub fn limits(&self) -> Limits {
        *self.limits.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts one message of `bytes` against `sender`'s rate, or refuses it
    /// with the time after which it would pass.
    pub(super) fn charge_sender(
        &self,
        sender: &PhoneNumber,
        bytes: usize,
    ) -> Result<(), RouteError> {
        let cost = [1, bytes as u64];
        self.senders
            .take(sender, cost)
            .map_err(|retry_after_ms| RouteError::RateLimited {
                limits: self.limits(),
                retry_after_ms,
            })?;
        if self.store.is_shared() {
            self.spent.add(sender, cost);
        }
        Ok(())
    }

    /// Counts `devices` claimed by `account`, or refuses the claim with the
    /// time after which it would pass.
    pub(super) fn charge_claims(
        &self,
        account: &PhoneNumber,
        devices: usize,
    ) -> Result<(), RouteError> {
        self.claimers
            .take(account, [devices as u64])
            .map_err(|retry_after_ms| RouteError::ClaimsLimited {
                per_minute: self.limits().claim_devices.per_minute,
                retry_after_ms,
            })
    }
}
