//! How the `carrier` command shows things, one line each: messages, refusals,
//! broadcasts, users and the history, as text or as JSON. `fetch`, `list`,
//! `history` and `chat` print the same lines, so they are written once here.

use serde::Serialize;
use time::OffsetDateTime;

use super::{HistoryEntry, Received, Refusal};
use crate::client::Direction;
use crate::protocol::{Broadcast, ListedUser};

/// One JSON object, for the `--json` outputs.
pub fn json(value: &impl Serialize) -> String {
    serde_json::to_string(value).expect("client records always serialise")
}

/// `[time] sender: text`
pub fn message(m: &Received) -> String {
    format!("[{}] {}: {}", time(m.sent_at), m.from, m.text)
}

/// A refused message, for standard error.
pub fn refusal(r: &Refusal) -> String {
    format!(
        "warning: message {} from {} refused: {}",
        r.id, r.from, r.reason
    )
}

/// `[time] (broadcast) author: text`
pub fn broadcast(b: &Broadcast) -> String {
    format!(
        "[{}] (broadcast) {}: {}",
        time(b.sent_at as i64),
        b.from,
        b.text
    )
}

/// `phone  fingerprint  home  online|offline`
pub fn user(u: &ListedUser) -> String {
    let state = if u.online { "online" } else { "offline" };
    format!("{}  {}  {}  {state}", u.phone, u.fingerprint, u.home)
}

/// `[time] from|to peer: text`
pub fn history(e: &HistoryEntry) -> String {
    let arrow = match e.direction {
        Direction::In => "from",
        Direction::Out => "to",
    };
    format!("[{}] {arrow} {}: {}", time(e.sent_at), e.peer, e.text)
}

/// Milliseconds since the Unix epoch as `YYYY-MM-DD HH:MM:SS UTC`, rounded
/// down to the second. The times shown come from the sender's clock, which
/// may be anything: one outside the years -9999 to 9999 is shown as its
/// milliseconds.
pub fn time(ms: i64) -> String {
    match OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000)) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => format!("{ms} ms after 1970-01-01 UTC"),
    }
}

#[cfg(test)]
mod tests {
    use super::time;

    #[test]
    fn times_are_utc_calendar_dates_rounded_down_to_the_second() {
        for (ms, shown) in [
            (0, "1970-01-01 00:00:00 UTC"),
            (999, "1970-01-01 00:00:00 UTC"),
            (-1, "1969-12-31 23:59:59 UTC"),
            (951_782_400_000, "2000-02-29 00:00:00 UTC"),
            (1_709_251_199_999, "2024-02-29 23:59:59 UTC"),
            (1_798_761_599_000, "2026-12-31 23:59:59 UTC"),
            (4_107_542_400_000, "2100-03-01 00:00:00 UTC"),
            (-62_135_596_800_000, "0001-01-01 00:00:00 UTC"),
            (-62_167_219_200_000, "0000-01-01 00:00:00 UTC"),
            (-62_167_219_200_001, "-001-12-31 23:59:59 UTC"),
            (253_402_300_799_000, "9999-12-31 23:59:59 UTC"),
        ] {
            assert_eq!(time(ms), shown, "{ms} ms");
        }
    }

    #[test]
    fn a_time_past_the_calendar_is_shown_as_milliseconds() {
        assert_eq!(
            time(253_402_300_800_000),
            "253402300800000 ms after 1970-01-01 UTC"
        );
        assert_eq!(
            time(i64::MIN),
            format!("{} ms after 1970-01-01 UTC", i64::MIN)
        );
    }
}
