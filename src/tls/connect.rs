//! Dialling a Carrier server, as a client or as a linking server: TCP with
//! a timeout, the TLS handshake with the peer's key pinned, and a failure
//! told apart as unreachable, changed key, or other handshake trouble.

use std::io;
use std::sync::Arc;

use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::{
    CONNECT_TIMEOUT, ClientTlsStream, ConnectError, HANDSHAKE_TIMEOUT, ObservedFingerprint, Pin,
    SERVER_NAME, client_config, link_client_config, peer_fingerprint,
};
use crate::domain::Fingerprint;

/// Connects a client to a Carrier server, enforcing `pin`; returns the
/// server's fingerprint so a trust-on-first-use caller can save it.
pub async fn connect(addr: &str, pin: Pin) -> Result<(ClientTlsStream, Fingerprint), ConnectError> {
    let (config, observed) = client_config(pin);
    connect_with(addr, config, observed, pin.expected()).await
}

/// Dials another Carrier server for a link, with our key as client
/// certificate and the remote pinned like a client would pin it.
pub async fn connect_link(
    addr: &str,
    key_pkcs8_der: &[u8],
    pin: Pin,
) -> Result<(ClientTlsStream, Fingerprint), ConnectError> {
    let (config, observed) = link_client_config(key_pkcs8_der, pin)?;
    connect_with(addr, config, observed, pin.expected()).await
}

async fn connect_with(
    addr: &str,
    config: Arc<ClientConfig>,
    observed: ObservedFingerprint,
    expected: Option<Fingerprint>,
) -> Result<(ClientTlsStream, Fingerprint), ConnectError> {
    let tcp = tcp_connect(addr).await?;
    let connector = TlsConnector::from(config);
    let handshake = connector.connect(server_name(), tcp);
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
        Err(_) => return Err(ConnectError::Timeout),
        Ok(Err(e)) => return Err(classify_failure(e, expected, &observed)),
        Ok(Ok(stream)) => stream,
    };
    let presented = peer_fingerprint(stream.get_ref().1).ok_or_else(|| {
        ConnectError::Handshake(io::Error::other("the server presented no certificate"))
    })?;
    Ok((stream, presented))
}

async fn tcp_connect(addr: &str) -> Result<TcpStream, ConnectError> {
    let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Err(_) => return Err(ConnectError::Timeout),
        Ok(Err(source)) => {
            let addr = addr.to_owned();
            return Err(ConnectError::Unreachable { addr, source });
        }
        Ok(Ok(tcp)) => tcp,
    };
    if let Err(e) = tcp.set_nodelay(true) {
        // Only latency suffers; the connection still works.
        tracing::warn!(error = %e, "cannot set TCP_NODELAY");
    }
    Ok(tcp)
}

fn server_name() -> ServerName<'static> {
    match ServerName::try_from(SERVER_NAME) {
        Ok(name) => name,
        Err(e) => unreachable!("{SERVER_NAME:?} is a valid DNS name: {e}"),
    }
}

fn classify_failure(
    err: io::Error,
    expected: Option<Fingerprint>,
    observed: &ObservedFingerprint,
) -> ConnectError {
    match (expected, read_observed(observed)) {
        (Some(expected), Some(presented)) if expected != presented => ConnectError::KeyChanged {
            expected,
            presented,
        },
        _ => ConnectError::Handshake(err),
    }
}

fn read_observed(observed: &ObservedFingerprint) -> Option<Fingerprint> {
    *observed
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
