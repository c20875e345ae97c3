//! Sending in protocol v2 (docs/PROTOCOL.md §14.2–§14.3, §5.3): one
//! envelope per device of the recipient and one sync copy per other device
//! of this account, all under one message id, each sealed in its own
//! session. Every session is saved before its envelope leaves. A
//! `stale_devices` refusal carries the current list: it is checked like a
//! `lookup`, and sending goes on with the devices not yet served. Nothing
//! here keeps a message to send again later: once a device has taken it,
//! a failure is told as a send cut short (`partly`), never retried.

use std::collections::{HashMap, HashSet};

use super::partly::{Cut, PartlySent, Reach};
use super::peers::{Checked, Unserved};
use super::store::{self, Use};
use super::{Device, now_ms};
use crate::client::home::{Direction, Record, record_in};
use crate::client::{ClientError, LeftOut, Notice, Session, refused, unexpected};
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

/// What one fan-out did.
#[derive(Default)]
struct FanOut {
    /// The devices that took their copy, in the order they did.
    took: Vec<u32>,
    /// The devices whose sync copy was skipped, its id taken in their
    /// queue: told by a warning of their own, neither reached nor missed.
    skipped: Vec<u32>,
    /// What left devices out on the way (bundles refused, devices without
    /// one): once settled, one per device left out and none for a device
    /// that took its copy.
    unserved: Vec<Unserved>,
    /// What stopped it part-way, if anything did.
    cut: Option<Cut>,
}

impl FanOut {
    /// Done: the refusals worth telling kept. `this` is the sending
    /// device, when the fan-out is to its own account (never told of).
    fn settled(mut self, this: Option<u32>) -> Self {
        let mut served: HashSet<u32> = self.done().collect();
        served.extend(this);
        self.unserved = left_out(std::mem::take(&mut self.unserved), &served);
        self
    }

    /// Stopped part-way by `cut`.
    fn cut_short(mut self, cut: Cut, this: Option<u32>) -> Self {
        self.cut = Some(cut);
        self.settled(this)
    }

    /// The devices done with: those that took their copy or were skipped.
    fn done(&self) -> impl Iterator<Item = u32> + '_ {
        self.took.iter().chain(&self.skipped).copied()
    }

    /// Notes how device `d`'s copy went; the current list, if `d` said the
    /// one sent under is out of date.
    fn note(&mut self, d: u32, delivery: Delivery) -> Option<CurrentDevices> {
        match delivery {
            Delivery::Took => self.took.push(d),
            Delivery::Skipped => self.skipped.push(d),
            Delivery::Stale(current) => return Some(current),
        }
        None
    }

    fn reach(self) -> Reach {
        Reach {
            took: self.took,
            cut: self.cut,
        }
    }
}

/// How one device's copy went.
enum Delivery {
    Took,
    /// A sync copy skipped, its id taken in that device's queue.
    Skipped,
    /// The list it was sent under is out of date: the current one.
    Stale(CurrentDevices),
}

/// A copy that did not go through. `answer_lost` when its request was
/// written and the connection lost before the answer: the server may
/// have taken it.
struct Failed {
    error: ClientError,
    answer_lost: bool,
}

impl From<ClientError> for Failed {
    fn from(error: ClientError) -> Self {
        Self {
            error,
            answer_lost: false,
        }
    }
}

/// One message as it is sealed for each device.
struct Outgoing<'a> {
    id: MessageId,
    content: &'a Content,
    sent_at: i64,
}

/// How one round of a fan-out (one device list) ended.
enum Round {
    /// Every device of the list was sent to.
    Done,
    /// A `stale_devices` answer, with the current list.
    Stale(CurrentDevices),
    Cut(Cut),
}

impl Session<'_> {
    /// Seals `text` for every device of `to` and every other device of
    /// this account, and sends them. Once a device of the recipient took
    /// the message it is recorded in the history, whatever stopped the send
    /// afterwards; such a send ends in [`ClientError::PartlySent`], which
    /// says which devices got it and which did not.
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
        let content = Content::Text(text.into());
        let message = Outgoing {
            id,
            content: &content,
            sent_at,
        };
        let recipient = self.fan_out(device, peer, &message).await;
        self.tell_left_out(to, &recipient.unserved);
        if recipient.took.is_empty() {
            match recipient.cut {
                Some(cut) => return Err(refused_part_way(cut.error, "nothing was sent")),
                None if !to_self => return Err(none_reached(to, &recipient.unserved)),
                None => {}
            }
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
        let unrecorded = match record_in(self.client.home.pool(), &record).await {
            Ok(_) => None,
            // Nothing went out (a message to the own number with no
            // other device): the store's error is all there is to tell.
            Err(e) if recipient.took.is_empty() => return Err(e),
            Err(e) => Some(e),
        };
        let own = if to_self {
            None
        } else if lost(&recipient) {
            Some(Reach {
                took: Vec::new(),
                cut: Some(Cut::before_any(ClientError::Disconnected)),
            })
        } else {
            Some(self.sync_copies(device, to, id, text, sent_at).await)
        };
        PartlySent {
            id,
            to: to.clone(),
            recipient: recipient.reach(),
            own,
            unrecorded,
        }
        .outcome()
    }

    /// Sends the sync copies of a message that went out to `to` to this
    /// account's other devices: those remembered, else those a `lookup`
    /// gives.
    async fn sync_copies(
        &self,
        device: &Device,
        to: &PhoneNumber,
        id: MessageId,
        text: &str,
        sent_at: i64,
    ) -> Reach {
        let mine = match self.remembered_own(device.id()).await {
            Ok(Some(mine)) => Ok(mine),
            Ok(None) => self.devices_of(&self.me).await,
            Err(e) => Err(e),
        };
        let mine = match mine {
            Ok(mine) => mine,
            Err(error) => {
                return Reach {
                    took: Vec::new(),
                    cut: Some(Cut::before_any(error)),
                };
            }
        };
        let copy = Content::SentCopy {
            to: to.clone(),
            id,
            text: text.into(),
        };
        let message = Outgoing {
            id,
            content: &copy,
            sent_at,
        };
        let copies = self.fan_out(device, mine, &message).await;
        self.tell_left_out(&self.me, &copies.unserved);
        copies.reach()
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

    /// Sends `message` to every device of `checked` but this one, following
    /// a changed list at most [`MAX_LIST_CHANGES`] times. Never fails as a
    /// whole: which devices took it before an error matters as much as the
    /// error.
    async fn fan_out(
        &self,
        device: &Device,
        mut checked: Checked,
        message: &Outgoing<'_>,
    ) -> FanOut {
        let mut out = FanOut::default();
        // The sending device, when sending to its own account.
        let this = (checked.phone == self.me).then_some(device.id().get());
        for _ in 0..MAX_LIST_CHANGES {
            out.unserved.append(&mut checked.unserved);
            let done: Vec<u32> = out.done().collect();
            let todo = still_to_serve(&checked, &done, this);
            let current = match self
                .send_round(device, &checked, &todo, message, &mut out)
                .await
            {
                Round::Done => return out.settled(this),
                Round::Cut(cut) => return out.cut_short(cut, this),
                Round::Stale(current) => current,
            };
            match self
                .check_devices(&checked.phone, &checked.key, &current)
                .await
            {
                Ok(next) => checked = next,
                Err(error) => {
                    let done: Vec<u32> = out.done().collect();
                    let missed = todo.into_iter().filter(|d| !done.contains(d));
                    let cut = Cut {
                        error,
                        missed: missed.collect(),
                        unsure: None,
                    };
                    return out.cut_short(cut, this);
                }
            }
        }
        let cut = Cut {
            error: ClientError::ListKeptChanging {
                phone: checked.phone.to_string(),
            },
            missed: still_to_serve(&checked, &out.done().collect::<Vec<_>>(), this),
            unsure: None,
        };
        out.cut_short(cut, this)
    }

    /// Seals and sends a copy to each device of `todo` in turn, noting in
    /// `out` each that takes it (or is skipped); stops at the first answer
    /// that is not `accepted`.
    async fn send_round(
        &self,
        device: &Device,
        checked: &Checked,
        todo: &[u32],
        message: &Outgoing<'_>,
        out: &mut FanOut,
    ) -> Round {
        let own = checked.phone == self.me;
        let missed = |out: &FanOut| -> Vec<u32> {
            let done: Vec<u32> = out.done().collect();
            (todo.iter().copied())
                .filter(|d| !done.contains(d))
                .collect()
        };
        let mut sessions = match self.sessions_for(device, checked, todo).await {
            Ok(sessions) => sessions,
            Err(error) => {
                return Round::Cut(Cut {
                    error,
                    missed: missed(out),
                    unsure: None,
                });
            }
        };
        for &d in todo {
            let Some(session) = sessions.get_mut(&d) else {
                continue;
            };
            let sent = self
                .seal_and_send(device, session, checked, d, message)
                .await;
            match skip_taken_sync_copy(sent, own, d, message.id) {
                Ok(delivery) => {
                    if let Some(current) = out.note(d, delivery) {
                        return Round::Stale(current);
                    }
                }
                Err(Failed { error, answer_lost }) => {
                    return Round::Cut(Cut {
                        error,
                        missed: missed(out),
                        unsure: answer_lost.then_some(d),
                    });
                }
            }
        }
        Round::Done
    }

    /// Seals one copy in `session`, saves the session, then sends the copy.
    async fn seal_and_send(
        &self,
        device: &Device,
        session: &mut Ratchet,
        checked: &Checked,
        to_device: u32,
        message: &Outgoing<'_>,
    ) -> Result<Option<CurrentDevices>, Failed> {
        let sent_at = message.sent_at.max(0) as u64;
        let envelope = (session.seal(&device.local, message.id, message.content, sent_at))
            .map_err(ClientError::from)?;
        self.save_sent(device, session).await?;
        let (to, version) = (&checked.phone, checked.version);
        self.device_send(message.id, to, to_device, version, envelope)
            .await
    }

    /// Tells the user of each device of `phone` this send left out.
    fn tell_left_out(&self, phone: &PhoneNumber, unserved: &[Unserved]) {
        for u in unserved {
            (self.client.notify())(Notice::DeviceLeftOut {
                phone: phone.to_string(),
                device: u.device,
                why: u.why.clone(),
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
    /// list sent under is out of date. A connection lost once the request
    /// was written is told apart: the server may have taken the copy.
    async fn device_send(
        &self,
        id: MessageId,
        to: &PhoneNumber,
        device: u32,
        list_version: u64,
        envelope: Vec<u8>,
    ) -> Result<Option<CurrentDevices>, Failed> {
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
            .map_err(|_| Failed {
                error: ClientError::Disconnected,
                answer_lost: true,
            })?;
        match answer {
            Response::Accepted { .. } => Ok(None),
            Response::Error {
                code: ErrorCode::StaleDevices,
                devices: Some(current),
                ..
            } => Ok(Some(current)),
            other => Err(refused(other).into()),
        }
    }
}

/// The devices of `checked` still to send to: neither one that `took` its
/// copy nor the sending device (`this`, when sending to its own account).
fn still_to_serve(checked: &Checked, took: &[u32], this: Option<u32>) -> Vec<u32> {
    (checked.devices.iter().copied())
        .filter(|d| !took.contains(d) && Some(*d) != this)
        .collect()
}

/// What is worth telling of the devices left out: none for a device that
/// took the message, one per device otherwise, and one for all the bundles
/// whose certificate did not check out (a server could offer any number).
/// For a device with several, a forgery is told before keys out of date or
/// missing: a server replaying a genuine old bundle ahead of a forged one
/// must not pass the forgery off as age.
fn left_out(unserved: Vec<Unserved>, served: &HashSet<u32>) -> Vec<Unserved> {
    let mut told: Vec<Unserved> = Vec::new();
    for r in unserved {
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

/// Whether a device was left out for keys that do not check out against
/// their account key, as opposed to keys genuine but out of date, or none.
fn forged(u: &Unserved) -> bool {
    matches!(&u.why, LeftOut::Refused(reason) if *reason != v2::Error::StalePrekey)
}

/// Whether a device was left out for genuine keys out of date.
fn out_of_date(u: &Unserved) -> bool {
    u.why == LeftOut::Refused(v2::Error::StalePrekey)
}

/// Why a send reached no device of `to`: forged keys (if any were seen),
/// keys out of date, or none published.
fn none_reached(to: &PhoneNumber, unserved: &[Unserved]) -> ClientError {
    if unserved.iter().any(forged) {
        ClientError::Forged(format!(
            "the server offered keys for {to} that do not check out against their account \
             key; nothing was sent"
        ))
    } else if unserved.iter().any(out_of_date) {
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

/// A device list refused before any device took the message, told as
/// such: a refusal after one did is [`PartlySent`], which says what went
/// out.
fn refused_part_way(e: ClientError, sent: &str) -> ClientError {
    match e {
        ClientError::Forged(why) => ClientError::Forged(format!("{why}; {sent}")),
        other => other,
    }
}

/// A sync copy (to one of this account's own other devices) whose id is
/// already taken in that device's queue is skipped with a warning rather
/// than failing the send: the recipient may have taken the id there first,
/// and by then the message has been delivered and belongs in the history.
fn skip_taken_sync_copy(
    sent: Result<Option<CurrentDevices>, Failed>,
    own_device: bool,
    device: u32,
    id: MessageId,
) -> Result<Delivery, Failed> {
    match sent {
        Ok(None) => Ok(Delivery::Took),
        Ok(Some(current)) => Ok(Delivery::Stale(current)),
        Err(Failed {
            error:
                ClientError::Server {
                    code: ErrorCode::DuplicateId,
                    message,
                    ..
                },
            ..
        }) if own_device => {
            eprintln!(
                "warning: the copy of message {id} for your device {device} was not delivered \
                 ({message}); the message itself was sent"
            );
            Ok(Delivery::Skipped)
        }
        Err(failed) => Err(failed),
    }
}

/// Whether the connection was lost sending to the recipient: then no sync
/// copy could leave, and none is sealed (which would advance its session
/// for nothing).
fn lost(recipient: &FanOut) -> bool {
    recipient
        .cut
        .as_ref()
        .is_some_and(|c| matches!(c.error, ClientError::Disconnected))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taken() -> Result<Option<CurrentDevices>, Failed> {
        Err(ClientError::Server {
            code: ErrorCode::DuplicateId,
            message: "another message is already queued under this id".into(),
            retry_after_ms: None,
        }
        .into())
    }

    fn full() -> ClientError {
        ClientError::Server {
            code: ErrorCode::QuotaExceeded,
            message: "the queue is full".into(),
            retry_after_ms: None,
        }
    }

    fn refused(device: Option<u32>, reason: v2::Error) -> Unserved {
        Unserved {
            device,
            why: LeftOut::Refused(reason),
        }
    }

    fn keyless(device: u32) -> Unserved {
        Unserved {
            device: Some(device),
            why: LeftOut::NoKeys,
        }
    }

    /// A device that took the message, or was told of already, is not
    /// told again; bundles without a checked device are told once. A
    /// device without keys in one round is told once, and not at all when
    /// it took the message in another.
    #[test]
    fn each_device_left_out_is_told_once() {
        let bad = v2::Error::BadSignature;
        let told = left_out(
            vec![
                refused(Some(2), bad.clone()),
                refused(Some(3), v2::Error::StalePrekey),
                keyless(5),
                keyless(6),
                refused(Some(2), v2::Error::StalePrekey),
                refused(Some(4), bad.clone()),
                refused(None, v2::Error::Malformed("prekey")),
                refused(None, bad.clone()),
                keyless(5),
            ],
            &HashSet::from([1, 4, 6]),
        );
        assert_eq!(
            told,
            [
                refused(Some(2), bad),
                refused(Some(3), v2::Error::StalePrekey),
                keyless(5),
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
        for unserved in [&[][..], &[keyless(1), keyless(2)]] {
            let none = none_reached(&to, unserved);
            assert!(
                matches!(none, ClientError::NoDeviceReady(ref m) if m.contains("none has published")),
                "{none}"
            );
        }
    }

    /// A list refused before any device took the message says that
    /// nothing was sent; other errors are left as they are.
    #[test]
    fn a_list_refused_before_anything_went_out_says_nothing_was_sent() {
        let rolled_back = ClientError::Forged("the device list of +12025550102 is refused".into());
        let first = refused_part_way(rolled_back, "nothing was sent");
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
            Ok(Delivery::Skipped)
        ));
        assert!(matches!(
            skip_taken_sync_copy(taken(), false, 2, id),
            Err(Failed {
                error: ClientError::Server {
                    code: ErrorCode::DuplicateId,
                    ..
                },
                ..
            })
        ));
    }

    /// A sync copy skipped for its taken id neither reached its device
    /// nor is sent again after a changed list.
    #[test]
    fn a_skipped_copy_is_not_counted_as_reached() {
        let mut out = FanOut::default();
        let id = MessageId::random();
        for (d, sent) in [(2, taken()), (3, Ok(None))] {
            let delivery = skip_taken_sync_copy(sent, true, d, id).ok().unwrap();
            assert!(out.note(d, delivery).is_none());
        }
        assert_eq!(out.done().collect::<Vec<_>>(), [3, 2]);
        assert_eq!(out.reach().took, [3]);
    }

    /// Once the connection is lost sending to the recipient, no sync copy
    /// is sealed; other cuts leave them to be sent.
    #[test]
    fn no_sync_copy_is_sealed_once_the_connection_is_lost() {
        let cut = |error| FanOut {
            took: vec![1],
            cut: Some(Cut::before_any(error)),
            ..FanOut::default()
        };
        assert!(lost(&cut(ClientError::Disconnected)));
        assert!(!lost(&cut(full())));
        assert!(!lost(&FanOut::default()));
    }
}
