//! The two certificate verifiers: a client (or a dialling server) checks a
//! server by its pinned key, a link listener checks a dialling server by
//! the caller's list of allowed keys. Neither validates certificates the
//! WebPKI way; both check every handshake signature.

use std::fmt;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use super::{ObservedFingerprint, PeerCheck, Pin, fingerprint_of_cert, signature_algorithms};
use crate::domain::Fingerprint;

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
