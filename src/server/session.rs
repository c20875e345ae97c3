//! What one connection knows about its peer: the TLS exporter value its
//! login proofs are bound to, the pending challenge, and who logged in.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use super::error::ApiError;
use crate::auth::proof::NONCE_LEN;
use crate::domain::PhoneNumber;
use crate::protocol::{ErrorCode, Outbox};
use crate::routing::{Router, SessionLink};

/// Counts connections that have not logged in yet, per address, so one
/// address cannot hold every slot without ever proving who it is.
#[derive(Default)]
pub struct PendingLogins {
    by_address: Mutex<HashMap<IpAddr, usize>>,
}

/// Most connections from one address that have not logged in yet.
pub const MAX_PENDING_PER_ADDRESS: usize = 256;

impl PendingLogins {
    /// Counts a new connection from `ip`, or refuses it when that address
    /// already has too many waiting.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<PendingSlot> {
        let mut map = self.by_address.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(ip).or_default();
        if *n >= MAX_PENDING_PER_ADDRESS {
            return None;
        }
        *n += 1;
        Some(PendingSlot {
            owner: self.clone(),
            ip,
        })
    }
}

/// One connection counted as not logged in; released on login or close.
pub struct PendingSlot {
    owner: Arc<PendingLogins>,
    ip: IpAddr,
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        let mut map = self
            .owner
            .by_address
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Per-connection state, owned by the connection's task.
pub struct Session {
    /// The peer's address, as limits per address count it.
    pub peer: IpAddr,
    /// What this connection's proofs are bound to: the TLS exporter value
    /// (RFC 8446 §7.5) on the TCP port, the hello's binding on `/ws`.
    pub exporter: [u8; 32],
    /// The nonce from the last `challenge`, usable once.
    pub nonce: Option<[u8; NONCE_LEN]>,
    /// The logged-in user, as the router reaches this session.
    pub user: Option<SessionLink>,
    /// Frames to send on this connection.
    pub outbox: Outbox,
}

impl Session {
    pub fn new(peer: IpAddr, exporter: [u8; 32], outbox: Outbox) -> Self {
        Self {
            peer,
            exporter,
            nonce: None,
            user: None,
            outbox,
        }
    }

    /// The logged-in user, or the error every authenticated request gives.
    pub fn user(&self) -> Result<&SessionLink, ApiError> {
        self.user.as_ref().ok_or_else(|| {
            ApiError::new(
                ErrorCode::NotLoggedIn,
                "log in first (register, or login with your key)",
            )
        })
    }

    /// Takes the pending nonce: each challenge answers one proof.
    pub fn take_nonce(&mut self) -> Result<[u8; NONCE_LEN], ApiError> {
        self.nonce.take().ok_or_else(|| {
            ApiError::new(
                ErrorCode::NoChallenge,
                "ask for a challenge first; each one is used once",
            )
        })
    }

    /// Marks the session as `phone` (as its `device`, or 0 for the account
    /// key) and makes it reachable for live push, unless `phone` has the
    /// most sessions allowed already.
    pub fn log_in(
        &mut self,
        router: &Router,
        phone: PhoneNumber,
        device: u32,
    ) -> Result<(), ApiError> {
        let link = router.session_joined(phone.clone(), device, self.outbox.clone())?;
        self.user = Some(link);
        tracing::info!(%phone, device, "logged in");
        Ok(())
    }

    /// Takes the session out of live push when its connection ends.
    pub fn log_out(&mut self, router: &Router) {
        if let Some(user) = self.user.take() {
            router.session_left(&user);
        }
    }

    pub fn refuse_if_logged_in(&self) -> Result<(), ApiError> {
        match &self.user {
            Some(user) => Err(ApiError::new(
                ErrorCode::AlreadyLoggedIn,
                format!("this connection is already logged in as {}", user.phone()),
            )),
            None => Ok(()),
        }
    }
}
