//! Protocol v2 sends (docs/PROTOCOL-v2.md §13.6): one envelope for one
//! device of the recipient, sealed under the recipient's device list of a
//! stated version. A sender whose list is out of date is refused with the
//! current one, so it can seal for the devices it missed and retry; each
//! device's copy is queued and acknowledged apart.
//!
//! Only the clear header is read (§8.5); the signature and the rest are
//! the recipient device's to check.

use std::sync::Arc;

use super::deliver::PendingSend;
use super::devices::CurrentList;
use super::registry::SessionLink;
use super::{RouteError, Router};
use crate::crypto::v2::Envelope;
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
            return Err(RouteError::RemoteDevices(to));
        }
        let current = |list: &Option<Arc<CurrentList>>| {
            list.as_ref()
                .is_some_and(|l| l.version == list_version && l.key_of(device).is_some())
        };
        let mut list = self.device_list(&to);
        if !current(&list) {
            list = self.fresh_device_list(&to).await?;
        }
        if list.is_none() {
            return Err(RouteError::UnknownDevice(to, device));
        }
        if !current(&list) {
            let current = self
                .current_devices(&to)
                .await?
                .ok_or_else(|| RouteError::UnknownDevice(to.clone(), device))?;
            return Err(RouteError::StaleDevices(to, Box::new(current)));
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
    if bytes.first() == Some(&V1) {
        return Err(RouteError::V1Refused(""));
    }
    let envelope = Envelope::parse(bytes).map_err(RouteError::BadV2Envelope)?;
    let (sender, sender_device) = envelope.sender();
    if sender != session.phone() {
        return Err(RouteError::WrongSender {
            named: sender.clone(),
            session: session.phone().clone(),
        });
    }
    if sender_device.get() != session.device() {
        return Err(RouteError::WrongDevice {
            named: sender_device.get(),
            session: session.device(),
        });
    }
    let (recipient, recipient_device) = envelope.recipient();
    if recipient != to || recipient_device.get() != device {
        return Err(RouteError::WrongRecipient);
    }
    if envelope.id() != id {
        return Err(RouteError::WrongId);
    }
    Ok(())
}
