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
    /// Something failed inside the server; the request may be retried.
    Internal,
}
