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
