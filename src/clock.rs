//! Time as the server and client see it. Expiry rules read the clock through
//! this type so tests can move time forward instead of sleeping through it.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of "now" in milliseconds since the Unix epoch.
#[derive(Clone, Debug, Default)]
pub enum Clock {
    /// The operating system's wall clock.
    #[default]
    System,
    /// A clock that only moves when told to; shared by clones.
    Manual(Arc<AtomicI64>),
}

impl Clock {
    /// A manual clock starting at the current wall-clock time.
    pub fn manual() -> Self {
        Clock::Manual(Arc::new(AtomicI64::new(system_now_ms())))
    }

    pub fn now_ms(&self) -> i64 {
        match self {
            Clock::System => system_now_ms(),
            Clock::Manual(t) => t.load(Ordering::SeqCst),
        }
    }

    /// Moves a manual clock forward; a no-op on the system clock.
    pub fn advance_ms(&self, ms: i64) {
        if let Clock::Manual(t) = self {
            t.fetch_add(ms, Ordering::SeqCst);
        }
    }
}

fn system_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch as `YYYY-MM-DD HH:MM:SS UTC`, rounded
/// down to the second, for people to read. A time may come from another
/// party's clock (a sender's), which may be anything: one outside the years
/// -9999 to 9999 is shown as its milliseconds.
pub fn utc(ms: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000)) {
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
    use super::utc;

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
            assert_eq!(utc(ms), shown, "{ms} ms");
        }
    }

    #[test]
    fn a_time_past_the_calendar_is_shown_as_milliseconds() {
        assert_eq!(
            utc(253_402_300_800_000),
            "253402300800000 ms after 1970-01-01 UTC"
        );
        assert_eq!(
            utc(i64::MIN),
            format!("{} ms after 1970-01-01 UTC", i64::MIN)
        );
    }
}
