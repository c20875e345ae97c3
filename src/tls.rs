//! TLS for Carrier: TLS 1.3 only, self-signed certificates, key pinning.
//!
//! Carrier servers have no WebPKI identity. Each server owns one long-term
//! P-256 key and presents a self-signed certificate made from it; peers
//! identify it by the SHA-256 fingerprint of its SubjectPublicKeyInfo. Names
//! and validity dates in the certificate are therefore meaningless and are
//! never checked, but every handshake signature still is, so a peer that
//! merely copies a certificate cannot impersonate its owner.

use std::fmt;
use std::io;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, ClientConfig, CommonState, ConnectionCommon, DigitallySignedStruct,
    DistinguishedName, ServerConfig, SignatureScheme,
};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::domain::Fingerprint;
use crate::protocol::TLS_EXPORTER_LABEL;

/// ALPN for client↔server connections, so a Carrier endpoint never mistakes
/// another protocol's traffic (or a server link) for a client session.
pub const ALPN: &[u8] = b"carrier/1";

/// ALPN for server↔server links; distinct from [`ALPN`] so a link dialled at a
/// client port (or the reverse) fails in the handshake instead of later.
pub const LINK_ALPN: &[u8] = b"carrier-link/1";

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
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| TlsError::BadCertificate(e.to_string()))?;
    Ok(Fingerprint::of_spki(cert.tbs_certificate.subject_pki.raw))
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

fn bad_encoding() -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::BadEncoding)
}

fn key_refused() -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
}

fn tls12_refused() -> rustls::Error {
    rustls::Error::General("Carrier only accepts TLS 1.3".to_owned())
}

/// Handshake signatures are what prove the peer holds the pinned key, so
/// they are checked with the provider's algorithms even though the
/// certificate itself is not validated.
fn verify_tls13(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    rustls::crypto::verify_tls13_signature(message, cert, dss, &signature_algorithms())
}

/// Verifies a server by pinned key instead of WebPKI, since Carrier servers
/// have self-signed certificates; records what it saw for the caller.
#[derive(Debug)]
pub struct PinVerifier {
    pin: Pin,
    observed: ObservedFingerprint,
}

impl PinVerifier {
    /// A verifier enforcing `pin`, with an empty observation slot.
    pub fn new(pin: Pin) -> Self {
        let observed = Arc::new(Mutex::new(None));
        Self { pin, observed }
    }

    /// The slot the verifier fills with the presented fingerprint; shared so
    /// it survives the config being moved into a connector.
    pub fn observed(&self) -> ObservedFingerprint {
        Arc::clone(&self.observed)
    }

    fn record(&self, fingerprint: Fingerprint) {
        let mut slot = self
            .observed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *slot = Some(fingerprint);
    }
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = fingerprint_of_cert(end_entity).map_err(|_| bad_encoding())?;
        self.record(presented);
        match self.pin {
            Pin::Expect(expected) if expected != presented => Err(key_refused()),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        signature_algorithms().supported_schemes()
    }
}

/// Verifies a linking server by its key fingerprint, since servers have
/// self-signed certificates and federation policy belongs to the caller.
pub struct PeerVerifier {
    allowed: PeerCheck,
}

impl PeerVerifier {
    /// A verifier admitting exactly the peers for which `allowed` is true.
    pub fn new(allowed: PeerCheck) -> Self {
        Self { allowed }
    }
}

impl fmt::Debug for PeerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerVerifier").finish_non_exhaustive()
    }
}

impl ClientCertVerifier for PeerVerifier {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No CA to hint at: an empty list makes peers send their own cert.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let presented = fingerprint_of_cert(end_entity).map_err(|_| bad_encoding())?;
        if (self.allowed)(&presented) {
            Ok(ClientCertVerified::assertion())
        } else {
            tracing::warn!(peer = %presented, "refused server link from unknown key");
            Err(key_refused())
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        signature_algorithms().supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio_rustls::TlsAcceptor;

    fn test_key() -> Vec<u8> {
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .expect("generate P-256 key")
            .serialize_der()
    }

    fn fingerprint_of_key(key: &[u8]) -> Fingerprint {
        let (cert, _) = self_signed_certificate(key).expect("certificate");
        fingerprint_of_cert(&cert).expect("fingerprint")
    }

    /// Serves one TLS connection on a loopback port; returns the address and
    /// a task yielding the server's exporter value (or the handshake error).
    async fn serve_once(
        config: Arc<ServerConfig>,
    ) -> (String, tokio::task::JoinHandle<io::Result<[u8; 32]>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let task = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await?;
            let mut tls = TlsAcceptor::from(config).accept(tcp).await?;
            let exporter = auth_exporter(tls.get_ref().1).map_err(io::Error::other)?;
            tls.write_all(b"ok").await?;
            tls.shutdown().await?;
            Ok(exporter)
        });
        (addr, task)
    }

    async fn read_ok(stream: &mut ClientTlsStream) {
        let mut buf = [0u8; 2];
        stream.read_exact(&mut buf).await.expect("read");
        assert_eq!(&buf, b"ok");
    }

    #[test]
    fn certificate_fingerprint_is_the_key_fingerprint() {
        let key = test_key();
        let pair = p256_key_pair(&key).expect("key");
        let spki = rcgen::PublicKeyData::subject_public_key_info(&pair);
        assert_eq!(fingerprint_of_key(&key), Fingerprint::of_spki(&spki));
        // Re-issuing the certificate keeps the fingerprint.
        assert_eq!(fingerprint_of_key(&key), fingerprint_of_key(&key));
    }

    #[test]
    fn rejects_non_p256_keys() {
        let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("ed25519");
        let err = server_config(&ed.serialize_der()).expect_err("must refuse");
        assert!(matches!(err, TlsError::InvalidKey(_)), "{err}");
        assert!(server_config(b"garbage").is_err());
    }

    #[test]
    fn install_is_idempotent() {
        install_crypto_provider();
        install_crypto_provider();
        assert!(CryptoProvider::get_default().is_some());
    }

    #[tokio::test]
    async fn accept_any_reports_server_fingerprint_and_exporters_match() {
        let key = test_key();
        let (addr, server) = serve_once(server_config(&key).expect("config")).await;
        let (mut stream, fp) = connect(&addr, Pin::AcceptAny).await.expect("connect");
        assert_eq!(fp, fingerprint_of_key(&key));
        assert_eq!(stream.get_ref().1.alpn_protocol(), Some(ALPN));
        let client_exporter = auth_exporter(stream.get_ref().1).expect("exporter");
        read_ok(&mut stream).await;
        let server_exporter = server.await.expect("join").expect("server");
        assert_eq!(client_exporter, server_exporter);
    }

    #[tokio::test]
    async fn expect_correct_key_succeeds() {
        let key = test_key();
        let expected = fingerprint_of_key(&key);
        let (addr, server) = serve_once(server_config(&key).expect("config")).await;
        let (mut stream, fp) = connect(&addr, Pin::Expect(expected))
            .await
            .expect("connect");
        assert_eq!(fp, expected);
        read_ok(&mut stream).await;
        server.await.expect("join").expect("server");
    }

    #[tokio::test]
    async fn expect_wrong_key_reports_key_changed() {
        let key = test_key();
        let wrong = fingerprint_of_key(&test_key());
        let (addr, server) = serve_once(server_config(&key).expect("config")).await;
        let err = connect(&addr, Pin::Expect(wrong))
            .await
            .expect_err("must fail");
        let presented = fingerprint_of_key(&key);
        let message = err.to_string();
        assert!(
            matches!(err, ConnectError::KeyChanged { expected, presented: p }
                if expected == wrong && p == presented),
            "{err:?}"
        );
        assert!(message.contains(&wrong.to_hex()) && message.contains(&presented.to_hex()));
        assert!(message.contains("attack"));
        assert!(server.await.expect("join").is_err());
    }

    /// A server that copies a victim's certificate but lacks its private key.
    fn impostor_config(victim_key: &[u8]) -> Arc<ServerConfig> {
        let (victim_cert, _) = self_signed_certificate(victim_key).expect("cert");
        let (_, own_key) = self_signed_certificate(&test_key()).expect("cert");
        let signer = PROVIDER
            .key_provider
            .load_private_key(own_key)
            .expect("key");
        let certified = rustls::sign::CertifiedKey::new(vec![victim_cert], signer);
        let resolver = Arc::new(rustls::sign::SingleCertAndKey::from(certified));
        let mut config = server_builder()
            .expect("builder")
            .with_no_client_auth()
            .with_cert_resolver(resolver);
        config.alpn_protocols = vec![ALPN.to_vec()];
        Arc::new(config)
    }

    #[tokio::test]
    async fn copied_certificate_without_key_is_refused() {
        let victim = test_key();
        let pin = Pin::Expect(fingerprint_of_key(&victim));
        let (addr, server) = serve_once(impostor_config(&victim)).await;
        let err = connect(&addr, pin).await.expect_err("signature must fail");
        assert!(matches!(err, ConnectError::Handshake(_)), "{err:?}");
        assert!(server.await.expect("join").is_err());
    }

    #[tokio::test]
    async fn unreachable_server_is_reported() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        drop(listener);
        let err = connect(&addr, Pin::AcceptAny).await.expect_err("must fail");
        assert!(matches!(err, ConnectError::Unreachable { .. }), "{err:?}");
        assert!(err.to_string().contains(&addr));
    }

    #[tokio::test]
    async fn client_only_config_cannot_link() {
        let key = test_key();
        let allowed: PeerCheck = Arc::new(|_| true);
        let (addr, server) = serve_once(link_server_config(&key, allowed).expect("cfg")).await;
        let err = connect(&addr, Pin::AcceptAny)
            .await
            .expect_err("no client cert");
        assert!(matches!(err, ConnectError::Handshake(_)), "{err:?}");
        assert!(server.await.expect("join").is_err());
    }

    #[tokio::test]
    async fn mutual_tls_link_succeeds_with_right_pins() {
        let (server_key, client_key) = (test_key(), test_key());
        let client_fp = fingerprint_of_key(&client_key);
        let allowed: PeerCheck = Arc::new(move |fp| *fp == client_fp);
        let config = link_server_config(&server_key, allowed).expect("config");
        let (addr, server) = serve_linked_once(config).await;
        let pin = Pin::Expect(fingerprint_of_key(&server_key));
        let (mut stream, _) = connect_link(&addr, &client_key, pin).await.expect("link");
        assert_eq!(stream.get_ref().1.alpn_protocol(), Some(LINK_ALPN));
        read_ok(&mut stream).await;
        assert_eq!(
            server.await.expect("join").expect("server"),
            Some(client_fp)
        );
    }

    #[tokio::test]
    async fn mutual_tls_link_refused_when_check_says_no() {
        let (server_key, client_key) = (test_key(), test_key());
        let allowed: PeerCheck = Arc::new(|_| false);
        let config = link_server_config(&server_key, allowed).expect("config");
        let (addr, server) = serve_linked_once(config).await;
        let pin = Pin::Expect(fingerprint_of_key(&server_key));
        let outcome = connect_link(&addr, &client_key, pin).await;
        // In TLS 1.3 the client may finish before the server's refusal
        // arrives; the refusal then shows up on the first read.
        if let Ok((mut stream, _)) = outcome {
            let mut buf = [0u8; 2];
            assert!(stream.read_exact(&mut buf).await.is_err());
        }
        assert!(server.await.expect("join").is_err());
    }

    /// Like `serve_once`, but yields the linking peer's fingerprint.
    async fn serve_linked_once(
        config: Arc<ServerConfig>,
    ) -> (
        String,
        tokio::task::JoinHandle<io::Result<Option<Fingerprint>>>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let task = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await?;
            let mut tls = TlsAcceptor::from(config).accept(tcp).await?;
            let peer = peer_fingerprint(tls.get_ref().1);
            tls.write_all(b"ok").await?;
            tls.shutdown().await?;
            Ok(peer)
        });
        (addr, task)
    }
}
