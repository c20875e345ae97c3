//! How domain types are stored, the same on both backends: a `MessageId` as
//! its 16 bytes (BLOB, BYTEA), a `Fingerprint` as lowercase hex, a
//! `PhoneNumber` as its E.164 text, and a [`QueueKey`] as the value of its
//! table's owner column. The impls hold for any sqlx database that stores
//! bytes and text, so the rest of the server passes its types to storage
//! and gets them back on either backend.

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::{Database, Decode, Encode, Type};

use super::queue::QueueKey;
use crate::domain::{Fingerprint, MessageId, PhoneNumber};

impl<DB: Database> Type<DB> for MessageId
where
    Vec<u8>: Type<DB>,
{
    fn type_info() -> DB::TypeInfo {
        <Vec<u8> as Type<DB>>::type_info()
    }

    fn compatible(ty: &DB::TypeInfo) -> bool {
        <Vec<u8> as Type<DB>>::compatible(ty)
    }
}

impl<'q, DB: Database> Encode<'q, DB> for MessageId
where
    for<'a> &'a [u8]: Encode<'q, DB>,
{
    fn encode_by_ref(&self, buf: &mut DB::ArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <&[u8] as Encode<DB>>::encode(self.as_bytes(), buf)
    }
}

impl<'r, DB: Database> Decode<'r, DB> for MessageId
where
    &'r [u8]: Decode<'r, DB>,
{
    fn decode(value: DB::ValueRef<'r>) -> Result<Self, BoxDynError> {
        let bytes = <&[u8] as Decode<DB>>::decode(value)?;
        MessageId::from_slice(bytes)
            .ok_or_else(|| format!("a stored message id is {} bytes long", bytes.len()).into())
    }
}

/// Stored as text: the column's type is the backend's text type.
macro_rules! text_column {
    ($($t:ty),*) => {$(
        impl<DB: Database> Type<DB> for $t
        where
            String: Type<DB>,
        {
            fn type_info() -> DB::TypeInfo {
                <String as Type<DB>>::type_info()
            }

            fn compatible(ty: &DB::TypeInfo) -> bool {
                <String as Type<DB>>::compatible(ty)
            }
        }
    )*};
}

text_column!(Fingerprint, PhoneNumber, QueueKey<'_>);

impl<'q, DB: Database> Encode<'q, DB> for Fingerprint
where
    String: Encode<'q, DB>,
{
    fn encode_by_ref(&self, buf: &mut DB::ArgumentBuffer) -> Result<IsNull, BoxDynError> {
        self.to_hex().encode(buf)
    }
}

impl<'r, DB: Database> Decode<'r, DB> for Fingerprint
where
    &'r str: Decode<'r, DB>,
{
    fn decode(value: DB::ValueRef<'r>) -> Result<Self, BoxDynError> {
        let hex = <&str as Decode<DB>>::decode(value)?;
        Fingerprint::parse(hex).ok_or_else(|| "a stored fingerprint is not 64 hex digits".into())
    }
}

impl<'q, DB: Database> Encode<'q, DB> for PhoneNumber
where
    for<'a> &'a str: Encode<'q, DB>,
{
    fn encode_by_ref(&self, buf: &mut DB::ArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <&str as Encode<DB>>::encode(self.as_str(), buf)
    }
}

impl<'q, DB: Database> Encode<'q, DB> for QueueKey<'_>
where
    for<'a> &'a str: Encode<'q, DB>,
    String: Encode<'q, DB>,
{
    fn encode_by_ref(&self, buf: &mut DB::ArgumentBuffer) -> Result<IsNull, BoxDynError> {
        match self {
            QueueKey::Recipient(phone) => <&str as Encode<DB>>::encode(phone.as_str(), buf),
            QueueKey::Neighbour(fp) => fp.to_hex().encode(buf),
        }
    }
}

impl<'r, DB: Database> Decode<'r, DB> for PhoneNumber
where
    &'r str: Decode<'r, DB>,
{
    fn decode(value: DB::ValueRef<'r>) -> Result<Self, BoxDynError> {
        let text = <&str as Decode<DB>>::decode(value)?;
        Ok(PhoneNumber::from_canonical(text)?)
    }
}
