//! TLS for Carrier: TLS 1.3 only, self-signed certificates, key pinning.
//!
//! Carrier servers have no WebPKI identity. Each server owns one long-term
//! P-256 key and presents a self-signed certificate made from it; peers
//! identify it by the SHA-256 fingerprint of its SubjectPublicKeyInfo. Names
//! and validity dates in the certificate are therefore meaningless and are
//! never checked, but every handshake signature still is, so a peer that
//! merely copies a certificate cannot impersonate its owner.

mod accept;
mod connect;
mod https;
#[cfg(test)]
mod tests;
mod verify;

use std::io;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, CommonState, ConnectionCommon, ServerConfig};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use x509_cert::der::{Decode, Encode};

use crate::domain::Fingerprint;
use crate::protocol::TLS_EXPORTER_LABEL;
pub use accept::{AcceptError, accept};
pub use connect::{connect, connect_link};
pub use https::{HttpsError, https_acceptor};
pub use verify::{PeerVerifier, PinVerifier};

/// ALPN for client↔server connections, so a Carrier endpoint never mistakes
/// another protocol's traffic (or a server link) for a client session.
pub const ALPN: &[u8] = b"carrier/2";

/// ALPN for server↔server links; distinct from [`ALPN`] so a link dialled at a
/// client port (or the reverse) fails in the handshake instead of later.
pub const LINK_ALPN: &[u8] = b"carrier-link/2";

/// Name put in certificates and sent as SNI. Certificates are pinned by key,
/// never checked by name, so one fixed name serves every server.
pub const SERVER_NAME: &str = "carrier";

/// How long to wait for the TCP connection, so a dead address fails promptly
/// instead of hanging the client for the OS default (minutes).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long to wait for the TLS handshake once TCP is up, so a peer that
/// accepts but never answers cannot stall us.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a verifier records the fingerprint the peer presented, so the caller
/// learns it even when the handshake fails (to report a changed key) or when
/// it trusts on first use (to save the key).
pub type ObservedFingerprint = Arc<Mutex<Option<Fingerprint>>>;

/// Decides whether a linking server's fingerprint is welcome; supplied by the
/// caller because the list of federated peers lives outside this module.
pub type PeerCheck = Arc<dyn Fn(&Fingerprint) -> bool + Send + Sync>;

/// The client side of a TLS connection to a Carrier server, named so callers
/// need not spell out the tokio-rustls type.
pub type ClientTlsStream = TlsStream<TcpStream>;

/// Failures setting up TLS material; kept apart from connection errors since
/// they point at a bad key or a bug rather than at the network.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The server key file does not hold what Carrier expects.
    #[error("the server key is not a usable P-256 PKCS#8 key: {0}")]
    InvalidKey(#[source] rcgen::Error),
    /// rcgen refused to build the self-signed certificate.
    #[error("cannot create the self-signed TLS certificate: {0}")]
    Certificate(#[source] rcgen::Error),
    /// rustls refused the configuration (e.g. key and certificate mismatch).
    #[error("cannot build the TLS configuration: {0}")]
    Config(#[source] rustls::Error),
    /// A peer's certificate is not valid X.509, so it has no fingerprint.
    #[error("the certificate cannot be parsed: {0}")]
    BadCertificate(String),
    /// The exporter needs a finished TLS 1.3 handshake.
    #[error("cannot derive the TLS exporter value for login binding: {0}")]
    Exporter(#[source] rustls::Error),
}

/// Why connecting to a Carrier server failed, split so the client can tell
/// the user what to do: start the server, investigate a key change, or retry.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Nothing accepted the TCP connection.
    #[error("cannot reach the Carrier server at {addr}: {source} — is it running?")]
    Unreachable {
        /// The address as the user gave it.
        addr: String,
        /// The OS-level reason.
        #[source]
        source: io::Error,
    },
    /// The server's key differs from the pinned one.
    #[error(
        "the Carrier server presented key {presented}, but key {expected} is pinned for it. \
         This could be an attack (someone intercepting the connection); nothing was sent. \
         If the server operator confirms the new key, remove the pin for this server from \
         known_servers or pass --server-fingerprint {presented}"
    )]
    KeyChanged {
        /// The fingerprint we pinned.
        expected: Fingerprint,
        /// The fingerprint the server actually presented.
        presented: Fingerprint,
    },
    /// The TLS handshake failed for a reason other than a changed key.
    #[error("TLS handshake with the Carrier server failed: {0}")]
    Handshake(#[source] io::Error),
    /// The server did not complete TCP connect or the handshake in time.
    #[error("timed out connecting to the Carrier server")]
    Timeout,
    /// Our own TLS material could not be prepared (link connections only).
    #[error(transparent)]
    Config(#[from] TlsError),
}

/// What the client trusts the server's key to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pin {
    /// Only this key is acceptable: the server was seen (or told) before.
    Expect(Fingerprint),
    /// Trust on first use: accept any key, and the caller saves the one seen.
    AcceptAny,
}

impl Pin {
    /// The pinned fingerprint, if any; used to tell a key change from other
    /// handshake failures.
    pub fn expected(&self) -> Option<Fingerprint> {
        match self {
            Pin::Expect(fp) => Some(*fp),
            Pin::AcceptAny => None,
        }
    }
}

static PROVIDER: LazyLock<Arc<CryptoProvider>> =
    LazyLock::new(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));

/// Our configs name aws-lc-rs explicitly, but other rustls users in the
/// process (or future code calling `ClientConfig::builder()`) need a process
/// default; call once at start-up. Safe to call repeatedly.
pub fn install_crypto_provider() {
    // An Err only means some provider is already installed, which is fine.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

fn provider() -> Arc<CryptoProvider> {
    Arc::clone(&PROVIDER)
}

fn signature_algorithms() -> WebPkiSupportedAlgorithms {
    PROVIDER.signature_verification_algorithms
}

fn p256_key_pair(key_pkcs8_der: &[u8]) -> Result<rcgen::KeyPair, TlsError> {
    let der = PrivatePkcs8KeyDer::from(key_pkcs8_der);
    rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(TlsError::InvalidKey)
}

fn certificate_params() -> Result<rcgen::CertificateParams, TlsError> {
    let names = vec![SERVER_NAME.to_owned(), "localhost".to_owned()];
    let mut params = rcgen::CertificateParams::new(names).map_err(TlsError::Certificate)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, SERVER_NAME);
    // rcgen's defaults (1975 to 4096) are kept: peers pin the key and ignore
    // dates, so expiry would only break servers without adding security.
    Ok(params)
}

/// TLS needs a certificate to carry the server's key; a self-signed one made
/// from the long-term key is enough because peers pin the key itself.
pub fn self_signed_certificate(
    key_pkcs8_der: &[u8],
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), TlsError> {
    let key_pair = p256_key_pair(key_pkcs8_der)?;
    let cert = certificate_params()?
        .self_signed(&key_pair)
        .map_err(TlsError::Certificate)?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pkcs8_der.to_vec()));
    Ok((cert.der().clone(), key))
}

/// Pins are fingerprints of keys, not of certificates, so a server can
/// re-issue its certificate without breaking its clients.
pub fn fingerprint_of_cert(cert_der: &[u8]) -> Result<Fingerprint, TlsError> {
    let bad = |e: x509_cert::der::Error| TlsError::BadCertificate(e.to_string());
    let cert = x509_cert::Certificate::from_der(cert_der).map_err(bad)?;
    let spki = cert
        .tbs_certificate()
        .subject_public_key_info()
        .to_der()
        .map_err(bad)?;
    Ok(Fingerprint::of_spki(&spki))
}

/// Reads who is on the other end after the handshake, e.g. which linked
/// server connected, without the caller parsing certificates.
pub fn peer_fingerprint(conn: &CommonState) -> Option<Fingerprint> {
    let end_entity = conn.peer_certificates()?.first()?;
    fingerprint_of_cert(end_entity).ok()
}

/// Login binds the key-possession proof to this TLS session, so a proof captured by
/// a man in the middle is useless on any other connection. Works on both
/// sides, e.g. `auth_exporter(stream.get_ref().1)` for tokio-rustls streams.
pub fn auth_exporter<D>(conn: &ConnectionCommon<D>) -> Result<[u8; 32], TlsError> {
    conn.export_keying_material([0u8; 32], TLS_EXPORTER_LABEL, None)
        .map_err(TlsError::Exporter)
}

fn server_builder() -> Result<rustls::ConfigBuilder<ServerConfig, rustls::WantsVerifier>, TlsError>
{
    ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::Config)
}

fn client_builder() -> Result<rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier>, TlsError>
{
    ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::Config)
}

/// Clients prove their identity by signing a transcript bound to the
/// session, not with certificates, so the client-facing listener asks for none.
pub fn server_config(key_pkcs8_der: &[u8]) -> Result<Arc<ServerConfig>, TlsError> {
    let (cert, key) = self_signed_certificate(key_pkcs8_der)?;
    let mut config = server_builder()?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .map_err(TlsError::Config)?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// Server links authenticate both ends by key: the listener demands a
/// certificate and lets `allowed` decide which peer fingerprints may link.
pub fn link_server_config(
    key_pkcs8_der: &[u8],
    allowed: PeerCheck,
) -> Result<Arc<ServerConfig>, TlsError> {
    let (cert, key) = self_signed_certificate(key_pkcs8_der)?;
    let verifier = Arc::new(PeerVerifier::new(allowed));
    let mut config = server_builder()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![cert], key)
        .map_err(TlsError::Config)?;
    config.alpn_protocols = vec![LINK_ALPN.to_vec()];
    // A resumed handshake skips the client certificate, and with it the
    // check of whether that key may still link: no session cache, no
    // tickets, so every link runs the full handshake and `allowed`.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

fn pinned_client_builder(
    pin: Pin,
) -> Result<
    (
        rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert>,
        ObservedFingerprint,
    ),
    TlsError,
> {
    let verifier = Arc::new(PinVerifier::new(pin));
    let observed = verifier.observed();
    let builder = client_builder()?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    Ok((builder, observed))
}

fn finish_client_config(mut config: ClientConfig, alpn: &[u8]) -> Arc<ClientConfig> {
    config.alpn_protocols = vec![alpn.to_vec()];
    // Without resumption every handshake runs the verifier, so the observed
    // slot is always filled by this very connection.
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

/// Clients trust servers by pinned key (or on first use), never by WebPKI;
/// the returned slot tells the caller which key the server presented. Use a
/// fresh config per connection so the slot describes that connection.
pub fn client_config(pin: Pin) -> (Arc<ClientConfig>, ObservedFingerprint) {
    let (builder, observed) = match pinned_client_builder(pin) {
        Ok(parts) => parts,
        // The builder only fails if the provider lacks TLS 1.3, which
        // aws-lc-rs always has.
        Err(e) => unreachable!("aws-lc-rs supports TLS 1.3: {e}"),
    };
    let config = finish_client_config(builder.with_no_client_auth(), ALPN);
    (config, observed)
}

/// A linking server proves its own identity with its key's certificate and
/// pins the server it dials, exactly as a client would.
pub fn link_client_config(
    key_pkcs8_der: &[u8],
    pin: Pin,
) -> Result<(Arc<ClientConfig>, ObservedFingerprint), TlsError> {
    let (cert, key) = self_signed_certificate(key_pkcs8_der)?;
    let (builder, observed) = pinned_client_builder(pin)?;
    let config = builder
        .with_client_auth_cert(vec![cert], key)
        .map_err(TlsError::Config)?;
    Ok((finish_client_config(config, LINK_ALPN), observed))
}
