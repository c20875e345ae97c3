//! A send cut short after its message went out (docs/PROTOCOL.md §7.9).
//! Once a device of the recipient has taken the message it is sent: it is
//! in the history, and whatever stops the send afterwards (a later device
//! refused, a device list refused, the connection lost, the copies for
//! this account's other devices failing) is told as one error that says
//! which devices got it and which did not, with its own exit status.
//! Sending it again would make a second message under a new id, which the
//! recipient would see twice; the error says not to, since the cause it
//! quotes (a server's refusal) may well say "try again".

use std::fmt;

use crate::client::ClientError;
use crate::domain::{MessageId, PhoneNumber};

/// What stopped one fan-out part-way.
#[derive(Debug)]
pub struct Cut {
    pub error: ClientError,
    /// Devices it was to send to and did not, from the last list checked.
    pub missed: Vec<u32>,
    /// The device whose copy was on its way when the connection was lost:
    /// the server may have taken it.
    pub unsure: Option<u32>,
}

impl Cut {
    /// A fan-out stopped before it knew which devices to send to.
    pub fn before_any(error: ClientError) -> Self {
        Self {
            error,
            missed: Vec::new(),
            unsure: None,
        }
    }
}

/// What one fan-out reached: the devices that took their copy, and what
/// stopped it, if anything did.
#[derive(Debug)]
pub struct Reach {
    pub took: Vec<u32>,
    pub cut: Option<Cut>,
}

/// A message that went out, and how far: `Ok` when nothing cut it short.
#[derive(Debug)]
pub struct PartlySent {
    pub id: MessageId,
    pub to: PhoneNumber,
    /// The recipient's devices; at least one took the message.
    pub recipient: Reach,
    /// This account's other devices (their sync copies); `None` for a
    /// message to the own number, whose devices are the recipient's.
    pub own: Option<Reach>,
    /// Why the message could not be recorded in the history, if it could
    /// not: it went out all the same.
    pub unrecorded: Option<ClientError>,
}

impl PartlySent {
    /// The send's outcome: its id when every part went through, else this,
    /// as [`ClientError::PartlySent`].
    pub fn outcome(self) -> Result<MessageId, ClientError> {
        let own_cut = self.own.as_ref().is_some_and(|o| o.cut.is_some());
        if self.recipient.cut.is_none() && !own_cut && self.unrecorded.is_none() {
            return Ok(self.id);
        }
        Err(ClientError::PartlySent(Box::new(self)))
    }
}

impl fmt::Display for PartlySent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let took = &self.recipient.took;
        write!(
            f,
            "message {} reached {} of {}",
            self.id,
            devices(took),
            self.to
        )?;
        if let Some(cut) = &self.recipient.cut {
            write!(f, " but {}: {}", not_reached(cut), why(&cut.error))?;
        }
        if let Some(Reach {
            took,
            cut: Some(cut),
        }) = &self.own
        {
            write!(f, "; {}: {}", own_not_reached(took, cut), why(&cut.error))?;
        }
        match &self.unrecorded {
            None => f.write_str(". It is in your history")?,
            Some(e) => write!(f, ". It could not be recorded in your history ({e})")?,
        }
        write!(f, "; do not send it again: {} would get it twice", self.to)
    }
}

/// The recipient's devices a cut left out: "not device 2", "perhaps not
/// device 2, and not device 3", or "no other device of theirs" when the
/// list to send to was not known (refused, say).
fn not_reached(cut: &Cut) -> String {
    let sure = surely_missed(cut);
    match (cut.unsure, sure.is_empty()) {
        (None, true) => "no other device of theirs".into(),
        (None, false) => format!("not {}", devices(&sure)),
        (Some(d), true) => format!("perhaps not device {d}"),
        (Some(d), false) => format!("perhaps not device {d}, and not {}", devices(&sure)),
    }
}

/// This account's other devices a cut left out, beside those that got
/// their copy.
fn own_not_reached(took: &[u32], cut: &Cut) -> String {
    let sure = surely_missed(cut);
    if took.is_empty() && sure.is_empty() && cut.unsure.is_none() {
        return "your other devices, if you have any, did not get their copy".into();
    }
    let mut said = Vec::new();
    if !took.is_empty() {
        said.push(format!("{} got {}", devices(took), copy(took.len())));
    }
    if !sure.is_empty() {
        said.push(format!("{} did not", devices(&sure)));
    }
    if let Some(d) = cut.unsure {
        said.push(format!("device {d} perhaps did not"));
    }
    let mut line = format!("of your other devices, {}", said.join(", "));
    if took.is_empty() {
        let left_out = sure.len() + usize::from(cut.unsure.is_some());
        line.push_str(&format!(" get {}", copy(left_out)));
    }
    line
}

/// "its copy" for one device, "their copy" for more.
fn copy(devices: usize) -> &'static str {
    if devices == 1 {
        "its copy"
    } else {
        "their copy"
    }
}

fn surely_missed(cut: &Cut) -> Vec<u32> {
    let mut sure: Vec<u32> = (cut.missed.iter().copied())
        .filter(|d| Some(*d) != cut.unsure)
        .collect();
    sure.sort_unstable();
    sure
}

/// "device 1", "devices 1 and 2", "devices 1, 2 and 3".
fn devices(ids: &[u32]) -> String {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    match ids.as_slice() {
        [] => "no device".into(),
        [one] => format!("device {one}"),
        [rest @ .., last] => {
            let rest: Vec<String> = rest.iter().map(u32::to_string).collect();
            format!("devices {} and {last}", rest.join(", "))
        }
    }
}

/// Why a part stopped, without the advice to try again that some causes
/// carry when nothing was sent.
fn why(e: &ClientError) -> String {
    match e {
        ClientError::NoDevicesYet { phone } => {
            format!("the server has no device list of {phone}")
        }
        ClientError::ListKeptChanging { phone } => {
            format!("the device list of {phone} kept changing while sending")
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ErrorCode;

    const ID: &str = "0123456789abcdef0123456789abcdef";

    fn sent(recipient: Reach, own: Option<Reach>) -> PartlySent {
        PartlySent {
            id: MessageId::parse_hex(ID).unwrap(),
            to: PhoneNumber::parse("+12025550102").unwrap(),
            recipient,
            own,
            unrecorded: None,
        }
    }

    fn reach(took: &[u32], cut: Option<Cut>) -> Reach {
        Reach {
            took: took.to_vec(),
            cut,
        }
    }

    fn cut(error: ClientError, missed: &[u32], unsure: Option<u32>) -> Option<Cut> {
        Some(Cut {
            error,
            missed: missed.to_vec(),
            unsure,
        })
    }

    fn full() -> ClientError {
        ClientError::Server {
            code: ErrorCode::QuotaExceeded,
            message: "the queue is full".into(),
            retry_after_ms: None,
        }
    }

    /// A message that went out but could not be recorded says so, with
    /// its id and that it must not be sent again.
    #[test]
    fn a_message_sent_but_not_recorded_says_so() {
        let mut partly = sent(reach(&[1, 2], None), Some(reach(&[3], None)));
        partly.unrecorded = Some(ClientError::Store(sqlx::Error::Protocol(
            "disk I/O error".into(),
        )));
        let e = partly.outcome().unwrap_err();
        assert_eq!(e.exit().code(), 7, "{e}");
        assert_eq!(
            e.to_string(),
            format!(
                "message {ID} reached devices 1 and 2 of +12025550102. It could not be recorded \
                 in your history (local storage in the home directory failed: encountered \
                 unexpected or invalid data: disk I/O error); do not send it again: +12025550102 would get \
                 it twice"
            )
        );
    }

    #[test]
    fn a_send_cut_by_nothing_is_a_success() {
        let done = sent(reach(&[1, 2], None), Some(reach(&[2], None))).outcome();
        assert_eq!(done.unwrap().to_string(), ID);
        assert!(sent(reach(&[1], None), None).outcome().is_ok());
    }

    /// Every error that comes once a device has the message says it
    /// went out, which devices got it and which did not, and that a
    /// second send would be a second message; all end with status 7.
    #[test]
    fn every_cut_says_what_went_out_and_what_did_not() {
        let end = ". It is in your history; do not send it again: +12025550102 would get it twice";
        let rolled_back =
            || ClientError::Forged("the device list of +12025550101 is refused".into());
        let cases = [
            (
                sent(reach(&[1], cut(full(), &[2], None)), Some(reach(&[], None))),
                format!(
                    "message {ID} reached device 1 of +12025550102 but not device 2: the queue \
                     is full (quota_exceeded)"
                ),
            ),
            (
                sent(
                    reach(&[1], cut(ClientError::Disconnected, &[3, 2], Some(2))),
                    Some(reach(&[], cut(ClientError::Disconnected, &[], None))),
                ),
                format!(
                    "message {ID} reached device 1 of +12025550102 but perhaps not device 2, and \
                     not device 3: the server closed the connection; your other devices, if you \
                     have any, did not get their copy: the server closed the connection"
                ),
            ),
            (
                sent(
                    reach(
                        &[2, 1],
                        cut(
                            ClientError::ListKeptChanging {
                                phone: "+12025550102".into(),
                            },
                            &[],
                            None,
                        ),
                    ),
                    None,
                ),
                format!(
                    "message {ID} reached devices 1 and 2 of +12025550102 but no other device of \
                     theirs: the device list of +12025550102 kept changing while sending"
                ),
            ),
            (
                sent(
                    reach(&[1], None),
                    Some(reach(
                        &[],
                        Some(Cut::before_any(ClientError::NoDevicesYet {
                            phone: "+12025550101".into(),
                        })),
                    )),
                ),
                format!(
                    "message {ID} reached device 1 of +12025550102; your other devices, if you \
                     have any, did not get their copy: the server has no device list of \
                     +12025550101"
                ),
            ),
            (
                sent(
                    reach(&[1, 2, 3], None),
                    Some(reach(&[], cut(rolled_back(), &[2, 3], None))),
                ),
                format!(
                    "message {ID} reached devices 1, 2 and 3 of +12025550102; of your other \
                     devices, devices 2 and 3 did not get their copy: the device list of \
                     +12025550101 is refused"
                ),
            ),
            (
                sent(
                    reach(&[1], None),
                    Some(reach(
                        &[2],
                        cut(ClientError::Disconnected, &[3, 4], Some(3)),
                    )),
                ),
                format!(
                    "message {ID} reached device 1 of +12025550102; of your other devices, \
                     device 2 got its copy, device 4 did not, device 3 perhaps did not: the \
                     server closed the connection"
                ),
            ),
            (
                sent(
                    reach(&[1], None),
                    Some(reach(&[], cut(ClientError::Disconnected, &[3], Some(3)))),
                ),
                format!(
                    "message {ID} reached device 1 of +12025550102; of your other devices, \
                     device 3 perhaps did not get its copy: the server closed the connection"
                ),
            ),
        ];
        for (partly, said) in cases {
            let e = partly.outcome().unwrap_err();
            assert_eq!(e.to_string(), format!("{said}{end}"));
            assert_eq!(e.exit().code(), 7, "{e}");
            let text = e.to_string();
            assert!(!text.contains("try again"), "{text}");
        }
    }
}
