//! Protocol v2 sends (docs/PROTOCOL.md §5.3): one envelope for one
//! device of the recipient, sealed under the recipient's device list of a
//! stated version. A sender whose list is out of date is refused with the
//! current one, so it can seal for the devices it missed and retry; each
//! device's copy is queued and acknowledged apart.
//!
//! Only the clear header is read (§14.5); the signature and the rest are
//! the recipient device's to check.

use std::sync::Arc;

use super::deliver::PendingSend;
use super::devices::CurrentList;
use super::registry::SessionLink;
use super::{RouteError, Router};
use crate::crypto::v2::{self, ClearHeader, DeviceId};
use crate::db::queue::NewMessage;
use crate::domain::{MessageId, PhoneNumber};
use crate::protocol;

/// The first byte of a version 1 envelope.
const V1: u8 = 1;

/// What a `device_send` asks for.
pub struct DeviceSend {
    pub id: MessageId,
    pub to: PhoneNumber,
    pub device: u32,
    pub list_version: u64,
    pub envelope: Vec<u8>,
}

impl Router {
    /// Checks a `device_send` from a device's session and hands it to the
    /// writer; the recipient device's live sessions get it at once.
    pub async fn accept_device(
        &self,
        session: &SessionLink,
        send: DeviceSend,
    ) -> Result<PendingSend, RouteError> {
        let DeviceSend {
            id,
            to,
            device,
            list_version,
            envelope,
        } = send;
        if envelope.len() > protocol::MAX_ENVELOPE_BYTES {
            return Err(RouteError::TooLarge(envelope.len()));
        }
        if session.device() == 0 {
            return Err(RouteError::NotADevice);
        }
        check_header(&envelope, session, &to, device, id)?;
        let sender = session.phone();
        if self.device_key(sender, session.device()).await?.is_none() {
            return Err(RouteError::UnknownDevice(sender.clone(), session.device()));
        }
        self.charge_sender(session.phone(), envelope.len())?;
        let entry = self
            .user(&to)
            .await
            .ok_or_else(|| RouteError::UnknownRecipient(to.clone()))?;
        if entry.via.is_some() {
            self.check_remote_list(&to, device, list_version).await?;
        } else {
            self.check_local_list(&to, device, list_version).await?;
        }
        let now = self.clock.now_ms();
        let message = NewMessage {
            id,
            recipient: to.clone(),
            device,
            sender: session.phone().clone(),
            sender_device: session.device(),
            envelope,
            received_at: now,
            expires_at: now + self.message_ttl_ms,
        };
        self.route(to, message, vec![self.me.fingerprint.to_hex()], false)
            .await
    }

    /// A remote recipient's `device` must be in the list this server
    /// knows for them, of version `list_version`; their home server judges
    /// again when the message arrives.
    async fn check_remote_list(
        &self,
        to: &PhoneNumber,
        device: u32,
        list_version: u64,
    ) -> Result<(), RouteError> {
        let held = self
            .fresh_remote_devices(to)
            .await
            .ok_or_else(|| RouteError::UnknownDevice(to.clone(), device))?;
        if held.version != list_version || held.key_of(device).is_none() {
            return Err(RouteError::StaleDevices(
                to.clone(),
                Box::new(held.current()),
            ));
        }
        Ok(())
    }

    /// A local recipient's `device` must be in their current list, of
    /// version `list_version`.
    async fn check_local_list(
        &self,
        to: &PhoneNumber,
        device: u32,
        list_version: u64,
    ) -> Result<(), RouteError> {
        let current = |list: &Option<Arc<CurrentList>>| {
            list.as_ref()
                .is_some_and(|l| l.version == list_version && l.key_of(device).is_some())
        };
        let mut list = self.device_list(to);
        if !current(&list) {
            list = self.fresh_device_list(to).await?;
        }
        if list.is_none() {
            return Err(RouteError::UnknownDevice(to.clone(), device));
        }
        if !current(&list) {
            let current = self
                .local_current_devices(to)
                .await?
                .ok_or_else(|| RouteError::UnknownDevice(to.clone(), device))?;
            return Err(RouteError::StaleDevices(to.clone(), Box::new(current)));
        }
        Ok(())
    }

    /// A relayed v2 message for a local user: the recipient device must
    /// still be in their current list (the sending server judged against
    /// the list it knew, which may be older). Refused with
    /// `stale_devices`, which goes back to the sending server.
    pub(super) async fn check_relayed_device(
        &self,
        to: &PhoneNumber,
        device: u32,
    ) -> Result<(), RouteError> {
        let mut list = self.device_list(to);
        if list.as_ref().is_none_or(|l| l.key_of(device).is_none()) {
            list = self.fresh_device_list(to).await?;
        }
        if list.as_ref().is_some_and(|l| l.key_of(device).is_some()) {
            return Ok(());
        }
        match self.local_current_devices(to).await? {
            Some(current) => Err(RouteError::StaleDevices(to.clone(), Box::new(current))),
            None => Err(RouteError::UnknownDevice(to.clone(), device)),
        }
    }
}

/// The clear header must agree with the request and the session: version
/// 2, sent by this device, to `to`'s `device`, under `id`.
fn check_header(
    bytes: &[u8],
    session: &SessionLink,
    to: &PhoneNumber,
    device: u32,
    id: MessageId,
) -> Result<(), RouteError> {
    let from = (session.phone(), session.device());
    check_v2_header(bytes, from, (to, device), id)
}

/// The clear header of a v2 envelope must name `from` (phone and device)
/// as its sender, `to` as its recipient, and `id`: what a session's
/// `device_send` and a neighbour's relayed copy both must satisfy.
///
/// Phones are compared as bytes with the canonical ones they must equal,
/// so the common case allocates nothing; only a mismatch is parsed, to
/// tell a malformed header from someone else's.
pub(super) fn check_v2_header(
    bytes: &[u8],
    from: (&PhoneNumber, u32),
    to: (&PhoneNumber, u32),
    id: MessageId,
) -> Result<(), RouteError> {
    if bytes.first() == Some(&V1) {
        return Err(RouteError::V1Refused(""));
    }
    let header = ClearHeader::read(bytes).map_err(RouteError::BadV2Envelope)?;
    DeviceId::new(header.sender_device).map_err(RouteError::BadV2Envelope)?;
    DeviceId::new(header.recipient_device).map_err(RouteError::BadV2Envelope)?;
    if header.sender != from.0.as_str().as_bytes() {
        return Err(RouteError::WrongSender {
            named: header_phone(header.sender, "sender phone")?,
            session: from.0.clone(),
        });
    }
    if header.sender_device != from.1 {
        return Err(RouteError::WrongDevice {
            named: header.sender_device,
            session: from.1,
        });
    }
    if header.recipient != to.0.as_str().as_bytes() {
        header_phone(header.recipient, "recipient phone")?;
        return Err(RouteError::WrongRecipient);
    }
    if header.recipient_device != to.1 {
        return Err(RouteError::WrongRecipientDevice {
            named: header.recipient_device,
            request: to.1,
        });
    }
    if header.id != id {
        return Err(RouteError::WrongId);
    }
    Ok(())
}

/// A header phone that differs from the expected one: canonical E.164
/// (else the header is malformed), for the refusal to name.
fn header_phone(raw: &[u8], field: &'static str) -> Result<PhoneNumber, RouteError> {
    std::str::from_utf8(raw)
        .ok()
        .and_then(|s| PhoneNumber::from_canonical(s).ok())
        .ok_or(RouteError::BadV2Envelope(v2::Error::Malformed(field)))
}
