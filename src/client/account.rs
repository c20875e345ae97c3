//! Who a home belongs to (`account.json`), and which server it uses: the
//! one given on the command line, else the one remembered at registration,
//! else the default.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::ClientError;
use crate::protocol::KeyType;

pub(super) const ACCOUNT_FILE: &str = "account.json";

/// The server a home without a remembered one uses.
pub const DEFAULT_SERVER: &str = "127.0.0.1:5000";

/// Who this home belongs to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Account {
    pub phone: String,
    pub key_type: KeyType,
    pub fingerprint: String,
    /// The server registered on, used when no `--server` is given. Homes
    /// registered before it was remembered have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
}

/// Reads `account.json` in `dir`, if there is one.
pub(super) fn load(dir: &Path) -> Result<Option<Account>, ClientError> {
    let path = dir.join(ACCOUNT_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| ClientError::Io {
                context: format!("{} is damaged", path.display()),
                source: std::io::Error::other(e),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ClientError::Io {
            context: format!("cannot read {}", path.display()),
            source,
        }),
    }
}

/// Writes `account.json` in `dir` (mode 0600, replaced atomically).
pub(super) fn save(dir: &Path, account: &Account) -> Result<(), ClientError> {
    let path = dir.join(ACCOUNT_FILE);
    let json = serde_json::to_vec_pretty(account).expect("an account always serialises");
    crate::private_files::write_atomic(&path, &json).map_err(|source| ClientError::Io {
        context: format!("cannot write {}", path.display()),
        source,
    })
}

/// The server to use: `given` (`--server` or `CARRIER_SERVER`), else the
/// account's, else [`DEFAULT_SERVER`]. Checked to have a port.
pub fn server_for(given: Option<&str>, account: Option<&Account>) -> Result<String, ClientError> {
    let addr = given
        .or(account.and_then(|a| a.server.as_deref()))
        .unwrap_or(DEFAULT_SERVER);
    check_address(addr)?;
    Ok(addr.to_owned())
}

/// A server address is `HOST:PORT` (an IPv6 host in brackets): caught here
/// with advice, rather than as the resolver's "invalid socket address".
pub fn check_address(addr: &str) -> Result<(), ClientError> {
    if addr.parse::<std::net::SocketAddr>().is_ok() {
        return Ok(());
    }
    let bad = |why: String| Err(ClientError::Input(format!("--server {addr}: {why}")));
    let Some((host, port)) = addr.rsplit_once(':') else {
        return bad(format!(
            "no port; give HOST:PORT, for example {addr}:5000 (the port carrier-server \
             prints as \"Listening on …\")"
        ));
    };
    if host.is_empty() {
        return bad(format!(
            "no host; give HOST:PORT, for example localhost:{port}"
        ));
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return bad("an IPv6 address needs brackets and a port, for example [::1]:5000".into());
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => bad(format!("the port {port:?} is not a number from 1 to 65535")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_need_a_host_and_a_port() {
        for good in [
            "127.0.0.1:5000",
            "localhost:5000",
            "[::1]:5000",
            "example.org:1",
        ] {
            assert!(check_address(good).is_ok(), "{good}");
        }
        for (bad, says) in [
            ("localhost", "no port"),
            ("localhost:", "not a number"),
            (":5000", "no host"),
            ("localhost:99999", "not a number"),
            ("localhost:0", "not a number"),
            ("::1", "brackets"),
        ] {
            let e = check_address(bad).unwrap_err().to_string();
            assert!(e.contains(says) && e.contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn the_given_server_wins_then_the_remembered_one_then_the_default() {
        let account = Account {
            phone: "+12025550101".into(),
            key_type: KeyType::P256,
            fingerprint: String::new(),
            server: Some("remembered:7000".into()),
        };
        assert_eq!(
            server_for(Some("given:1"), Some(&account)).unwrap(),
            "given:1"
        );
        assert_eq!(server_for(None, Some(&account)).unwrap(), "remembered:7000");
        let old = Account {
            server: None,
            ..account
        };
        assert_eq!(server_for(None, Some(&old)).unwrap(), DEFAULT_SERVER);
        assert_eq!(server_for(None, None).unwrap(), DEFAULT_SERVER);
    }

    #[test]
    fn an_account_written_before_servers_were_remembered_still_reads() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(ACCOUNT_FILE),
            r#"{"phone":"+12025550101","key_type":"p256","fingerprint":"ab"}"#,
        )
        .unwrap();
        let account = load(dir.path()).unwrap().unwrap();
        assert_eq!(account.server, None);
    }
}
