//! Everything that can go wrong on the client side, each with a message that
//! says what to do, and the one mapping from an error to the `carrier`
//! command's exit status.

use crate::domain::Fingerprint;
use crate::protocol::ErrorCode;
use crate::tls::ConnectError;

/// Everything that can go wrong on the client side.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{}", connect_advice(.0))]
    Connect(#[from] ConnectError),
    /// The server's host name does not resolve.
    #[error("cannot reach a Carrier server at {addr}: {reason}")]
    Unreachable { addr: String, reason: String },
    /// A refusal from the server: its code and message, and, for one that
    /// holds only for now, the milliseconds it said to wait, so the advice
    /// given can name the wait without reading the message.
    #[error("{message} ({code})", code = code.as_str())]
    Server {
        code: ErrorCode,
        message: String,
        retry_after_ms: Option<u64>,
    },
    /// The server is up but does not accept this home's account.
    #[error("{0}")]
    AccountRefused(String),
    #[error("the server closed the connection")]
    Disconnected,
    #[error("the server answered something unexpected: {0}")]
    Protocol(String),
    #[error("no account in {0}: run `carrier register <phone>` first")]
    NoAccount(std::path::PathBuf),
    #[error(
        "the key of {phone} changed: pinned {pinned}, the server now reports {current}. \
         Check the new fingerprint with them, then run \
         `carrier trust {phone} --fingerprint {current}`"
    )]
    KeyChanged {
        phone: String,
        pinned: Fingerprint,
        current: Fingerprint,
    },
    /// `trust --fingerprint` named another key than the server reports.
    #[error(
        "the server reports key {current} for {phone}, not {expected} as given with \
         --fingerprint; nothing was pinned. Check the fingerprint with {phone} again"
    )]
    NotTheExpectedKey {
        phone: String,
        expected: Fingerprint,
        current: Fingerprint,
    },
    /// Something signed that does not verify (forged, or from a key that
    /// changed).
    #[error("{0}")]
    Forged(String),
    /// The user answered no at a prompt.
    #[error("{0}")]
    Declined(String),
    #[error("{0}")]
    Input(String),
    /// The server holds no device list for a user: their home is another
    /// server whose list has not come through the neighbourhood yet (the
    /// common case, which a retry mends), or they never published one.
    #[error(
        "{phone} has no device list on this server yet: their home is another server and \
         their devices have not reached this one yet (try again in a moment), or they \
         registered with a carrier older than protocol v2 and need a current one"
    )]
    NoDevicesYet { phone: String },
    /// A user's devices are listed, but none can receive now: no bundle
    /// published, or only bundles out of date. A later try may pass.
    #[error("{0}")]
    NoDeviceReady(String),
    /// A send followed a changed device list (`stale_devices`) as often as
    /// it may, and the list had changed again.
    #[error("the device list of {phone} kept changing while sending; try again")]
    ListKeptChanging { phone: String },
    /// A send cut short after its message went out: it is in the history,
    /// and the message says which devices got it and which did not.
    #[error("{0}")]
    PartlySent(Box<super::device::partly::PartlySent>),
    #[error(transparent)]
    Crypto(#[from] crate::crypto::CryptoError),
    /// A protocol v2 value that does not check out (a device list, a
    /// bundle, stored state).
    #[error("{0}")]
    V2(#[from] crate::crypto::v2::Error),
    #[error("local storage in the home directory failed: {0}")]
    Store(#[from] sqlx::Error),
    #[error(
        "cannot bring the store in the home directory up to date: {0}. \
         Was it written by a newer carrier?"
    )]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

/// What went wrong while connecting, and what to do about it.
fn connect_advice(e: &ConnectError) -> String {
    match e {
        ConnectError::KeyChanged {
            expected,
            presented,
        } => format!(
            "the server presented key {presented}, not the expected {expected} (pinned in this \
             home for this address, or given with --server-fingerprint). This could be an \
             attack (someone intercepting the connection); nothing was sent. Once the server's \
             operator confirms that {presented} is its new key, run the command again with \
             --server-fingerprint {presented} to pin it"
        ),
        ConnectError::Unreachable { addr, source }
            if source.kind() == std::io::ErrorKind::ConnectionRefused =>
        {
            format!(
                "nothing accepts connections at {addr} ({source}): is carrier-server running \
                 there, and is this the port it prints as \"Listening on …\"?"
            )
        }
        // A busy server closes connections it cannot serve yet, before
        // their handshake ends: the same as a port that is not TLS at all.
        ConnectError::Handshake(source)
            if matches!(
                source.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
            ) =>
        {
            format!(
                "the server closed the connection during the TLS handshake ({source}): it may \
                 be serving as many connections as it can (try again in a moment), or this is \
                 not a Carrier server's client port (not its port for neighbour servers)"
            )
        }
        ConnectError::Handshake(source) => format!(
            "the TLS handshake with the server failed ({source}): is this a Carrier server's \
             client port (not its port for neighbour servers)?"
        ),
        other => other.to_string(),
    }
}

/// Reads a key file of the home (`identity.pem`, `state.pem`). One that is
/// encrypted, read without a passphrase, is a missing input: the error says
/// where the passphrase goes, which the key file cannot know.
pub(crate) fn load_key(
    path: &std::path::Path,
    passphrase: Option<&str>,
) -> Result<crate::crypto::Identity, ClientError> {
    crate::crypto::Identity::load(path, passphrase).map_err(|e| match e {
        crate::crypto::CryptoError::NeedsPassphrase => ClientError::Input(format!(
            "{} is encrypted with a passphrase: set CARRIER_PASSPHRASE to it (or pass \
             --passphrase) and run the command again",
            path.display()
        )),
        other => other.into(),
    })
}

/// The `carrier` command's exit status: one per kind of outcome, so scripts
/// can tell them apart. README.md lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: done.
    Success = 0,
    /// 1: anything not below (local files, a damaged store, a server fault).
    Failure = 1,
    /// 2: the command line or the input is wrong (also clap's status for a
    /// usage error).
    Usage = 2,
    /// 3: no such user, or no account in the home.
    NotFound = 3,
    /// 4: refused, by the server (wrong code, rate limit, a key it does not
    /// accept, a full queue…) or by the user at a prompt.
    Refused = 4,
    /// 5: no server could be reached, the connection was lost, or what is
    /// needed has not arrived yet (a remote user's devices): try again.
    Unreachable = 5,
    /// 6: a key is not the one pinned or given: a contact's, or the server's.
    KeyChanged = 6,
    /// 7: a message went out but the send was cut short: some devices did
    /// not get it. It is in the history; sending it again would make a
    /// second message, so no status that means "try again" fits.
    PartlySent = 7,
}

impl Exit {
    pub fn code(self) -> i32 {
        self as i32
    }
}

impl ClientError {
    /// The exit status `carrier` ends with after this error.
    pub fn exit(&self) -> Exit {
        match self {
            ClientError::Connect(ConnectError::KeyChanged { .. })
            | ClientError::KeyChanged { .. }
            | ClientError::NotTheExpectedKey { .. } => Exit::KeyChanged,
            ClientError::Connect(_)
            | ClientError::Unreachable { .. }
            | ClientError::Disconnected
            | ClientError::NoDevicesYet { .. }
            | ClientError::NoDeviceReady(_) => Exit::Unreachable,
            ClientError::Server { code, .. } => exit_for(*code),
            ClientError::AccountRefused(_) | ClientError::Declined(_) | ClientError::Forged(_) => {
                Exit::Refused
            }
            ClientError::NoAccount(_) => Exit::NotFound,
            ClientError::Input(_) => Exit::Usage,
            ClientError::PartlySent(_) => Exit::PartlySent,
            ClientError::ListKeptChanging { .. }
            | ClientError::Protocol(_)
            | ClientError::Crypto(_)
            | ClientError::V2(_)
            | ClientError::Store(_)
            | ClientError::Migrate(_)
            | ClientError::Io { .. } => Exit::Failure,
        }
    }
}

/// The exit status for a server's refusal. Every code is named, so a new one
/// cannot go unclassified.
fn exit_for(code: ErrorCode) -> Exit {
    match code {
        ErrorCode::UnknownUser => Exit::NotFound,
        ErrorCode::InvalidPhone => Exit::Usage,
        ErrorCode::RateLimited
        | ErrorCode::NoPendingCode
        | ErrorCode::WrongCode
        | ErrorCode::CodeExpired
        | ErrorCode::CodeDead
        | ErrorCode::BadSignature
        | ErrorCode::Forbidden
        | ErrorCode::InvalidKey
        | ErrorCode::BadEnvelope
        | ErrorCode::MessageTooLarge
        | ErrorCode::QuotaExceeded
        | ErrorCode::NotLoggedIn
        | ErrorCode::AlreadyLoggedIn
        | ErrorCode::NoChallenge
        | ErrorCode::DuplicateId
        | ErrorCode::StaleDevices
        | ErrorCode::StaleList
        | ErrorCode::TooManyDevices
        | ErrorCode::BadPrekey
        | ErrorCode::AccountDisabled
        | ErrorCode::NoLink => Exit::Refused,
        ErrorCode::UnknownDevice => Exit::NotFound,
        ErrorCode::ShuttingDown
        | ErrorCode::TooManyInFlight
        | ErrorCode::ServerBusy
        | ErrorCode::Unavailable => Exit::Unreachable,
        ErrorCode::StorageFull
        | ErrorCode::StorageUnavailable
        | ErrorCode::MalformedJson
        | ErrorCode::BadRequest
        | ErrorCode::UnknownRequest
        | ErrorCode::FrameTooLarge
        | ErrorCode::VersionRetired
        | ErrorCode::Internal => Exit::Failure,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A handshake cut short by the server may be a busy server, and the
    /// advice says so; one that failed otherwise points at the port.
    #[test]
    fn a_handshake_the_server_cut_short_may_be_a_busy_server() {
        let closed = ClientError::Connect(ConnectError::Handshake(std::io::Error::from(
            std::io::ErrorKind::UnexpectedEof,
        )))
        .to_string();
        assert!(closed.contains("try again in a moment"), "{closed}");
        let refused = ClientError::Connect(ConnectError::Handshake(std::io::Error::other(
            "bad certificate",
        )))
        .to_string();
        assert!(!refused.contains("try again"), "{refused}");
        assert!(
            refused.contains("is this a Carrier server's client port"),
            "{refused}"
        );
    }

    #[test]
    fn each_kind_of_outcome_has_its_own_status() {
        let fp = Fingerprint::of_spki(b"k");
        let cases = [
            (ClientError::Input("x".into()), 2),
            (ClientError::NoAccount("/h".into()), 3),
            (
                ClientError::Server {
                    code: ErrorCode::UnknownUser,
                    message: String::new(),
                    retry_after_ms: None,
                },
                3,
            ),
            (
                ClientError::Server {
                    code: ErrorCode::WrongCode,
                    message: String::new(),
                    retry_after_ms: None,
                },
                4,
            ),
            (
                ClientError::Server {
                    code: ErrorCode::NoLink,
                    message: String::new(),
                    retry_after_ms: None,
                },
                4,
            ),
            (
                ClientError::Unreachable {
                    addr: "a".into(),
                    reason: "r".into(),
                },
                5,
            ),
            (ClientError::Disconnected, 5),
            (ClientError::NoDevicesYet { phone: "p".into() }, 5),
            (ClientError::NoDeviceReady("p".into()), 5),
            (ClientError::Forged("p".into()), 4),
            (
                ClientError::KeyChanged {
                    phone: "p".into(),
                    pinned: fp,
                    current: fp,
                },
                6,
            ),
            (
                ClientError::from(ConnectError::KeyChanged {
                    expected: fp,
                    presented: fp,
                }),
                6,
            ),
            (ClientError::Protocol("x".into()), 1),
            (ClientError::ListKeptChanging { phone: "p".into() }, 1),
        ];
        for (e, status) in cases {
            assert_eq!(e.exit().code(), status, "{e}");
        }
    }
}
