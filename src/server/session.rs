//! What one connection knows about its peer: the TLS exporter value its
//! login proofs are bound to, the pending challenge, and who logged in.

use std::net::IpAddr;

use super::error::ApiError;
use crate::auth::proof::NONCE_LEN;
use crate::crypto::v2::PublicPoint;
use crate::domain::PhoneNumber;
use crate::protocol::{ErrorCode, Outbox};
use crate::routing::{Router, SessionLink};

/// Most connections from one address (an IPv4 address, an IPv6 /64) that
/// have not logged in yet; past it, a new one closes the address's oldest.
pub const MAX_PENDING_PER_ADDRESS: usize = 256;

/// One connection counted as not logged in; released on login or close.
pub type PendingSlot = crate::listen::UnprovenSlot;

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
    /// key, proved under the account key `account`, a fingerprint in hex)
    /// and makes it reachable for live push, unless `phone` has the most
    /// sessions allowed already, or what was proved no longer holds: the
    /// account's key was replaced, or the device (proved with
    /// `device_key`) removed, while the proof was being checked.
    pub async fn log_in(
        &mut self,
        router: &Router,
        phone: PhoneNumber,
        device: u32,
        account: String,
        device_key: Option<&PublicPoint>,
    ) -> Result<(), ApiError> {
        let link = router.session_joined(phone.clone(), device, account, self.outbox.clone())?;
        self.hold(router, link, device_key).await
    }

    /// [`Session::log_in`] for a registration whose key `account` just
    /// replaced `phone`'s old one: the old key's sessions, here closed
    /// already and on the other members closing, leave it room.
    pub async fn log_in_new_key(
        &mut self,
        router: &Router,
        phone: PhoneNumber,
        account: String,
    ) -> Result<(), ApiError> {
        let link = router.new_key_session_joined(phone, account, self.outbox.clone())?;
        self.hold(router, link, None).await
    }

    /// Keeps the session `link` just joined as, if what it proved still
    /// holds.
    async fn hold(
        &mut self,
        router: &Router,
        link: SessionLink,
        device_key: Option<&PublicPoint>,
    ) -> Result<(), ApiError> {
        let (phone, device) = (link.phone().clone(), link.device());
        if !router.login_holds(&link, device_key).await? {
            router.session_left(&link);
            return Err(outdated_login(&phone, device));
        }
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

/// The refusal of a login whose key stopped being current while its proof
/// was checked: what a login started now would be told.
fn outdated_login(phone: &PhoneNumber, device: u32) -> ApiError {
    match device {
        0 => ApiError::new(
            ErrorCode::BadSignature,
            format!(
                "{phone} was registered again with another key while this login was checked; log in with the new key"
            ),
        ),
        _ => ApiError::new(
            ErrorCode::UnknownDevice,
            format!("{phone} has no device {device} in its current list"),
        ),
    }
}
