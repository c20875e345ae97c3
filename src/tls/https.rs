//! HTTPS on the web port: the operator's PEM certificate chain and key
//! (from a public CA, as browsers require), loaded once at start, and by
//! `admin check-config` to find a bad file before a start does.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why the web port's certificate and key cannot serve HTTPS.
#[derive(Debug, thiserror::Error)]
pub enum HttpsError {
    #[error("the web certificate or key {path}: {message}")]
    Pem { path: PathBuf, message: String },
    #[error("the web certificate and key do not make a TLS configuration: {0}")]
    Tls(String),
}

/// A TLS acceptor for the web port from the PEM files `cert` (the chain)
/// and `key`, offering HTTP/1.1 (WebSocket upgrades need it).
pub fn https_acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor, HttpsError> {
    super::install_crypto_provider();
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| unreadable(cert, e))?;
    if certs.is_empty() {
        return Err(unreadable(cert, "no CERTIFICATE block"));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| unreadable(key, e))?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| HttpsError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

fn unreadable(path: &Path, e: impl std::fmt::Display) -> HttpsError {
    HttpsError::Pem {
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
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert, made.cert.pem()).unwrap();
        std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
        assert!(https_acceptor(&cert, &key).is_ok());

        std::fs::write(&cert, "not a certificate").unwrap();
        match https_acceptor(&cert, &key) {
            Err(HttpsError::Pem { path, .. }) => assert_eq!(path, cert),
            other => panic!("expected a PEM error, got {:?}", other.map(|_| ())),
        }
        let absent = dir.path().join("absent.pem");
        std::fs::write(&cert, made.cert.pem()).unwrap();
        assert!(matches!(
            https_acceptor(&cert, &absent),
            Err(HttpsError::Pem { .. })
        ));
    }
}
