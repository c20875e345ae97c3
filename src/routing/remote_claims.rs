//! Claims for users of other servers: a `claim` is passed hop by hop along
//! the directory's route to the user's home server, which hands out each
//! one-time prekey once (the same statement as a local claim, so two
//! servers claiming at once get different keys) and sends the answer back
//! along the path the claim took. The asking server waits a bounded time
//! for it; middle hops keep no state.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::oneshot;

use super::{RouteError, Router, link_frame};
use crate::crypto::v2::MAX_LIST_DEVICES;
use crate::domain::{Fingerprint, PhoneNumber};
use crate::protocol::B64;
use crate::protocol::link::{ClaimAnswer, ClaimRequest, LinkMessage, MAX_HOPS};

/// How long the asking server waits for the home server's answer.
pub const CLAIM_TIMEOUT: Duration = Duration::from_secs(10);

/// Claims asked of other servers and not yet answered, by request number.
/// A std mutex: nothing awaits while it is held.
#[derive(Default)]
pub(super) struct PendingClaims {
    waiting: Mutex<HashMap<u64, oneshot::Sender<ClaimAnswer>>>,
}

impl PendingClaims {
    /// A fresh request number (random, so an answer to a claim made before a
    /// restart cannot be taken for one made after) and its answer's receiver.
    fn open(&self) -> (u64, oneshot::Receiver<ClaimAnswer>) {
        use rand::TryRng;
        let (tx, rx) = oneshot::channel();
        let mut waiting = self.lock();
        loop {
            let request = rand::rngs::SysRng
                .try_next_u64()
                .expect("the operating system's random generator failed");
            if let std::collections::hash_map::Entry::Vacant(slot) = waiting.entry(request) {
                slot.insert(tx);
                return (request, rx);
            }
        }
    }

    fn close(&self, request: u64) -> Option<oneshot::Sender<ClaimAnswer>> {
        self.lock().remove(&request)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<ClaimAnswer>>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Whether `path` is well formed for a frame from `from`: fingerprints only,
/// not too long, and without this server.
fn path_ok(path: &[String], me: &str) -> bool {
    path.len() < MAX_HOPS
        && !path.iter().any(|p| p == me)
        && path
            .iter()
            .all(|p| p.len() == 64 && Fingerprint::parse(p).is_some())
}

impl Router {
    /// Asks `phone`'s home server, through neighbour `via`, for one-time
    /// prekeys of `devices`, and waits for its answer.
    pub(super) async fn claim_remote(
        &self,
        via: Fingerprint,
        phone: &PhoneNumber,
        devices: &[u32],
    ) -> Result<Vec<Vec<u8>>, RouteError> {
        let (request, answer) = self.pending_claims.open();
        let claim = ClaimRequest {
            request,
            phone: phone.as_str().to_owned(),
            devices: devices.to_vec(),
            path: vec![self.me.fingerprint.to_hex()],
        };
        if !self
            .neighbours
            .send_to(via, link_frame(&LinkMessage::Claim(claim)))
        {
            self.pending_claims.close(request);
            return Err(RouteError::HomeUnreachable(phone.clone()));
        }
        let answer = match tokio::time::timeout(CLAIM_TIMEOUT, answer).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) | Err(_) => {
                self.pending_claims.close(request);
                return Err(RouteError::ClaimTimeout(phone.clone()));
            }
        };
        match (answer.claims, answer.code) {
            (Some(claims), None) if claims.len() == devices.len() => {
                Ok(claims.into_iter().map(|B64(c)| c).collect())
            }
            (_, Some(code)) => Err(RouteError::RemoteRefused {
                code,
                message: answer.message.unwrap_or_default(),
            }),
            _ => Err(RouteError::BadRemoteAnswer(phone.clone())),
        }
    }

    /// Takes a claim from neighbour `from`: answers it if the user lives
    /// here, else passes it on towards their home.
    pub async fn claim_in(&self, from: Fingerprint, mut c: ClaimRequest) {
        let me = self.me.fingerprint.to_hex();
        if !path_ok(&c.path, &me) || c.path.last() != Some(&from.to_hex()) {
            return tracing::warn!("a neighbour sent a claim with a malformed path; dropped");
        }
        let outcome = self.claim_or_forward(from, &c).await;
        let Some(outcome) = outcome else {
            return;
        };
        c.path.push(me);
        let answer = match outcome {
            Ok(claims) => ClaimAnswer {
                request: c.request,
                path: c.path,
                claims: Some(claims.into_iter().map(B64).collect()),
                code: None,
                message: None,
            },
            Err(e) => ClaimAnswer {
                request: c.request,
                path: c.path,
                claims: None,
                code: Some(e.code()),
                message: Some(e.to_string()),
            },
        };
        self.neighbours
            .send_to(from, link_frame(&LinkMessage::Claimed(answer)));
    }

    /// The home's answer to a claim, or `None` once it was passed on.
    async fn claim_or_forward(
        &self,
        from: Fingerprint,
        c: &ClaimRequest,
    ) -> Option<Result<Vec<Vec<u8>>, RouteError>> {
        let phone = match PhoneNumber::from_canonical(&c.phone) {
            Ok(p) => p,
            Err(_) => return Some(Err(RouteError::BadRelayedPhone("claimed phone"))),
        };
        if c.devices.len() > MAX_LIST_DEVICES {
            return Some(Err(RouteError::TooMany {
                what: "devices",
                max: MAX_LIST_DEVICES,
            }));
        }
        let Some(entry) = self.user(&phone).await else {
            return Some(Err(RouteError::UnknownRecipient(phone)));
        };
        let Some(via) = entry.via else {
            tracing::debug!(%phone, devices = c.devices.len(), "a neighbour claims prekeys");
            let origin = c.path.first().and_then(|o| Fingerprint::parse(o));
            let origin = origin.unwrap_or(from);
            return Some(self.claim_local(origin, from, &phone, &c.devices).await);
        };
        if via == from || c.path.contains(&via.to_hex()) {
            return Some(Err(RouteError::RouteLoop(phone)));
        }
        let mut onward = c.clone();
        onward.path.push(self.me.fingerprint.to_hex());
        if self
            .neighbours
            .send_to(via, link_frame(&LinkMessage::Claim(onward)))
        {
            return None;
        }
        Some(Err(RouteError::HomeUnreachable(phone)))
    }

    /// Takes a claim's answer from neighbour `from`: ours to wait for, or
    /// passed on to the server before us on its path.
    pub fn claim_answer_in(&self, from: Fingerprint, a: ClaimAnswer) {
        let me = self.me.fingerprint.to_hex();
        let Some(at) = a.path.iter().position(|p| *p == me) else {
            return tracing::warn!("a neighbour sent a claim's answer not meant for us; dropped");
        };
        if a.path.get(at + 1) != Some(&from.to_hex()) || a.path.len() > MAX_HOPS + 1 {
            return tracing::warn!("a neighbour sent a claim's answer with a wrong path; dropped");
        }
        if at == 0 {
            match self.pending_claims.close(a.request) {
                Some(waiting) => {
                    let _ = waiting.send(a);
                }
                None => tracing::debug!("a claim's answer came after its time; dropped"),
            }
            return;
        }
        let Some(back) = Fingerprint::parse(&a.path[at - 1]) else {
            return tracing::warn!("a claim's answer names a bad server; dropped");
        };
        if !self
            .neighbours
            .send_to(back, link_frame(&LinkMessage::Claimed(a)))
        {
            tracing::info!("the link a claim came by is down; its answer is dropped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_must_be_fingerprints_without_us() {
        let a = "a".repeat(64);
        let b = "b".repeat(64);
        assert!(path_ok(std::slice::from_ref(&a), &b));
        assert!(!path_ok(&[a.clone(), b.clone()], &b), "a loop");
        assert!(!path_ok(&["x".into()], &b), "not a fingerprint");
        assert!(!path_ok(&vec![a; MAX_HOPS], &b), "too long");
    }

    #[test]
    fn request_numbers_are_not_reused_while_open() {
        let pending = PendingClaims::default();
        let (one, _rx1) = pending.open();
        let (two, _rx2) = pending.open();
        assert_ne!(one, two);
        assert!(pending.close(one).is_some());
        assert!(pending.close(one).is_none());
    }
}
