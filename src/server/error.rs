//! The error a handler returns: a stable code for the client and a message
//! that says what to do. Internal causes are logged, never sent.

use crate::auth::otp::OtpError;
use crate::db::DbError;
use crate::protocol::{ErrorCode, Response};
use crate::routing::RouteError;

/// A refused request.
#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn into_response(self) -> Response {
        Response::Error {
            code: self.code,
            message: self.message,
        }
    }

    fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "request failed inside the server");
        Self::new(
            ErrorCode::Internal,
            "the server failed to complete the request; try again",
        )
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        Self::from(&e)
    }
}

impl From<&DbError> for ApiError {
    fn from(e: &DbError) -> Self {
        match e.code() {
            ErrorCode::Internal => Self::internal(e),
            code => Self::new(code, e.to_string()),
        }
    }
}

impl From<OtpError> for ApiError {
    fn from(e: OtpError) -> Self {
        let code = match &e {
            OtpError::RateLimited { .. } => ErrorCode::RateLimited,
            OtpError::NoPendingCode => ErrorCode::NoPendingCode,
            OtpError::Expired => ErrorCode::CodeExpired,
            OtpError::Wrong { .. } | OtpError::Malformed => ErrorCode::WrongCode,
            OtpError::Dead { .. } => ErrorCode::CodeDead,
            OtpError::Db(e) => return e.into(),
            OtpError::Delivery(_) => return Self::internal(&e),
        };
        Self::new(code, e.to_string())
    }
}

impl From<RouteError> for ApiError {
    fn from(e: RouteError) -> Self {
        let code = match &e {
            RouteError::UnknownRecipient(_) => ErrorCode::UnknownUser,
            RouteError::BadEnvelope(_) => ErrorCode::BadEnvelope,
            RouteError::Forbidden(_) => ErrorCode::Forbidden,
            RouteError::TooLarge(_) => ErrorCode::MessageTooLarge,
            RouteError::QuotaFull(_) => ErrorCode::QuotaExceeded,
            RouteError::Loop(_) => ErrorCode::BadEnvelope,
            RouteError::InvalidPhone(_) => ErrorCode::InvalidPhone,
            RouteError::IdInUse(_) => ErrorCode::DuplicateId,
            RouteError::Db(e) => return e.into(),
        };
        Self::new(code, e.to_string())
    }
}
