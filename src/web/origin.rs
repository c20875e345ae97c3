//! Which pages may open `/ws`: a browser sends the page's `Origin` with
//! every WebSocket handshake, so another site a user visits (or one that
//! rebinds its name to 127.0.0.1) cannot drive a session from the user's
//! browser. Only the configured web address and the origins the operator
//! lists are accepted.

use crate::config::WebConfig;

/// The origins allowed to open `/ws`.
#[derive(Debug, Clone)]
pub struct Origins(Vec<String>);

impl Origins {
    /// The listen address's own origin (with `localhost` for a loopback
    /// address, which browsers also treat as secure), and those listed.
    /// `port` is the bound port (the configured one may be 0).
    pub fn of(config: &WebConfig, port: u16) -> Self {
        let scheme = if config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let ip = config.listen.ip();
        let host = match ip {
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
            v4 => v4.to_string(),
        };
        let mut allowed = vec![format!("{scheme}://{host}:{port}")];
        if ip.is_loopback() {
            allowed.push(format!("{scheme}://localhost:{port}"));
        }
        allowed.extend(config.origins.iter().cloned());
        Self(allowed)
    }

    /// Whether a handshake's `Origin` header names an allowed page. A
    /// missing header is refused: browsers always send one, and any other
    /// client can send whichever it likes.
    pub fn allows(&self, origin: Option<&[u8]>) -> bool {
        origin.is_some_and(|o| self.0.iter().any(|a| a.as_bytes().eq_ignore_ascii_case(o)))
    }

    /// The first allowed origin, for error messages.
    pub fn primary(&self) -> &str {
        &self.0[0]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_configured_pages() {
        let mut config = WebConfig::loopback(0);
        config.origins.push("https://chat.example.org".into());
        let origins = Origins::of(&config, 8080);
        for ok in [
            "http://127.0.0.1:8080",
            "http://localhost:8080",
            "https://chat.example.org",
        ] {
            assert!(origins.allows(Some(ok.as_bytes())), "{ok}");
        }
        for refused in [
            "http://127.0.0.1:8081",
            "http://evil.example:8080",
            "https://127.0.0.1:8080",
            "null",
            "",
        ] {
            assert!(!origins.allows(Some(refused.as_bytes())), "{refused}");
        }
        assert!(!origins.allows(None));
    }
}
