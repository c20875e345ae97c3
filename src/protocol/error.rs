//! The stable error codes of the wire protocol.

use serde::{Deserialize, Serialize};

/// Stable error codes sent on the wire. Clients match on these; the message
/// beside them is for people and may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame was not valid JSON.
    MalformedJson,
    /// The JSON was valid but a field was missing or of the wrong type.
    BadRequest,
    /// The `type` names no request this server knows.
    UnknownRequest,
    /// The frame exceeded the maximum frame size; the connection is closed.
    FrameTooLarge,
    /// The request needs a logged-in session.
    NotLoggedIn,
    /// The session is already logged in.
    AlreadyLoggedIn,
    /// The phone number is not a valid E.164 number.
    InvalidPhone,
    /// The public key could not be parsed or is of an unsupported kind.
    InvalidKey,
    /// Too many requests of this kind; try again later.
    RateLimited,
    /// No code is pending for this phone (never requested, or already used).
    NoPendingCode,
    /// The code is wrong; the message says how many tries remain.
    WrongCode,
    /// The code expired; ask for a new one.
    CodeExpired,
    /// Too many wrong tries; the code is dead.
    CodeDead,
    /// No challenge was requested on this connection, or it was used already.
    NoChallenge,
    /// The signature does not verify.
    BadSignature,
    /// No user is registered with this phone number.
    UnknownUser,
    /// The request acts for another user.
    Forbidden,
    /// The envelope is malformed or does not match the request.
    BadEnvelope,
    /// The message exceeds the maximum message size.
    MessageTooLarge,
    /// The recipient's queue is full.
    QuotaExceeded,
    /// Too many requests in flight on this connection.
    TooManyInFlight,
    /// The server is shutting down; reconnect later.
    ShuttingDown,
    /// The server's storage is full: nothing was stored; retry later.
    StorageFull,
    /// The server's database cannot be reached: nothing was stored; retry later.
    StorageUnavailable,
    /// A different message was already sent under this id.
    DuplicateId,
    /// The server cannot take another connection now; retry later.
    ServerBusy,
    /// The sender's view of the recipient's devices is out of date; the
    /// error carries the current `device_list` and `bundles`.
    StaleDevices,
    /// A published device list's version is not higher than the stored one.
    StaleList,
    /// A device list names more devices than this server allows.
    TooManyDevices,
    /// No such device in the account's current list.
    UnknownDevice,
    /// A published prekey's signature or form is wrong.
    BadPrekey,
    /// The user's home server cannot be reached now.
    Unavailable,
    /// No open link code with that rendezvous (never, used, or expired).
    NoLink,
    /// An operator has disabled this account; it cannot log in.
    AccountDisabled,
    /// Something failed inside the server; the request may be retried.
    Internal,
    /// The request belongs to a protocol version the server no longer
    /// serves (protocol v1's `send`): use its version 2 replacement.
    VersionRetired,
}

impl ErrorCode {
    /// The code's name on the wire, as clients match on it: the same string
    /// serde writes for this variant.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MalformedJson => "malformed_json",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownRequest => "unknown_request",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::NotLoggedIn => "not_logged_in",
            ErrorCode::AlreadyLoggedIn => "already_logged_in",
            ErrorCode::InvalidPhone => "invalid_phone",
            ErrorCode::InvalidKey => "invalid_key",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::NoPendingCode => "no_pending_code",
            ErrorCode::WrongCode => "wrong_code",
            ErrorCode::CodeExpired => "code_expired",
            ErrorCode::CodeDead => "code_dead",
            ErrorCode::NoChallenge => "no_challenge",
            ErrorCode::BadSignature => "bad_signature",
            ErrorCode::UnknownUser => "unknown_user",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::BadEnvelope => "bad_envelope",
            ErrorCode::MessageTooLarge => "message_too_large",
            ErrorCode::QuotaExceeded => "quota_exceeded",
            ErrorCode::TooManyInFlight => "too_many_in_flight",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::StorageFull => "storage_full",
            ErrorCode::StorageUnavailable => "storage_unavailable",
            ErrorCode::DuplicateId => "duplicate_id",
            ErrorCode::ServerBusy => "server_busy",
            ErrorCode::StaleDevices => "stale_devices",
            ErrorCode::StaleList => "stale_list",
            ErrorCode::TooManyDevices => "too_many_devices",
            ErrorCode::UnknownDevice => "unknown_device",
            ErrorCode::BadPrekey => "bad_prekey",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::NoLink => "no_link",
            ErrorCode::AccountDisabled => "account_disabled",
            ErrorCode::Internal => "internal",
            ErrorCode::VersionRetired => "version_retired",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorCode;

    /// Every name serde gives a variant, read from its "unknown variant"
    /// error, so a variant added later cannot be left out of the test.
    fn serde_names() -> Vec<String> {
        let error = serde_json::from_value::<ErrorCode>(serde_json::json!("no such code"))
            .unwrap_err()
            .to_string();
        let (_, names) = error
            .split_once("expected one of ")
            .unwrap_or_else(|| panic!("serde's error lists no variants: {error}"));
        names
            .split(", ")
            .map(|n| n.trim_matches('`').to_owned())
            .collect()
    }

    #[test]
    fn as_str_is_the_name_serde_writes_for_every_variant() {
        let names = serde_names();
        assert!(names.len() >= 28, "only {names:?}");
        for name in names {
            let code: ErrorCode = serde_json::from_value(serde_json::json!(name)).unwrap();
            assert_eq!(code.as_str(), name);
            assert_eq!(serde_json::to_value(code).unwrap(), serde_json::json!(name));
        }
    }
}
