//! The JSON shapes protocol v2 adds for devices (docs/PROTOCOL.md §5):
//! an account's current devices as `lookup` and a `stale_devices` refusal
//! carry them, and when each device was last seen. The signed bytes inside
//! are laid out by `crypto::v2`; here they are opaque base64.

use serde::{Deserialize, Serialize};

use super::B64;

/// An account's current signed device list and one bundle (§10.2) per
/// listed device that has published its prekeys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CurrentDevices {
    pub device_list: B64,
    pub bundles: Vec<B64>,
}

/// When a device last logged in, in milliseconds since the Unix epoch (0:
/// never).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastSeen {
    pub device: u32,
    pub at: i64,
}
