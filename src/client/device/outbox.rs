//! Sending in protocol v2 (docs/PROTOCOL.md §14.2–§14.3, §5.3): one
//! envelope per device of the recipient and one sync copy per other device
//! of this account, all under one message id, each sealed in its own
//! session. Every session is saved before its envelope leaves. A
//! `stale_devices` refusal carries the current list: it is checked like a
//! `lookup`, and sending goes on with the devices not yet served.

use std::collections::{HashMap, HashSet};

use super::peers::{Checked, RefusedBundle};
use super::store::{self, Use};
use super::{Device, now_ms};
use crate::client::home::{Direction, Record, record_in};
use crate::client::{ClientError, Notice, Session, refused, unexpected};
use crate::crypto::v2::{self, ClaimedPrekeys, Content, MAX_TEXT_BYTES, Session as Ratchet};
use crate::domain::{MessageId, PhoneNumber};
use crate::protocol::{B64, CurrentDevices, ErrorCode, Request, Response};

/// One message sealed for each device of its recipient, not yet sent.
pub struct Sealed {
    pub id: MessageId,
    pub copies: Vec<DeviceCopy>,
}

/// One device's copy of a sealed message.
pub struct DeviceCopy {
    pub to: PhoneNumber,
    pub device: u32,
    /// The version of the recipient's device list it was sealed under.
    pub list_version: u64,
    pub envelope: Vec<u8>,
}

impl Sealed {
    /// A `device_send` request per copy.
    pub fn requests(&self) -> Vec<Request> {
        self.copies.iter().map(|c| c.request(self.id)).collect()
    }
}

impl DeviceCopy {
    /// The `device_send` request carrying this copy under `id`.
    pub fn request(&self, id: MessageId) -> Request {
        Request::DeviceSend {
            id,
            to: self.to.to_string(),
            device: self.device,
            list_version: self.list_version,
            envelope: B64(self.envelope.clone()),
        }
    }
}

/// How many times one message follows a changed device list before giving up.
const MAX_LIST_CHANGES: usize = 4;

impl Session<'_> {
    /// Seals `text` for every device of `to` and every other device of this
    /// account, and sends them. The message is stored in the history once
    /// the recipient has it, before the copies go out: a failure with those
    /// leaves a message that was sent, and is recorded as such.
    pub(in crate::client) async fn send_v2(
        &self,
        device: &Device,
        to: &PhoneNumber,
        text: &str,
    ) -> Result<MessageId, ClientError> {
        if text.len() > MAX_TEXT_BYTES {
            return Err(ClientError::Input(format!(
                "the text is {} bytes; the limit is {MAX_TEXT_BYTES}",
                text.len()
            )));
        }
        let id = MessageId::random();
        let sent_at = self.client.clock.now_ms();
        let _ratchets = self.client.home.lock_ratchets().await;
        let peer =
            (self.devices_of(to).await).map_err(|e| refused_part_way(e, "nothing was sent"))?;
        let fingerprint = peer.fingerprint;
        let to_self = to == &self.me;
        let (served, refused) = self
            .fan_out(device, peer, id, &Content::Text(text.into()), sent_at)
            .await?;
        self.tell_left_out(to, &refused);
        if served == 0 && !to_self {
            return Err(none_reached(to, &refused));
        }
        let record = Record {
            id,
            direction: Direction::Out,
            peer: to,
            peer_fingerprint: fingerprint,
            counter: 0,
            text,
            sent_at,
            stored_at: self.client.clock.now_ms(),
        };
        record_in(self.client.home.pool(), &record).await?;
        if !to_self {
            let delivered = format!("the message itself was sent to {to}");
            let mine = match self.remembered_own(device.id()).await? {
                Some(mine) => mine,
                None => (self.devices_of(&self.me).await)
                    .map_err(|e| refused_part_way(e, &delivered))?,
            };
            let copy = Content::SentCopy {
                to: to.clone(),
                id,
                text: text.into(),
            };
            let (_, refused) = (self.fan_out(device, mine, id, &copy, sent_at).await)
                .map_err(|e| refused_part_way(e, &delivered))?;
            self.tell_left_out(&self.me, &refused);
        }
        Ok(id)
    }

    /// Seals `text` under `id` for every device of `to` that can receive,
    /// without sending: the sessions are saved as for a send, and what
    /// comes back is ready for `device_send` (in any order, on this
    /// session's connection). Nothing is recorded in the history and no
    /// copy goes to this account's other devices. For callers that drive
    /// the wire themselves: tests and the benchmark.
    pub async fn seal_for(
        &self,
        to: &str,
        id: MessageId,
        text: &str,
    ) -> Result<Sealed, ClientError> {
        let to = PhoneNumber::parse(to).map_err(|e| ClientError::Input(e.to_string()))?;
        let device = self
            .device
            .as_ref()
            .ok_or_else(|| crate::client::session::no_device(&self.me))?;
        let _ratchets = self.client.home.lock_ratchets().await;
        let checked = self.devices_of(&to).await?;
        let todo: Vec<u32> = (checked.devices.iter().copied())
            .filter(|d| to != self.me || *d != device.id().get())
            .collect();
        let mut sessions = self.sessions_for(device, &checked, &todo).await?;
        let sent_at = self.client.clock.now_ms().max(0) as u64;
        let content = Content::Text(text.into());
        let mut copies = Vec::new();
        for d in todo {
            let Some(session) = sessions.get_mut(&d) else {
                continue;
            };
            let envelope = session.seal(&device.local, id, &content, sent_at)?;
            self.save_sent(device, session).await?;
            copies.push(DeviceCopy {
                to: to.clone(),
                device: d,
                list_version: checked.version,
                envelope,
            });
        }
        Ok(Sealed { id, copies })
    }

    /// Sends `content` to every device of `checked` but this one; returns
    /// how many took it, and the bundles refused on the way (one per
    /// device, none for a device that took it).
    async fn fan_out(
        &self,
        device: &Device,
        mut checked: Checked,
        id: MessageId,
        content: &Content,
        sent_at: i64,
    ) -> Result<(usize, Vec<RefusedBundle>), ClientError> {
        let mut served = HashSet::new();
        if checked.phone == self.me {
            served.insert(device.id().get());
        }
        let mut refused = Vec::new();
        for _ in 0..MAX_LIST_CHANGES {
            refused.append(&mut checked.refused);
            let todo: Vec<u32> = checked
                .devices
                .iter()
                .copied()
                .filter(|d| !served.contains(d))
                .collect();
            let mut sessions = self.sessions_for(device, &checked, &todo).await?;
            let mut stale = None;
            for d in todo {
                let Some(session) = sessions.get_mut(&d) else {
                    continue;
                };
                let envelope = session.seal(&device.local, id, content, sent_at.max(0) as u64)?;
                self.save_sent(device, session).await?;
                let sent = self
                    .device_send(id, &checked.phone, d, checked.version, envelope)
                    .await;
                match skip_taken_sync_copy(sent, checked.phone == self.me, d, id)? {
                    None => {
                        served.insert(d);
                    }
                    Some(current) => {
                        stale = Some(current);
                        break;
                    }
                }
            }
            let count = served.len() - usize::from(checked.phone == self.me);
            match stale {
                None => return Ok((count, left_out(refused, &served))),
                Some(current) => {
                    checked = self
                        .check_devices(&checked.phone, &checked.key, &current)
                        .await
                        .map_err(|e| {
                            let own = checked.phone == self.me;
                            refused_part_way(e, &reached(&checked.phone, own, count))
                        })?;
                }
            }
        }
        Err(ClientError::Protocol(format!(
            "the device list of {} kept changing while sending; try again",
            checked.phone
        )))
    }

    /// Tells the user of each device of `phone` this send left out.
    fn tell_left_out(&self, phone: &PhoneNumber, refused: &[RefusedBundle]) {
        for r in refused {
            (self.client.notify())(Notice::DeviceLeftOut {
                phone: phone.to_string(),
                device: r.device,
                reason: r.reason.clone(),
            });
        }
    }

    /// A session per device in `todo`: the one to send in, else a new one,
    /// with the one-time prekeys claimed for all new ones in one request.
    /// A device with neither a session nor a bundle is left out.
    async fn sessions_for(
        &self,
        device: &Device,
        checked: &Checked,
        todo: &[u32],
    ) -> Result<HashMap<u32, Ratchet>, ClientError> {
        let pool = self.client.home.pool();
        let mut sessions = HashMap::new();
        let mut new = Vec::new();
        for &d in todo {
            match store::sending_session(pool, checked.phone.as_str(), d).await? {
                Some(row) => {
                    sessions.insert(d, device.open_session(&row.state)?);
                }
                None if checked
                    .bundles
                    .iter()
                    .any(|b| b.device.device_id.get() == d) =>
                {
                    new.push(d)
                }
                None => {}
            }
        }
        if new.is_empty() {
            return Ok(sessions);
        }
        let claims = match self.claim(&checked.phone, &new).await {
            Ok(claims) => claims,
            // The recipient's home cannot be reached to hand out one-time
            // prekeys: the bundle's last-resort keys still start a session
            // (PQXDH without its optional one-time DH), and the message
            // waits in the queue towards that home like any other.
            Err(ClientError::Server {
                code: ErrorCode::Unavailable,
                ..
            }) => Vec::new(),
            Err(e) => return Err(e),
        };
        let now = now_ms(&self.client.clock);
        for bundle in checked.bundles.iter() {
            let d = bundle.device.device_id.get();
            if !new.contains(&d) {
                continue;
            }
            let bundle = match claims.iter().find(|c| c.device_id.get() == d) {
                Some(claim) => bundle.clone().with_claim(claim)?,
                None => bundle.clone(),
            };
            sessions.insert(d, Ratchet::initiate(&device.local, &bundle, now));
        }
        Ok(sessions)
    }

    /// Saves a session that has just sealed, before its envelope leaves.
    async fn save_sent(&self, device: &Device, session: &Ratchet) -> Result<(), ClientError> {
        let (peer, peer_device, _) = session.peer();
        let mut tx = crate::client::home::write_tx(self.client.home.pool()).await?;
        store::save_session(
            &mut tx,
            peer.as_str(),
            peer_device.get(),
            &session.id().0,
            &device.seal_session(session),
            Use::Sent,
            self.client.clock.now_ms(),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// `claim`: one result per device asked for.
    async fn claim(
        &self,
        phone: &PhoneNumber,
        devices: &[u32],
    ) -> Result<Vec<ClaimedPrekeys>, ClientError> {
        match self
            .conn
            .call(Request::Claim {
                phone: phone.to_string(),
                devices: devices.to_vec(),
            })
            .await?
        {
            Response::Claimed { claims } => claims
                .iter()
                .map(|c| ClaimedPrekeys::parse(&c.0).map_err(ClientError::from))
                .collect(),
            other => Err(unexpected(other)),
        }
    }

    /// `device_send`: `None` when accepted, the current devices when the
    /// list sent under is out of date.
    async fn device_send(
        &self,
        id: MessageId,
        to: &PhoneNumber,
        device: u32,
        list_version: u64,
        envelope: Vec<u8>,
    ) -> Result<Option<CurrentDevices>, ClientError> {
        let answer = self
            .conn
            .start(Request::DeviceSend {
                id,
                to: to.to_string(),
                device,
                list_version,
                envelope: B64(envelope),
            })
            .await?
            .await
            .map_err(|_| ClientError::Disconnected)?;
        match answer {
            Response::Accepted { .. } => Ok(None),
            Response::Error {
                code: ErrorCode::StaleDevices,
                devices: Some(current),
                ..
            } => Ok(Some(current)),
            other => Err(refused(other)),
        }
    }
}

/// The refusals worth telling: none for a device that took the message,
/// one per device otherwise, and one for all the bundles whose certificate
/// did not check out (a server could offer any number). For a device with
/// several, a forgery is told before keys out of date: a server replaying
/// a genuine old bundle ahead of a forged one must not pass the forgery
/// off as age.
fn left_out(refused: Vec<RefusedBundle>, served: &HashSet<u32>) -> Vec<RefusedBundle> {
    let mut told: Vec<RefusedBundle> = Vec::new();
    for r in refused {
        if r.device.is_some_and(|d| served.contains(&d)) {
            continue;
        }
        match told.iter_mut().find(|t| t.device == r.device) {
            None => told.push(r),
            Some(t) if !forged(t) && forged(&r) => *t = r,
            Some(_) => {}
        }
    }
    told
}

/// Whether a refused bundle does not check out against its account key, as
/// opposed to being genuine but out of date.
fn forged(r: &RefusedBundle) -> bool {
    r.reason != v2::Error::StalePrekey
}

/// Why a send reached no device of `to`: forged keys (if any were seen),
/// keys out of date, or none published.
fn none_reached(to: &PhoneNumber, refused: &[RefusedBundle]) -> ClientError {
    if refused.iter().any(forged) {
        ClientError::Forged(format!(
            "the server offered keys for {to} that do not check out against their account \
             key; nothing was sent"
        ))
    } else if !refused.is_empty() {
        ClientError::NoDeviceReady(format!(
            "{to} has no device that can receive now: their published keys are out of date; \
             try again once one of their devices has been online"
        ))
    } else {
        ClientError::NoDeviceReady(format!(
            "{to} has no device that can receive yet (none has published its prekeys); try \
             again later"
        ))
    }
}

/// A device list refused part-way through a send, told with what had been
/// sent by then (`sent`), so that the user knows whether the message went
/// out before sending it again.
fn refused_part_way(e: ClientError, sent: &str) -> ClientError {
    match e {
        ClientError::Forged(why) => ClientError::Forged(format!("{why}; {sent}")),
        other => other,
    }
}

/// What one fan-out had sent when a changed device list was refused: to
/// `devices` devices of `phone`, or of this account's other devices when
/// `own`.
fn reached(phone: &PhoneNumber, own: bool, devices: usize) -> String {
    match (own, devices) {
        (true, 0) => "none of your other devices took its copy".into(),
        (true, n) => {
            format!("{n} of your other devices had taken its copy by then; no other was sent one")
        }
        (false, 0) => format!("no device of {phone} took the message"),
        (false, 1) => {
            format!("one device of {phone} had taken the message by then; no other was sent it")
        }
        (false, n) => {
            format!("{n} devices of {phone} had taken the message by then; no other was sent it")
        }
    }
}

/// A sync copy (to one of this account's own other devices) whose id is
/// already taken in that device's queue is skipped with a warning rather
/// than failing the send: the recipient may have taken the id there first,
/// and by then the message has been delivered and belongs in the history.
fn skip_taken_sync_copy(
    sent: Result<Option<CurrentDevices>, ClientError>,
    own_device: bool,
    device: u32,
    id: MessageId,
) -> Result<Option<CurrentDevices>, ClientError> {
    match sent {
        Err(ClientError::Server {
            code: ErrorCode::DuplicateId,
            message,
            ..
        }) if own_device => {
            eprintln!(
                "warning: the copy of message {id} for your device {device} was not delivered \
                 ({message}); the message itself was sent"
            );
            Ok(None)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taken() -> Result<Option<CurrentDevices>, ClientError> {
        Err(ClientError::Server {
            code: ErrorCode::DuplicateId,
            message: "another message is already queued under this id".into(),
            retry_after_ms: None,
        })
    }

    fn refused(device: Option<u32>, reason: v2::Error) -> RefusedBundle {
        RefusedBundle { device, reason }
    }

    /// A device that took the message, or was told of already, is not
    /// told again; bundles without a checked device are told once.
    #[test]
    fn each_device_left_out_is_told_once() {
        let bad = v2::Error::BadSignature;
        let told = left_out(
            vec![
                refused(Some(2), bad.clone()),
                refused(Some(3), v2::Error::StalePrekey),
                refused(Some(2), v2::Error::StalePrekey),
                refused(Some(4), bad.clone()),
                refused(None, v2::Error::Malformed("prekey")),
                refused(None, bad.clone()),
            ],
            &HashSet::from([1, 4]),
        );
        assert_eq!(
            told,
            [
                refused(Some(2), bad),
                refused(Some(3), v2::Error::StalePrekey),
                refused(None, v2::Error::Malformed("prekey")),
            ]
        );
    }

    /// A genuine bundle out of date replayed ahead of a forged one for the
    /// same device: the forgery is what the user is told, and what the
    /// send fails with.
    #[test]
    fn a_forgery_is_told_before_keys_out_of_date() {
        let bad = v2::Error::BadSignature;
        let told = left_out(
            vec![
                refused(Some(2), v2::Error::StalePrekey),
                refused(Some(2), bad.clone()),
                refused(Some(2), v2::Error::StalePrekey),
            ],
            &HashSet::new(),
        );
        assert_eq!(told, [refused(Some(2), bad)]);
        let to = PhoneNumber::parse("+12025550102").unwrap();
        let failed = none_reached(&to, &told);
        assert!(matches!(failed, ClientError::Forged(_)), "{failed:?}");
        assert_eq!(failed.exit().code(), 4);
    }

    #[test]
    fn a_send_that_reached_nobody_says_why() {
        let to = PhoneNumber::parse("+12025550102").unwrap();
        let stale = refused(Some(1), v2::Error::StalePrekey);
        let forged = refused(None, v2::Error::BadSignature);
        assert!(matches!(
            none_reached(&to, &[stale.clone(), forged]),
            ClientError::Forged(_)
        ));
        let out_of_date = none_reached(&to, &[stale]);
        assert!(
            matches!(out_of_date, ClientError::NoDeviceReady(ref m) if m.contains("out of date")),
            "{out_of_date}"
        );
        let none = none_reached(&to, &[]);
        assert!(
            matches!(none, ClientError::NoDeviceReady(ref m) if m.contains("none has published")),
            "{none}"
        );
    }

    /// A changed list refused after some devices took the message says
    /// so, and never that nothing was sent.
    #[test]
    fn a_list_refused_part_way_tells_what_was_sent() {
        let to = PhoneNumber::parse("+12025550102").unwrap();
        let rolled_back = || {
            ClientError::Forged(format!(
                "the server gave version 1 of the device list of {to}, older than version 2"
            ))
        };
        for (own, n, said) in [
            (false, 0, "no device of +12025550102 took the message"),
            (
                false,
                1,
                "one device of +12025550102 had taken the message by then",
            ),
            (
                false,
                2,
                "2 devices of +12025550102 had taken the message by then",
            ),
            (true, 0, "none of your other devices took its copy"),
            (
                true,
                2,
                "2 of your other devices had taken its copy by then",
            ),
        ] {
            let part = reached(&to, own, n);
            let told = refused_part_way(rolled_back(), &part).to_string();
            assert!(told.ends_with(&part), "{told}");
            assert!(told.contains(said), "{told}");
            assert!(!told.contains("nothing was sent"), "{told}");
        }
        let first = refused_part_way(rolled_back(), "nothing was sent");
        assert!(matches!(first, ClientError::Forged(_)), "{first:?}");
        assert!(first.to_string().ends_with("; nothing was sent"), "{first}");
        assert!(matches!(
            refused_part_way(ClientError::Disconnected, "nothing was sent"),
            ClientError::Disconnected
        ));
    }

    #[test]
    fn only_a_sync_copy_with_a_taken_id_is_skipped() {
        let id = MessageId::random();
        assert!(matches!(
            skip_taken_sync_copy(taken(), true, 2, id),
            Ok(None)
        ));
        assert!(matches!(
            skip_taken_sync_copy(taken(), false, 2, id),
            Err(ClientError::Server {
                code: ErrorCode::DuplicateId,
                ..
            })
        ));
    }
}
