use std::fmt;

/// A phone number in E.164 form (`+` followed by up to 15 digits), checked
/// against the real numbering plans so typos are caught before a code is sent.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PhoneNumber(String);

/// Why a phone number was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PhoneError {
    #[error("'{0}' is not a phone number: write it in international form, e.g. +12025550101")]
    Unparsable(String),
    #[error("'{0}' is not a valid number in its country's numbering plan")]
    Invalid(String),
}

/// Longest E.164 number: '+' and fifteen digits.
pub const MAX_PHONE_LEN: usize = 16;

impl PhoneNumber {
    /// Parses and normalises user input ("+1 202-555-0101" becomes "+12025550101").
    pub fn parse(input: &str) -> Result<Self, PhoneError> {
        // White space around a pasted number is dropped; inside it only
        // the usual separators pass, after exactly one leading '+': a letter
        // or a second '+' is a typo here, not something to guess around.
        let trimmed = input.trim();
        let plain = trimmed.strip_prefix('+').is_some_and(|rest| {
            rest.chars()
                .all(|c| c.is_ascii_digit() || " -().".contains(c))
        });
        if trimmed.len() > 40 || !plain {
            return Err(PhoneError::Unparsable(shorten(trimmed)));
        }
        let parsed = phonenumber::parse(None, trimmed)
            .map_err(|_| PhoneError::Unparsable(shorten(trimmed)))?;
        if !phonenumber::is_valid(&parsed) {
            return Err(PhoneError::Invalid(shorten(trimmed)));
        }
        let e164 = parsed.format().mode(phonenumber::Mode::E164).to_string();
        Ok(Self(e164))
    }

    /// Accepts a number that is already in canonical E.164 form, as stored in
    /// the database or written by another Carrier component, without running
    /// the numbering-plan check again.
    pub fn from_canonical(e164: &str) -> Result<Self, PhoneError> {
        let digits = e164.strip_prefix('+').unwrap_or("");
        let well_formed = e164.len() <= MAX_PHONE_LEN
            && (2..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0');
        if well_formed {
            Ok(Self(e164.to_owned()))
        } else {
            Err(PhoneError::Unparsable(shorten(e164)))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn shorten(s: &str) -> String {
    s.chars().take(40).collect()
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhoneNumber({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_to_e164() {
        let n = PhoneNumber::parse("+1 (202) 555-0101").unwrap();
        assert_eq!(n.as_str(), "+12025550101");
    }

    #[test]
    fn refuses_bad_numbers() {
        for bad in [
            "",
            "12025550101",
            "+1555123456",
            "+15551234567",
            "hello",
            "+",
            "+0000",
            "++12025550101",
            "+1202+5550101",
            "+1\u{2003}202 555 0101",
        ] {
            assert!(PhoneNumber::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn white_space_around_a_number_is_dropped() {
        for loose in [
            "\t+12025550101\n",
            " +12025550101\u{a0}",
            "+12025550101\u{3000}\r\n",
        ] {
            let n = PhoneNumber::parse(loose).unwrap();
            assert_eq!(n.as_str(), "+12025550101", "{loose:?}");
        }
    }

    #[test]
    fn canonical_form_round_trips() {
        assert!(PhoneNumber::from_canonical("+12025550101").is_ok());
        for bad in ["12025550101", "+", "+0123", "+1234567890123456", "+12a"] {
            assert!(PhoneNumber::from_canonical(bad).is_err(), "{bad}");
        }
    }
}
