//! Values parsed once at the edge. Each type has private fields and a `parse`
//! constructor, so an unchecked string never reaches storage or routing;
//! [`ClientPrefix`] is made from a peer's address, which needs no parsing.

mod client_prefix;
mod fingerprint;
mod message_id;
mod phone;

pub use client_prefix::ClientPrefix;
pub use fingerprint::Fingerprint;
pub use message_id::MessageId;
pub use phone::{MAX_PHONE_LEN, PhoneError, PhoneNumber};
