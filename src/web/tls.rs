//! HTTPS on the web port: the operator's PEM certificate chain and key
//! (from a public CA, as browsers require), loaded once at start.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::WebError;
use crate::config::WebTls;

/// A TLS acceptor for the web port, offering HTTP/1.1 (WebSocket upgrades
/// need it).
pub fn acceptor(files: &WebTls) -> Result<tokio_rustls::TlsAcceptor, WebError> {
    crate::tls::install_crypto_provider();
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| unreadable(&files.cert, e))?;
    if certs.is_empty() {
        return Err(unreadable(&files.cert, "no CERTIFICATE block"));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| unreadable(&files.key, e))?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| WebError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

fn unreadable(path: &Path, e: impl std::fmt::Display) -> WebError {
    WebError::Pem {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_a_pem_chain_and_key_and_names_a_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        let made = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let files = WebTls {
            cert: dir.path().join("cert.pem"),
            key: dir.path().join("key.pem"),
        };
        std::fs::write(&files.cert, made.cert.pem()).unwrap();
        std::fs::write(&files.key, made.signing_key.serialize_pem()).unwrap();
        assert!(acceptor(&files).is_ok());

        std::fs::write(&files.cert, "not a certificate").unwrap();
        match acceptor(&files) {
            Err(WebError::Pem { path, .. }) => assert_eq!(path, files.cert),
            other => panic!("expected a PEM error, got {:?}", other.map(|_| ())),
        }
        let missing = WebTls {
            key: dir.path().join("absent.pem"),
            ..files
        };
        std::fs::write(&missing.cert, made.cert.pem()).unwrap();
        assert!(matches!(acceptor(&missing), Err(WebError::Pem { .. })));
    }
}
