//! The error a handler returns: a stable code for the client and a message
//! that says what to do. Each error type below it owns its mapping to a code
//! (`code()`); this file only carries the result to the wire. Internal
//! causes are logged, never sent.

use crate::auth::otp::OtpError;
use crate::auth::proof::ProofRefused;
use crate::db::DbError;
use crate::protocol::{CurrentDevices, ErrorCode, Response};
use crate::routing::RouteError;

/// A refused request.
#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// For a refusal that holds only for now: when to retry, in ms.
    pub retry_after_ms: Option<u64>,
    /// For a wrong code that spent a try: how many the code has left.
    pub tries_left: Option<u32>,
    /// For `stale_devices`: the recipient's current devices.
    pub devices: Option<CurrentDevices>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after_ms: None,
            tries_left: None,
            devices: None,
        }
    }

    pub fn into_response(self) -> Response {
        Response::Error {
            code: self.code,
            message: self.message,
            retry_after_ms: self.retry_after_ms,
            tries_left: self.tries_left,
            devices: self.devices,
        }
    }

    /// An error under its own code, or, for a failure inside the server,
    /// a generic answer while the cause goes to the log.
    fn coded(code: ErrorCode, cause: &dyn std::fmt::Display) -> Self {
        if code != ErrorCode::Internal {
            return Self::new(code, cause.to_string());
        }
        tracing::error!(error = %cause, "request failed inside the server");
        Self::new(
            ErrorCode::Internal,
            "the server failed to complete the request; try again",
        )
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        Self::coded(e.code(), &e)
    }
}

impl From<OtpError> for ApiError {
    fn from(e: OtpError) -> Self {
        Self {
            retry_after_ms: e.retry_after_ms(),
            tries_left: e.tries_left(),
            ..Self::coded(e.code(), &e)
        }
    }
}

impl From<RouteError> for ApiError {
    fn from(e: RouteError) -> Self {
        Self {
            retry_after_ms: e.retry_after_ms(),
            devices: e.current_devices(),
            ..Self::coded(e.code(), &e)
        }
    }
}

impl From<ProofRefused> for ApiError {
    fn from(e: ProofRefused) -> Self {
        Self::coded(e.code(), &e)
    }
}
