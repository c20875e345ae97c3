//! Byte layouts of the signed statements besides envelopes: a directory
//! entry and its withdrawal (signed by the user's home server) and a public
//! broadcast (signed by its author). Each starts with a distinct label so a signature made for one
//! can never be taken for the other, or for a login transcript.

use crate::domain::MessageId;

/// What a home server signs to vouch that `phone` uses `public_key` there:
/// `"carrier-v1 directory" ‖ 0x00 ‖ u8 phone_len ‖ phone ‖ u8 key_type_len ‖
/// key_type ‖ u16 key_len ‖ public_key ‖ i64 registered_at ‖ u16 home_key_len ‖
/// home_key ‖ u8 name_len ‖ home_name` (integers big-endian).
pub fn directory_entry_bytes(
    phone: &str,
    key_type: &str,
    public_key: &[u8],
    registered_at: i64,
    home_key: &[u8],
    home_name: &str,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + public_key.len() + home_key.len());
    out.extend_from_slice(b"carrier-v1 directory\0");
    short(&mut out, phone.as_bytes());
    short(&mut out, key_type.as_bytes());
    medium(&mut out, public_key);
    out.extend_from_slice(&registered_at.to_be_bytes());
    medium(&mut out, home_key);
    short(&mut out, home_name.as_bytes());
    out
}

/// What a home server signs to withdraw the registration of `phone` made
/// at `registered_at` (the user was deleted there at `withdrawn_at`):
/// `"carrier-v1 withdrawal" ‖ 0x00 ‖ u8 phone_len ‖ phone ‖ i64
/// registered_at ‖ i64 withdrawn_at ‖ u16 home_key_len ‖ home_key`.
pub fn withdrawal_bytes(
    phone: &str,
    registered_at: i64,
    withdrawn_at: i64,
    home_key: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + home_key.len());
    out.extend_from_slice(b"carrier-v1 withdrawal\0");
    short(&mut out, phone.as_bytes());
    out.extend_from_slice(&registered_at.to_be_bytes());
    out.extend_from_slice(&withdrawn_at.to_be_bytes());
    medium(&mut out, home_key);
    out
}

/// What an author signs to broadcast `text`:
/// `"carrier-v1 broadcast" ‖ 0x00 ‖ id[16] ‖ u64 sent_at ‖ u8 from_len ‖ from ‖
/// u32 text_len ‖ text`.
pub fn broadcast_bytes(id: &MessageId, sent_at: u64, from: &str, text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + text.len());
    out.extend_from_slice(b"carrier-v1 broadcast\0");
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(&sent_at.to_be_bytes());
    short(&mut out, from.as_bytes());
    out.extend_from_slice(&(text.len() as u32).to_be_bytes());
    out.extend_from_slice(text.as_bytes());
    out
}

/// Appends a field of at most 255 bytes with a one-byte length (longer input
/// is cut, which callers prevent by validating first).
fn short(out: &mut Vec<u8>, field: &[u8]) {
    let field = &field[..field.len().min(255)];
    out.push(field.len() as u8);
    out.extend_from_slice(field);
}

fn medium(out: &mut Vec<u8>, field: &[u8]) {
    let field = &field[..field.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(field.len() as u16).to_be_bytes());
    out.extend_from_slice(field);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_keep_statements_apart() {
        let d = directory_entry_bytes("+12025550101", "p256", &[1, 2], 7, &[3], "a:1");
        let b = broadcast_bytes(&MessageId::from_bytes([0; 16]), 7, "+12025550101", "hi");
        assert!(d.starts_with(b"carrier-v1 directory\0"));
        assert!(b.starts_with(b"carrier-v1 broadcast\0"));
        let w = withdrawal_bytes("+12025550101", 7, 8, &[3]);
        assert!(w.starts_with(b"carrier-v1 withdrawal\0"));
        assert_eq!(w.len(), 22 + 13 + 8 + 8 + 3);
        assert_eq!(d.len(), 21 + 13 + 5 + 4 + 8 + 3 + 4);
        assert_eq!(b.len(), 21 + 16 + 8 + 13 + 4 + 2);
    }
}
