//! Property tests (proptest): the frame codec, the envelope layout and the
//! signed statements round-trip whatever they carry, their parsers never
//! panic on arbitrary bytes, and every place Carrier checks a signature
//! refuses the malleated, zero and misfit forms of a valid one.

mod envelope;
mod frame;
mod statements;

use carrier::domain::PhoneNumber;
use proptest::prelude::*;

/// Valid E.164 numbers from several numbering plans; arbitrary strings are
/// almost never valid phones, so the properties draw from these.
const PHONES: &[&str] = &[
    "+12025550101",
    "+12025550102",
    "+447700900123",
    "+33612345678",
    "+4915123456789",
    "+819012345678",
    "+61412345678",
];

pub fn phone() -> impl Strategy<Value = PhoneNumber> {
    proptest::sample::select(PHONES).prop_map(|p| PhoneNumber::from_canonical(p).unwrap())
}
