//! Accepting a connection, on the client port or the link port: the TLS
//! handshake within [`HANDSHAKE_TIMEOUT`], then the application protocol
//! the peer must have chosen. rustls refuses a peer that offers only other
//! protocols but lets through one that offers none; a peer that does not
//! say it speaks Carrier is not served.

use std::io;

use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::HANDSHAKE_TIMEOUT;

/// Why an accepted connection was not served.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    #[error("TLS handshake failed: {0}")]
    Handshake(#[source] io::Error),
    #[error("TLS handshake timed out")]
    Timeout,
    #[error("the peer did not choose the protocol {expected:?} (ALPN)")]
    Protocol { expected: String },
}

/// Runs the server side of the handshake on `tcp` and checks that the
/// peer chose `alpn`.
pub async fn accept(
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
    alpn: &[u8],
) -> Result<TlsStream<TcpStream>, AcceptError> {
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(AcceptError::Handshake(e)),
        Err(_) => return Err(AcceptError::Timeout),
    };
    if stream.get_ref().1.alpn_protocol() != Some(alpn) {
        return Err(AcceptError::Protocol {
            expected: String::from_utf8_lossy(alpn).into_owned(),
        });
    }
    Ok(stream)
}
