//! How the `carrier` command shows things, one line each: messages, refusals,
//! broadcasts, users and the history, as text or as JSON. `fetch`, `list`,
//! `history` and `chat` print the same lines, so they are written once here.
//!
//! Text from the network (message texts, broadcasts, phone numbers, names and
//! messages from the server) could steer a terminal: an escape sequence can
//! rewrite the screen, a newline can start a line that looks like another
//! sender's message, a right-to-left override can reverse who wrote what.
//! Lines for people therefore show every control character (C0, DEL, C1),
//! bidirectional control and line or paragraph separator as a visible escape
//! (`\n`, `\u{1b}`, `\u{202e}`; see [`clean`]). JSON keeps every string
//! exact: it decodes to precisely what was received, and those same
//! characters are written as `\uXXXX` escapes, so raw JSON lines are safe on
//! a terminal too.

use std::borrow::Cow;

use serde::Serialize;

use super::{Authorship, ClientError, HistoryEntry, LeftOut, Notice, Received, Refusal};
use crate::client::Direction;
use crate::clock::utc;
use crate::protocol::{Broadcast, ListedUser};

/// One JSON object, for the `--json` outputs: exact strings, with the
/// characters [`clean`] neutralises written as `\u` escapes.
pub fn json(value: &impl Serialize) -> String {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, EscapingFormatter);
    value
        .serialize(&mut ser)
        .expect("client records always serialise");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

/// `[time] sender: text`, or `[time] sender → recipient: text` for what
/// this account sent from another of its devices.
pub fn message(m: &Received) -> String {
    let to = match &m.to {
        Some(to) => format!(" → {}", clean(to)),
        None => String::new(),
    };
    format!(
        "[{}] {}{to}: {}",
        utc(m.sent_at),
        clean(&m.from),
        clean(&m.text)
    )
}

/// `+1… added a device: name`, told once per device; by its number while
/// no certificate has named it (its bundle refused or not published).
pub fn device_added(phone: &str, device: i64, name: &str) -> String {
    match name {
        "" => format!(
            "{} added device {device}; its name is not known yet",
            clean(phone)
        ),
        name => format!("{} added a device: {}", clean(phone), clean(name)),
    }
}

/// A refused message (acknowledged and gone) or one kept back (left on
/// the server for the next fetch), for standard error.
pub fn refusal(r: &Refusal) -> String {
    let outcome = match r.kept_back {
        true => "kept back (it stays on the server and is tried again at the next fetch)",
        false => "refused",
    };
    format!(
        "warning: message {} from {} {outcome}: {}",
        r.id,
        clean(&r.from),
        clean(&r.reason)
    )
}

/// `[time] (broadcast) author: text`, or `(broadcast, unverified)` when the
/// author's key is not pinned here.
pub fn broadcast(b: &Broadcast, authorship: Authorship) -> String {
    let kind = match authorship {
        Authorship::Verified => "broadcast",
        Authorship::Unverified => "broadcast, unverified",
    };
    format!(
        "[{}] ({kind}) {}: {}",
        utc(crate::client::home::sent_at_ms(b.sent_at)),
        clean(&b.from),
        clean(&b.text)
    )
}

/// `phone  fingerprint  home  online|offline`
pub fn user(u: &ListedUser) -> String {
    let state = if u.online { "online" } else { "offline" };
    format!(
        "{}  {}  {}  {state}",
        clean(&u.phone),
        clean(&u.fingerprint),
        clean(&u.home)
    )
}

/// `[time] from|to peer: text`
pub fn history(e: &HistoryEntry) -> String {
    let arrow = match e.direction {
        Direction::In => "from",
        Direction::Out => "to",
    };
    format!(
        "[{}] {arrow} {}: {}",
        utc(e.sent_at),
        clean(&e.peer),
        clean(&e.text)
    )
}

/// A notice, for standard error.
pub fn notice(n: &Notice) -> String {
    match n {
        Notice::ServerPinned { addr, fingerprint } => {
            format!("Pinned the key of server {addr} on first use: {fingerprint}")
        }
        Notice::ContactPinned { phone, fingerprint } => {
            format!("Pinned the key of {phone} on first use: {fingerprint}")
        }
        Notice::Undeliverable(u) => format!(
            "message {} to {} device {} was refused: {}",
            u.id,
            clean(&u.to),
            u.device,
            clean(&u.reason)
        ),
        Notice::DeviceLeftOut { phone, device, why } => {
            let which = match device {
                Some(d) => format!("device {d} of {}", clean(phone)),
                None => format!("a device of {}", clean(phone)),
            };
            let because = match why {
                LeftOut::Refused(reason) => format!("its keys were refused ({reason})"),
                LeftOut::NoKeys => "it has published no keys yet".into(),
            };
            format!("warning: {which} gets nothing from this send: {because}")
        }
    }
}

/// `error: …`, for standard error; the message may quote the server.
pub fn error(e: &ClientError) -> String {
    format!("error: {}", clean(&e.to_string()))
}

/// Whether a character could steer a terminal or reorder what it shows.
fn steers_terminal(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
                | '\u{2028}'
                | '\u{2029}'
        )
}

/// `text` with each character that could steer a terminal shown as an
/// escape: `\n`, `\r`, `\t`, or `\u{…}` in hex.
pub fn clean(text: &str) -> Cow<'_, str> {
    if !text.chars().any(steers_terminal) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if steers_terminal(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// serde_json's compact output, but with DEL, C1 controls, bidirectional
/// controls and line separators escaped as well as C0 (which serde_json
/// escapes itself): the same string once decoded.
struct EscapingFormatter;

impl serde_json::ser::Formatter for EscapingFormatter {
    fn write_string_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        let mut rest = fragment;
        while let Some(at) = rest.find(steers_terminal) {
            writer.write_all(&rest.as_bytes()[..at])?;
            let c = rest[at..].chars().next().expect("found at a char boundary");
            write!(writer, "\\u{:04x}", c as u32)?;
            rest = &rest[at + c.len_utf8()..];
        }
        writer.write_all(rest.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::{clean, json};

    /// Escapes, newlines, DEL, C1 and bidirectional overrides: each could
    /// rewrite a terminal or fake who wrote a line.
    const HOSTILE: &str = "hi\u{1b}[2J\n[12:00] +12025550199: fake\r\u{7}\u{7f}\u{9b}31m\u{202e}olleh\u{2066}\u{2028}";

    #[test]
    fn lines_for_people_carry_no_character_that_steers_a_terminal() {
        let shown = clean(HOSTILE);
        assert!(shown.chars().all(|c| (' '..='~').contains(&c)), "{shown:?}");
        assert_eq!(
            shown,
            "hi\\u{1b}[2J\\n[12:00] +12025550199: fake\\r\\u{7}\\u{7f}\\u{9b}31m\\u{202e}olleh\\u{2066}\\u{2028}"
        );
        assert!(matches!(
            clean("plain text, ünïcödé"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    /// A broadcast's time is a `u64` the server does not check: one past
    /// the signed range shows at its end, not before 1970.
    #[test]
    fn a_broadcast_dated_past_the_signed_range_is_not_shown_before_1970() {
        let b = crate::protocol::Broadcast {
            id: crate::domain::MessageId::from_bytes([1; 16]),
            from: "+12025550101".into(),
            sent_at: u64::MAX,
            text: "hi".into(),
            signature: crate::protocol::B64(vec![]),
        };
        let line = super::broadcast(&b, crate::client::Authorship::Verified);
        assert!(
            line.starts_with("[9223372036854775807 ms after 1970-01-01 UTC]"),
            "{line}"
        );
    }

    #[test]
    fn errors_quoting_the_server_are_neutralised_too() {
        let e = crate::client::ClientError::Server {
            code: crate::protocol::ErrorCode::Forbidden,
            message: HOSTILE.into(),
            retry_after_ms: None,
        };
        let line = super::error(&e);
        assert!(line.starts_with("error: hi\\u{1b}[2J\\n"), "{line}");
        assert!(line.chars().all(|c| (' '..='~').contains(&c)), "{line}");
    }

    #[test]
    fn json_strings_stay_exact_and_carry_no_raw_control_either() {
        let line = json(&serde_json::json!({ "text": HOSTILE }));
        assert!(line.chars().all(|c| (' '..='~').contains(&c)), "{line}");
        let back: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(back["text"], HOSTILE);
        assert_eq!(
            json(&serde_json::json!({ "t": "a\"b\\c ü" })),
            r#"{"t":"a\"b\\c ü"}"#
        );
    }
}
