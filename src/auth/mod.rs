//! Rules of identity: the one-time-code life cycle, where codes are sent,
//! and the proofs of key possession that registration and login require.

pub mod code_key;
pub mod code_sink;
pub mod otp;
pub mod proof;
