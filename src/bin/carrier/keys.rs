//! The commands about keys: `register` (which asks again after a wrong
//! code), `fingerprint` (the pinned key and the server's) and `trust` (which
//! pins only the key the user has seen or named).

use std::io::{BufRead, IsTerminal, Write};

use carrier::client::{Client, ClientError, CodeAnswer, KeyOffer, show};
use carrier::domain::PhoneNumber;
use carrier::protocol::{ErrorCode, KeyType};
use serde_json::json;
use zeroize::Zeroizing;

use crate::args::{Json, KeyTypeArg};
use crate::{parse_fingerprint, parse_phone, print};

pub async fn register(
    client: &Client,
    phone: &str,
    key_type: KeyTypeArg,
    out: Json,
) -> Result<(), ClientError> {
    let key_type = match key_type {
        KeyTypeArg::P256 => KeyType::P256,
        KeyTypeArg::Rsa => KeyType::Rsa,
    };
    let asked = parse_phone(phone)?;
    let mut registration = client
        .start_registration(phone, key_type)
        .await
        .map_err(|e| code_refused(e, &asked))?;
    let (session, replaced) = loop {
        let code = read_code(registration.phone())?;
        let phone = registration.phone().clone();
        match registration
            .verify(&code)
            .await
            .map_err(|e| code_refused(e, &phone))?
        {
            CodeAnswer::Registered(session, replaced) => {
                break (session, replaced);
            }
            CodeAnswer::Wrong(again, message) => {
                eprintln!("{}: type the code again.", show::clean(&message));
                registration = again;
            }
        }
    };
    let account = client.account()?;
    let value = json!({
        "phone": account.phone,
        "fingerprint": account.fingerprint,
        "replaced_key": replaced,
        "server": client.server(),
    });
    print(out, value, || {
        let mut text = format!(
            "Registered {} with key {}",
            account.phone, account.fingerprint
        );
        if replaced {
            text.push_str(&format!(
                "\nThis replaced the previous key of {}; your contacts will be warned.",
                account.phone
            ));
        }
        text
    })?;
    eprintln!(
        "This home now uses the server {} unless --server names another.",
        client.server()
    );
    session.close().await;
    Ok(())
}

/// A code the server will take no more of: the advice names the command
/// that gets a new one, and when it will, from the server's
/// `retry_after_ms`. `verify` gives a wrong code back as an error only once
/// its last try is spent; that and `code_dead` both mean one thing to do,
/// after one wait, so each is said as one sentence. The server's code stays
/// at the end, as for every refusal.
fn code_refused(e: ClientError, phone: &PhoneNumber) -> ClientError {
    let ClientError::Server {
        code,
        message,
        retry_after_ms,
    } = e
    else {
        return e;
    };
    let again = |wait_ms| {
        format!(
            "run `carrier register {phone}` again {} for a new one",
            wait(wait_ms)
        )
    };
    let message = match (code, retry_after_ms) {
        (ErrorCode::WrongCode, Some(ms)) => {
            format!("wrong code; no tries left for this code: {}", again(ms))
        }
        (ErrorCode::CodeDead, Some(ms)) => {
            format!("too many wrong codes for this phone and key: {}", again(ms))
        }
        (
            ErrorCode::CodeDead
            | ErrorCode::CodeExpired
            | ErrorCode::NoPendingCode
            | ErrorCode::WrongCode,
            _,
        ) => format!("{message}; then run `carrier register {phone}` for a new code"),
        _ => message,
    };
    ClientError::Server {
        code,
        message,
        retry_after_ms,
    }
}

/// A wait for people: whole minutes, rounded up, from a minute on (the
/// server counts in seconds, which say little about an hour), else seconds;
/// "now" for no wait (another server may send 0).
fn wait(ms: u64) -> String {
    let seconds = ms.div_ceil(1000);
    if seconds == 0 {
        return "now".to_owned();
    }
    if seconds < 60 {
        let unit = if seconds == 1 { "second" } else { "seconds" };
        return format!("in {seconds} {unit}");
    }
    let minutes = seconds.div_ceil(60);
    let unit = if minutes == 1 { "minute" } else { "minutes" };
    format!("in about {minutes} {unit}")
}

/// Reads the code: a prompt on a terminal (asked again after an empty
/// line), a plain line from a pipe.
fn read_code(phone: &PhoneNumber) -> Result<Zeroizing<String>, ClientError> {
    let stdin = std::io::stdin();
    let on_terminal = stdin.is_terminal();
    loop {
        if on_terminal {
            eprint!("Enter the code sent to {phone}: ");
            let _ = std::io::stderr().flush();
        }
        let mut line = Zeroizing::new(String::new());
        let read = stdin
            .lock()
            .read_line(&mut line)
            .map_err(|source| ClientError::Io {
                context: "cannot read the code".into(),
                source,
            })?;
        if !line.trim().is_empty() {
            return Ok(line);
        }
        if !on_terminal || read == 0 {
            return Err(ClientError::Input(
                "no code given: type the 6-digit code the server sent".into(),
            ));
        }
    }
}

/// The pinned key and the server's. After a key change both are printed,
/// with what to do; a contact seen for the first time is pinned.
pub async fn fingerprint(client: &Client, phone: &str, out: Json) -> Result<(), ClientError> {
    let phone = parse_phone(phone)?;
    let session = client.login().await?;
    let offer = session.key_offer(&phone).await?;
    let pinned = match offer.pinned {
        Some(fp) => fp,
        None => session.contact_key(&phone).await?.1,
    };
    let value = json!({
        "phone": phone.as_str(),
        "pinned": pinned.to_hex(),
        "current": offer.current.to_hex(),
        "changed": pinned != offer.current,
    });
    print(out, value, || {
        if pinned == offer.current {
            pinned.to_hex()
        } else {
            format!("pinned   {pinned}\ncurrent  {}", offer.current)
        }
    })?;
    if pinned != offer.current && !out.json {
        eprintln!(
            "The key of {phone} changed since it was pinned. Check the current fingerprint \
             with them, then run `carrier trust {phone} --fingerprint {}`.",
            offer.current
        );
    }
    session.close().await;
    Ok(())
}

/// Pins the key the server reports for `phone`: only if it has the given
/// fingerprint; else after showing it (and, on a terminal, asking).
pub async fn trust(
    client: &Client,
    phone: &str,
    expected: Option<&str>,
    out: Json,
) -> Result<(), ClientError> {
    let phone = parse_phone(phone)?;
    let expected = expected
        .map(|fp| parse_fingerprint(fp, "--fingerprint"))
        .transpose()?;
    let session = client.login().await?;
    let offer = session.key_offer(&phone).await?;
    match expected {
        Some(expected) if expected != offer.current => {
            return Err(ClientError::NotTheExpectedKey {
                phone: phone.to_string(),
                expected,
                current: offer.current,
            });
        }
        Some(_) => {}
        None => confirm(&offer)?,
    }
    let fp = session.accept_key(&offer).await?;
    let value = json!({
        "phone": phone.as_str(),
        "fingerprint": fp.to_hex(),
        "previous": offer.pinned.map(|p| p.to_hex()),
    });
    print(out, value, || format!("Now trusting {phone} with key {fp}"))?;
    session.close().await;
    Ok(())
}

/// On a terminal, shows the key about to be pinned and asks; elsewhere
/// (scripts) goes on, and the fingerprint pinned is printed after.
fn confirm(offer: &KeyOffer) -> Result<(), ClientError> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() || offer.pinned == Some(offer.current) {
        return Ok(());
    }
    let phone = &offer.phone;
    match offer.pinned {
        Some(pinned) => eprintln!("Pinned key of {phone}:       {pinned}"),
        None => eprintln!("No key of {phone} is pinned yet."),
    }
    eprintln!("Key the server reports now: {}", offer.current);
    eprint!("Is this the fingerprint {phone} reads to you from their device? Trust it [y/N]: ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    stdin
        .lock()
        .read_line(&mut answer)
        .map_err(|source| ClientError::Io {
            context: "cannot read the answer".into(),
            source,
        })?;
    if matches!(answer.trim(), "y" | "Y" | "yes" | "Yes" | "YES") {
        Ok(())
    } else {
        Err(ClientError::Declined(format!(
            "nothing was pinned; once {phone} has read you the fingerprint of their key, \
             run `carrier trust {phone} --fingerprint <fingerprint>`"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::wait;

    #[test]
    fn a_wait_is_minutes_rounded_up_or_seconds_under_a_minute() {
        let cases = [
            (1, "in 1 second"),
            (1_000, "in 1 second"),
            (1_001, "in 2 seconds"),
            (0, "now"),
            (1, "in 1 second"),
            (59_000, "in 59 seconds"),
            (60_000, "in about 1 minute"),
            (60_001, "in about 2 minutes"),
            (3_599_000, "in about 60 minutes"),
            (3_600_000, "in about 60 minutes"),
        ];
        for (ms, said) in cases {
            assert_eq!(wait(ms), said, "{ms} ms");
        }
    }
}
