//! How domain types are stored: a `MessageId` as its 16-byte blob, a
//! `Fingerprint` as lowercase hex, a `PhoneNumber` as its E.164 text, and a
//! [`QueueKey`] as the value of its table's owner column. These impls keep
//! the conversions inside `db`, so the rest of the server passes its types
//! to storage and gets them back.

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::sqlite::{Sqlite, SqliteArgumentsBuffer, SqliteTypeInfo, SqliteValueRef};
use sqlx::{Decode, Encode, Type};

use super::queue::QueueKey;
use crate::domain::{Fingerprint, MessageId, PhoneNumber};

impl Type<Sqlite> for MessageId {
    fn type_info() -> SqliteTypeInfo {
        <&[u8] as Type<Sqlite>>::type_info()
    }

    fn compatible(ty: &SqliteTypeInfo) -> bool {
        <&[u8] as Type<Sqlite>>::compatible(ty)
    }
}

impl Encode<'_, Sqlite> for MessageId {
    fn encode_by_ref(&self, buf: &mut SqliteArgumentsBuffer) -> Result<IsNull, BoxDynError> {
        <&[u8] as Encode<Sqlite>>::encode(self.as_bytes(), buf)
    }
}

impl<'r> Decode<'r, Sqlite> for MessageId {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        let bytes = <&[u8] as Decode<Sqlite>>::decode(value)?;
        MessageId::from_slice(bytes)
            .ok_or_else(|| format!("a stored message id is {} bytes long", bytes.len()).into())
    }
}

impl Type<Sqlite> for Fingerprint {
    fn type_info() -> SqliteTypeInfo {
        <&str as Type<Sqlite>>::type_info()
    }
}

impl Encode<'_, Sqlite> for Fingerprint {
    fn encode_by_ref(&self, buf: &mut SqliteArgumentsBuffer) -> Result<IsNull, BoxDynError> {
        <String as Encode<Sqlite>>::encode(self.to_hex(), buf)
    }
}

impl<'r> Decode<'r, Sqlite> for Fingerprint {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        let hex = <&str as Decode<Sqlite>>::decode(value)?;
        Fingerprint::parse(hex).ok_or_else(|| "a stored fingerprint is not 64 hex digits".into())
    }
}

impl Type<Sqlite> for PhoneNumber {
    fn type_info() -> SqliteTypeInfo {
        <&str as Type<Sqlite>>::type_info()
    }
}

impl Encode<'_, Sqlite> for PhoneNumber {
    fn encode_by_ref(&self, buf: &mut SqliteArgumentsBuffer) -> Result<IsNull, BoxDynError> {
        <&str as Encode<Sqlite>>::encode(self.as_str(), buf)
    }
}

impl Type<Sqlite> for QueueKey<'_> {
    fn type_info() -> SqliteTypeInfo {
        <&str as Type<Sqlite>>::type_info()
    }
}

impl Encode<'_, Sqlite> for QueueKey<'_> {
    fn encode_by_ref(&self, buf: &mut SqliteArgumentsBuffer) -> Result<IsNull, BoxDynError> {
        match self {
            QueueKey::Recipient(phone) => phone.encode_by_ref(buf),
            QueueKey::Neighbour(fp) => fp.encode_by_ref(buf),
        }
    }
}
