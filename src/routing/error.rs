//! Why routing refused a message or a broadcast. Each reason keeps its
//! facts, not a pre-formatted sentence; [`RouteError::code`] is the one
//! place a reason becomes a stable wire code, for clients and neighbours
//! alike.

use crate::crypto::CryptoError;
use crate::crypto::v2;
use crate::db::DbError;
use crate::domain::{MessageId, PhoneNumber};
use crate::protocol::envelope::EnvelopeError;
use crate::protocol::{self, CurrentDevices, ErrorCode};

/// Why a message or broadcast was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("no user is registered with the number {0}")]
    UnknownRecipient(PhoneNumber),
    #[error("the envelope is {0} bytes; the limit is {max} bytes", max = protocol::MAX_ENVELOPE_BYTES)]
    TooLarge(usize),
    #[error(
        "the broadcast text is {0} bytes of UTF-8; the limit is {max} bytes: shorten it",
        max = protocol::MAX_TEXT_BYTES
    )]
    TextTooLarge(usize),
    #[error("bad envelope: {0}")]
    Unreadable(EnvelopeError),
    #[error("the envelope names {named} as its sender but this session is logged in as {session}")]
    WrongSender {
        named: PhoneNumber,
        session: PhoneNumber,
    },
    #[error("the envelope is addressed to someone else than \"to\"")]
    WrongRecipient,
    #[error("the envelope is addressed to device {named}, not to \"device\" {request}")]
    WrongRecipientDevice { named: u32, request: u32 },
    #[error("the envelope's message id differs from \"id\"")]
    WrongId,
    /// A relayed message whose sender or recipient is not a phone number.
    #[error("bad {0}")]
    BadRelayedPhone(&'static str),
    #[error("message {0} carries a malformed path")]
    MalformedPath(MessageId),
    /// A relay naming as its sender a user of the receiving server: their
    /// messages leave from here and never arrive by a link.
    #[error(
        "{0} is a user of this server, so no relay comes from them; a neighbour that sends \
         one is forging it"
    )]
    RelayFromOurUser(PhoneNumber),
    /// A relay whose path starts at a server other than the sender's home
    /// as this server's directory records it.
    #[error(
        "{phone}'s home is {home}, not the server {origin} the relay's path starts at; only \
         messages sent from a user's home are delivered (if {phone} moved, send again once \
         their new entry has spread)"
    )]
    RelayNotFromHome {
        phone: PhoneNumber,
        home: crate::domain::Fingerprint,
        origin: String,
    },
    #[error("message {id} has crossed {hops} servers or came back")]
    TooManyHops { id: MessageId, hops: usize },
    #[error("the route to {0} leads back through a server already crossed")]
    RouteLoop(PhoneNumber),
    #[error("{0}'s message queue is full; try again after they have fetched their messages")]
    QueueFull(PhoneNumber),
    #[error("the queue towards {0}'s server is full; try again later")]
    NeighbourQueueFull(PhoneNumber),
    #[error(
        "you already hold all a single sender may of {0}'s message queue; try again after they \
         have fetched your messages"
    )]
    SenderShareFull(PhoneNumber),
    #[error(
        "another message to {0} is already queued under this id; send a new message under a \
         new random id (a retry must repeat the same envelope)"
    )]
    IdInUse(PhoneNumber),
    #[error("this session is logged in as {session}, not {claimed}")]
    NotTheAuthor {
        session: PhoneNumber,
        claimed: String,
    },
    /// The author's stored key cannot check a broadcast.
    #[error("{0}")]
    UnusableKey(CryptoError),
    #[error("the broadcast's signature does not verify with your key")]
    BadBroadcastSignature,
    #[error(
        "you are sending faster than this server allows ({} messages and {} bytes a second, \
         bursts of {} and {}); retry in {retry_after_ms} ms",
        limits.send_messages.whole_per_second(), limits.send_bytes.whole_per_second(),
        limits.send_messages.burst, limits.send_bytes.burst
    )]
    RateLimited {
        limits: super::Limits,
        retry_after_ms: u64,
    },
    #[error(
        "{phone} already has {max} sessions logged in on this server, the most it allows; \
         end one (carrier chat, another device) and log in again"
    )]
    TooManySessions { phone: PhoneNumber, max: usize },
    #[error(
        "v1 envelopes are no longer accepted{0}; seal a version 2 envelope per device \
         (device_send)"
    )]
    V1Refused(&'static str),
    #[error("bad envelope: {0}")]
    BadV2Envelope(v2::Error),
    #[error("the envelope names device {named} as its sender but this session is device {session}")]
    WrongDevice { named: u32, session: u32 },
    #[error("this request needs a device: log in with device_login")]
    NotADevice,
    #[error(
        "your list of {0}'s devices is out of date; check the current list in this error, seal \
         for its devices and send again"
    )]
    StaleDevices(PhoneNumber, Box<CurrentDevices>),
    #[error("the link towards {0}'s home server is down; try again later")]
    HomeUnreachable(PhoneNumber),
    #[error(
        "{0}'s home server did not answer the claim within {secs} s; try again later",
        secs = super::remote_claims::CLAIM_TIMEOUT.as_secs()
    )]
    ClaimTimeout(PhoneNumber),
    #[error("{0}'s home server sent an answer that does not fit the claim")]
    BadRemoteAnswer(PhoneNumber),
    /// The home server of a remote user refused; its code and message.
    #[error("{message}")]
    RemoteRefused { code: ErrorCode, message: String },
    #[error("bad {what}: {error}")]
    BadStatement {
        what: &'static str,
        error: v2::Error,
    },
    #[error("the {what} does not verify with the account's key: {error}")]
    NotCertified {
        what: &'static str,
        error: v2::Error,
    },
    #[error("a certificate is needed for each listed device, and no other; {0}")]
    CertificatesMismatch(&'static str),
    #[error("the stored device list has version {current}; publish a list with a higher version")]
    StaleList { current: u64 },
    #[error("the list names {listed} devices; this server allows {max} per account")]
    TooManyDevices { listed: usize, max: usize },
    #[error("{0} has no device {1} in its current list")]
    UnknownDevice(PhoneNumber, u32),
    /// A relayed message from a sender device this server cannot vouch
    /// for: not in the sender's list held here (removed), or still not
    /// after waiting for their list to arrive.
    #[error(
        "this server does not know device {device} of the sender {phone}: {why}; the message \
         was not delivered, send it again once the sender's device list has spread"
    )]
    UnknownSenderDevice {
        phone: PhoneNumber,
        device: u32,
        why: &'static str,
    },
    #[error("prekey {index} is refused: {error}")]
    BadPrekey { index: usize, error: v2::Error },
    #[error("send at most {max} {what} in one request")]
    TooMany { what: &'static str, max: usize },
    #[error("device {0} is named more than once; name each device once")]
    RepeatedDevice(u32),
    #[error(
        "you are claiming prekeys faster than this server allows ({per_minute} devices a \
         minute); retry in {retry_after_ms} ms"
    )]
    ClaimsLimited {
        per_minute: u64,
        retry_after_ms: u64,
    },
    #[error("{0}")]
    BadLink(&'static str),
    #[error(
        "no link code is open with that rendezvous (never opened, already used, or expired); \
         make a new code on a device of the account"
    )]
    NoLink,
    /// Work handed to a blocking thread did not finish (the runtime is
    /// shutting down).
    #[error("{0} was interrupted")]
    Interrupted(&'static str),
    /// Too many relayed messages wait for device lists: the message is
    /// left unacknowledged, so the neighbour keeps it and sends it again.
    #[error("too many relayed messages wait for their senders' device lists; try again later")]
    TryLater,
    #[error(transparent)]
    Db(#[from] DbError),
}

impl RouteError {
    /// The stable code a client or a neighbour is told. A failure inside
    /// the server is `internal` (nobody outside learns more, the log gets
    /// the cause), or the storage's own code when the store is full or
    /// unreachable.
    pub fn code(&self) -> ErrorCode {
        match self {
            RouteError::UnknownRecipient(_) => ErrorCode::UnknownUser,
            RouteError::TooLarge(_) | RouteError::TextTooLarge(_) => ErrorCode::MessageTooLarge,
            RouteError::WrongSender { .. }
            | RouteError::RelayFromOurUser(_)
            | RouteError::RelayNotFromHome { .. }
            | RouteError::NotTheAuthor { .. }
            | RouteError::BadBroadcastSignature => ErrorCode::Forbidden,
            RouteError::QueueFull(_)
            | RouteError::NeighbourQueueFull(_)
            | RouteError::SenderShareFull(_) => ErrorCode::QuotaExceeded,
            RouteError::Unreadable(_)
            | RouteError::WrongRecipient
            | RouteError::WrongRecipientDevice { .. }
            | RouteError::WrongId
            | RouteError::BadRelayedPhone(_)
            | RouteError::MalformedPath(_)
            | RouteError::TooManyHops { .. }
            | RouteError::RouteLoop(_)
            | RouteError::UnusableKey(_) => ErrorCode::BadEnvelope,
            RouteError::IdInUse(_) => ErrorCode::DuplicateId,
            RouteError::RateLimited { .. }
            | RouteError::TooManySessions { .. }
            | RouteError::ClaimsLimited { .. } => ErrorCode::RateLimited,
            RouteError::V1Refused(_) | RouteError::BadV2Envelope(_) => ErrorCode::BadEnvelope,
            RouteError::WrongDevice { .. } | RouteError::NotADevice => ErrorCode::Forbidden,
            RouteError::StaleDevices(..) => ErrorCode::StaleDevices,
            RouteError::HomeUnreachable(_)
            | RouteError::ClaimTimeout(_)
            | RouteError::BadRemoteAnswer(_) => ErrorCode::Unavailable,
            RouteError::RemoteRefused { code, .. } => *code,
            RouteError::BadStatement { .. }
            | RouteError::CertificatesMismatch(_)
            | RouteError::TooMany { .. }
            | RouteError::RepeatedDevice(_) => ErrorCode::BadRequest,
            RouteError::NotCertified { .. } => ErrorCode::BadSignature,
            RouteError::StaleList { .. } => ErrorCode::StaleList,
            RouteError::TooManyDevices { .. } => ErrorCode::TooManyDevices,
            RouteError::UnknownDevice(..) | RouteError::UnknownSenderDevice { .. } => {
                ErrorCode::UnknownDevice
            }
            RouteError::BadPrekey { .. } => ErrorCode::BadPrekey,
            RouteError::Interrupted(_) => ErrorCode::Internal,
            RouteError::TryLater => ErrorCode::Unavailable,
            RouteError::BadLink(_) => ErrorCode::BadRequest,
            RouteError::NoLink => ErrorCode::NoLink,
            RouteError::Db(e) => e.code(),
        }
    }

    /// When a refusal is only for now: in how many milliseconds to retry.
    pub fn retry_after_ms(&self) -> Option<u64> {
        match self {
            RouteError::RateLimited { retry_after_ms, .. }
            | RouteError::ClaimsLimited { retry_after_ms, .. } => Some(*retry_after_ms),
            _ => None,
        }
    }

    /// For `stale_devices`: the recipient's current devices, which the
    /// refusal carries so the sender can seal for them and retry.
    pub fn current_devices(&self) -> Option<CurrentDevices> {
        match self {
            RouteError::StaleDevices(_, devices) => Some((**devices).clone()),
            _ => None,
        }
    }
}
