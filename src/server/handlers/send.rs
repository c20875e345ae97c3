//! `send`: protocol v1's request to queue one envelope for an account. It
//! is retired: every account has devices, and a message is sealed once per
//! device and sent with `device_send`. The request is still recognised so
//! that an old client learns exactly that, under a stable code, rather than
//! `unknown_request`.

use super::ApiError;
use crate::protocol::ErrorCode;

/// What every `send` is told.
pub const RETIRED: &str =
    "protocol v1's send is retired: seal one envelope per device and use device_send";

pub fn handle() -> ApiError {
    ApiError::new(ErrorCode::VersionRetired, RETIRED)
}
