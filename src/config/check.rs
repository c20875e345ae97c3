//! `carrier-server admin check-config FILE`: the problem in a file as
//! `file:line: key 'k': message`, so an editor can jump to it.

use std::path::Path;

use super::ServerConfig;

/// Loads `path` as the server would; on failure, one line naming the file,
/// the line (where the key is written in it) and the key. The web port's
/// certificate and key are loaded too: a start would refuse them.
pub fn check_file(path: &Path) -> Result<(), String> {
    let config = ServerConfig::load(path).map_err(|e| e.to_string())?;
    let Some(tls) = config.web.as_ref().and_then(|w| w.tls.as_ref()) else {
        return Ok(());
    };
    crate::tls::https_acceptor(&tls.cert, &tls.key)
        .map(drop)
        .map_err(|e| {
            let key = match &e {
                crate::tls::HttpsError::Pem { path, .. } if *path == tls.key => "web.tls_key",
                _ => "web.tls_cert",
            };
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let at = super::line_of(&text, key)
                .map(|line| format!(":{line}"))
                .unwrap_or_default();
            format!("{}{at}: key '{key}': {e}", path.display())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_names_file_line_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.toml");
        std::fs::write(&path, "[server]\nport = 1\n\n[otp]\nttl_secs = 0\n").unwrap();
        let err = check_file(&path).unwrap_err();
        assert!(
            err.ends_with("server.toml:5: key 'otp.ttl_secs': must be greater than 0"),
            "{err}"
        );
        // Files that do not parse: the parser's place and words, on one line.
        for (text, expected) in [
            ("[server]\nport = \"x\"\n", "server.toml:2:8: invalid type"),
            (
                "[server]\nprot = 1\n",
                "server.toml:2:1: unknown field `prot`",
            ),
            (
                "[server]\nport = 1\nport = 2\n",
                "server.toml:3:1: duplicate key: `port`",
            ),
            (
                "\u{feff}prot = 1\n",
                "server.toml:1:1: unknown field `prot`",
            ),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = check_file(&path).unwrap_err();
            assert!(err.contains(expected), "{text:?}: {err}");
            assert!(!err.contains('\n'), "one line: {err}");
        }
        std::fs::write(&path, "[server]\nport = 1\n").unwrap();
        assert_eq!(check_file(&path), Ok(()));
    }

    /// Every number in the file lies between 1 and a maximum, and a value
    /// outside is named by file, line and key like any other problem.
    #[test]
    fn every_number_out_of_range_is_refused_by_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.toml");
        let huge = "9223372036854775807";
        let huge_u32 = "4294967295";
        for (section, key, value) in [
            ("server", "max_connections", huge),
            ("server", "worker_threads", huge),
            ("otp", "ttl_secs", huge),
            ("otp", "window_secs", huge),
            ("otp", "max_tries", huge_u32),
            ("otp", "max_codes_per_window", huge_u32),
            ("otp", "max_codes_per_address_per_window", huge_u32),
            ("otp", "max_codes_per_phone_per_window", huge_u32),
            ("otp", "register_per_address_per_minute", huge),
            ("otp", "register_burst_per_address", huge),
            ("queue", "max_messages_per_recipient", huge),
            ("queue", "max_bytes_per_recipient", huge),
            ("queue", "max_messages_per_sender", huge),
            ("queue", "max_bytes_per_sender", huge),
            ("queue", "max_messages_per_neighbour", huge),
            ("queue", "max_bytes_per_neighbour", huge),
            ("limits", "send_messages_per_second", huge),
            ("limits", "send_message_burst", huge),
            ("limits", "send_bytes_per_second", huge),
            ("limits", "send_byte_burst", huge),
            ("limits", "max_sessions_per_user", huge),
            ("limits", "max_session_backlog_bytes", huge),
            ("limits", "max_user_backlog_bytes", huge),
            ("limits", "max_devices_per_account", huge),
        ] {
            std::fs::write(&path, format!("[{section}]\n{key} = {value}\n")).unwrap();
            let err = check_file(&path).unwrap_err();
            let at = format!("server.toml:2: key '{section}.{key}': must be at most ");
            assert!(err.contains(&at), "{key}: {err}");
            std::fs::write(&path, format!("[{section}]\n{key} = 0\n")).unwrap();
            let err = check_file(&path).unwrap_err();
            let at = format!("server.toml:2: key '{section}.{key}': must be greater than 0");
            assert!(err.ends_with(&at), "{key}: {err}");
        }
    }

    /// A message lives at least a second: 1e-300 days was taken for a
    /// lifetime of 0 ms.
    #[test]
    fn a_message_lifetime_under_a_second_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.toml");
        for days in ["1e-300", "0.00001", "0", "-1", "nan", "inf", "3651"] {
            std::fs::write(&path, format!("[queue]\nmessage_ttl_days = {days}\n")).unwrap();
            let err = check_file(&path).unwrap_err();
            assert!(
                err.contains(
                    "server.toml:2: key 'queue.message_ttl_days': must be at least 1 second"
                ),
                "{days}: {err}"
            );
        }
        for days in ["0.0000116", "1", "3650"] {
            std::fs::write(&path, format!("[queue]\nmessage_ttl_days = {days}\n")).unwrap();
            assert_eq!(check_file(&path), Ok(()), "{days}");
        }
        let one_second = 1.0 / 86_400.0;
        std::fs::write(
            &path,
            format!("[queue]\nmessage_ttl_days = {one_second:e}\n"),
        )
        .unwrap();
        let c = ServerConfig::load(&path).unwrap();
        assert_eq!(c.message_ttl_ms, 1000);
    }

    /// The web port's certificate and key are loaded as a start would.
    #[test]
    fn web_certificate_files_are_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.toml");
        let web = |cert: &str, key: &str| {
            format!("[web]\nlisten = \"127.0.0.1:0\"\ntls_cert = \"{cert}\"\ntls_key = \"{key}\"\n")
        };
        std::fs::write(&path, web("nope.pem", "nope.key")).unwrap();
        let err = check_file(&path).unwrap_err();
        assert!(
            err.contains("server.toml:3: key 'web.tls_cert': the web certificate or key"),
            "{err}"
        );
        let made = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        std::fs::write(dir.path().join("cert.pem"), made.cert.pem()).unwrap();
        std::fs::write(&path, web("cert.pem", "nope.key")).unwrap();
        let err = check_file(&path).unwrap_err();
        assert!(err.contains("server.toml:4: key 'web.tls_key': "), "{err}");
        std::fs::write(dir.path().join("key.pem"), made.signing_key.serialize_pem()).unwrap();
        std::fs::write(&path, web("cert.pem", "key.pem")).unwrap();
        assert_eq!(check_file(&path), Ok(()));
    }

    /// One sender's share of a queue is a quarter of it unless set, and
    /// never more than the queue.
    #[test]
    fn a_senders_share_follows_the_queue_and_stays_within_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.toml");
        let share = |text: &str| {
            std::fs::write(&path, text).unwrap();
            let q = ServerConfig::load(&path).unwrap().sender_quota;
            (q.max_messages, q.max_bytes)
        };
        assert_eq!(share(""), (25_000, 64 << 20));
        assert_eq!(
            share("[queue]\nmax_messages_per_recipient = 10\nmax_bytes_per_recipient = 4096\n"),
            (2, 1024)
        );
        assert_eq!(share("[queue]\nmax_messages_per_recipient = 3\n").0, 1);
        assert_eq!(
            share("[queue]\nmax_messages_per_recipient = 10\nmax_messages_per_sender = 10\n").0,
            10
        );
        // The example's old explicit share, kept with a smaller queue.
        assert_eq!(
            share(
                "[queue]\nmax_messages_per_recipient = 10\nmax_messages_per_sender = 25000\n\
                 max_bytes_per_recipient = 4096\nmax_bytes_per_sender = 67108864\n"
            ),
            (10, 4096)
        );
    }

    /// A log level that names no level is a typo, not a module to log.
    #[test]
    fn a_log_level_must_name_levels() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.toml");
        for good in [
            "info",
            "WARN",
            "carrier=debug,warn",
            "off",
            "carrier::link=trace",
            "warn,carrier=info,",
            "2",
            "carrier[conn]",
        ] {
            std::fs::write(&path, format!("[log]\nlevel = \"{good}\"\n")).unwrap();
            assert_eq!(check_file(&path), Ok(()), "{good}");
        }
        for bad in ["loud", "info,verbose", "x=y=z", ""] {
            std::fs::write(&path, format!("[log]\nlevel = \"{bad}\"\n")).unwrap();
            let err = check_file(&path).unwrap_err();
            assert!(
                err.contains("server.toml:2: key 'log.level': "),
                "{bad}: {err}"
            );
        }
    }

    /// The counts of codes per address and per phone follow the count per
    /// key unless set, and the phone's is always above one address's.
    #[test]
    fn code_counts_per_address_and_phone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.toml");
        std::fs::write(&path, "[otp]\nmax_codes_per_window = 5\n").unwrap();
        let p = ServerConfig::load(&path).unwrap().otp_policy;
        assert_eq!((p.max_codes_per_address, p.max_codes_per_phone), (20, 60));
        std::fs::write(
            &path,
            "[otp]\nmax_codes_per_address_per_window = 10\nmax_codes_per_phone_per_window = 10\n",
        )
        .unwrap();
        let err = check_file(&path).unwrap_err();
        assert!(
            err.contains(":3: key 'otp.max_codes_per_phone_per_window': must be more than"),
            "{err}"
        );
    }
}
