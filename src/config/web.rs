//! The `[web]` section: where the browser client and its WebSocket are
//! served, and the rule that plain HTTP is for loopback addresses only.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::file::WebSection;
use super::validate::KeyError;

/// Where the browser client is served (`[web]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebConfig {
    /// The address `/` and `/ws` listen on.
    pub listen: SocketAddr,
    /// The certificate chain and key, when the server speaks HTTPS itself.
    pub tls: Option<WebTls>,
    /// Origins allowed besides the listen address's own (the public
    /// address of a reverse proxy, such as `https://chat.example.org`).
    pub origins: Vec<String>,
}

/// PEM files for HTTPS on the web port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebTls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl WebConfig {
    /// A loopback endpoint on `port` without TLS (what `--web-port` makes
    /// when the file has no `[web]` section).
    pub fn loopback(port: u16) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], port)),
            tls: None,
            origins: Vec::new(),
        }
    }

    /// Browsers treat `http://127.0.0.1` and `http://localhost` as secure
    /// contexts (WebCrypto works there) and nobody else can watch loopback
    /// traffic; anywhere else, plain HTTP would hand the page and every
    /// login to whoever is on the path.
    pub fn check(&self) -> Result<(), String> {
        if self.tls.is_none() && !self.listen.ip().is_loopback() {
            return Err(format!(
                "{} is not a loopback address: serving the web client there needs \
                 web.tls_cert and web.tls_key (or listen on 127.0.0.1 behind a \
                 reverse proxy that terminates HTTPS; see docs/OPERATING.md)",
                self.listen
            ));
        }
        Ok(())
    }
}

/// Checks the `[web]` section; relative paths are taken from `base`.
pub(super) fn from_section(s: WebSection, base: &Path) -> Result<Option<WebConfig>, KeyError> {
    let Some(listen) = s.listen else {
        if s.tls_cert.is_some() || s.tls_key.is_some() || !s.origins.is_empty() {
            return Err((
                "web.listen",
                "the [web] section needs listen = \"host:port\"".into(),
            ));
        }
        return Ok(None);
    };
    let listen = listen.parse().map_err(|_| {
        (
            "web.listen",
            format!("'{listen}' is not an address such as 127.0.0.1:8080"),
        )
    })?;
    let tls = match (s.tls_cert, s.tls_key) {
        (Some(cert), Some(key)) => Some(WebTls {
            cert: base.join(cert),
            key: base.join(key),
        }),
        (None, None) => None,
        (Some(_), None) => return Err(("web.tls_key", "web.tls_cert needs web.tls_key".into())),
        (None, Some(_)) => return Err(("web.tls_cert", "web.tls_key needs web.tls_cert".into())),
    };
    for origin in &s.origins {
        if !(origin.starts_with("https://") || origin.starts_with("http://"))
            || origin.ends_with('/')
        {
            return Err((
                "web.origins",
                format!("'{origin}' is not an origin such as https://chat.example.org"),
            ));
        }
    }
    let web = WebConfig {
        listen,
        tls,
        origins: s.origins,
    };
    web.check().map_err(|m| ("web.listen", m))?;
    Ok(Some(web))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(listen: &str) -> WebSection {
        WebSection {
            listen: Some(listen.into()),
            ..WebSection::default()
        }
    }

    #[test]
    fn plain_http_only_on_loopback() {
        let base = Path::new("/etc/carrier");
        for ok in ["127.0.0.1:8080", "[::1]:8080", "127.0.0.2:0"] {
            assert!(from_section(section(ok), base).is_ok(), "{ok}");
        }
        for refused in ["0.0.0.0:8080", "192.0.2.1:443", "[::]:8080"] {
            let (key, message) = from_section(section(refused), base).unwrap_err();
            assert_eq!(key, "web.listen", "{refused}");
            assert!(message.contains("tls_cert"), "{refused}: {message}");
        }
        let with_tls = WebSection {
            tls_cert: Some("cert.pem".into()),
            tls_key: Some("key.pem".into()),
            ..section("0.0.0.0:443")
        };
        let web = from_section(with_tls, base).unwrap().unwrap();
        assert_eq!(web.tls.unwrap().cert, Path::new("/etc/carrier/cert.pem"));
    }

    #[test]
    fn half_a_certificate_and_bad_origins_are_refused() {
        let base = Path::new(".");
        let cert_only = WebSection {
            tls_cert: Some("c.pem".into()),
            ..section("127.0.0.1:8080")
        };
        assert_eq!(from_section(cert_only, base).unwrap_err().0, "web.tls_key");
        let slash = WebSection {
            origins: vec!["https://chat.example.org/".into()],
            ..section("127.0.0.1:8080")
        };
        assert_eq!(from_section(slash, base).unwrap_err().0, "web.origins");
        assert_eq!(from_section(WebSection::default(), base).unwrap(), None);
    }
}
