use super::*;
use rustls::pki_types::ServerName;
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

/// Serves `n` connections through [`accept`] with `alpn`; yields how each
/// went (a served one is answered "ok").
async fn serve_accepting(
    config: Arc<ServerConfig>,
    n: usize,
    alpn: &'static [u8],
) -> (
    String,
    tokio::task::JoinHandle<Vec<Result<(), AcceptError>>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let task = tokio::spawn(async move {
        let acceptor = TlsAcceptor::from(config);
        let mut outcomes = Vec::new();
        for _ in 0..n {
            let (tcp, _) = listener.accept().await.expect("accept");
            let outcome = accept(&acceptor, tcp, alpn).await;
            if let Ok(mut tls) = outcome {
                let _ = tls.write_all(b"ok").await;
                let _ = tls.shutdown().await;
                outcomes.push(Ok(()));
            } else {
                outcomes.push(outcome.map(drop));
            }
        }
        outcomes
    });
    (addr, task)
}

/// A linking server's client config that keeps sessions for resumption,
/// as a peer's TLS library may, and offers `alpn` (none if empty).
fn resuming_link_client(key: &[u8], alpn: &[u8]) -> Arc<ClientConfig> {
    let (cert, own) = self_signed_certificate(key).expect("certificate");
    let (builder, _) = pinned_client_builder(Pin::AcceptAny).expect("builder");
    let mut config = builder
        .with_client_auth_cert(vec![cert], own)
        .expect("client certificate");
    if !alpn.is_empty() {
        config.alpn_protocols = vec![alpn.to_vec()];
    }
    Arc::new(config)
}

async fn dial(addr: &str, config: Arc<ClientConfig>) -> io::Result<ClientTlsStream> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::try_from(SERVER_NAME).expect("name");
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await?;
    // Reading takes in the session tickets sent after the handshake.
    let mut buf = [0u8; 2];
    tls.read_exact(&mut buf).await?;
    Ok(tls)
}

#[tokio::test]
async fn a_link_is_never_resumed_past_the_peer_check() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let (server_key, client_key) = (test_key(), test_key());
    let allowed = Arc::new(AtomicBool::new(true));
    let check = allowed.clone();
    let config = link_server_config(&server_key, Arc::new(move |_| check.load(Ordering::SeqCst)))
        .expect("config");
    let (addr, server) = serve_accepting(config, 2, LINK_ALPN).await;
    let client = resuming_link_client(&client_key, LINK_ALPN);
    let first = dial(&addr, client.clone()).await.expect("the first link");
    assert_eq!(
        first.get_ref().1.handshake_kind(),
        Some(rustls::HandshakeKind::Full)
    );
    // The neighbour is no longer allowed: its next link must be checked
    // again, not resumed from the first.
    allowed.store(false, Ordering::SeqCst);
    let second = dial(&addr, client).await;
    let outcomes = server.await.expect("join");
    assert!(outcomes[0].is_ok(), "{:?}", outcomes[0]);
    assert!(
        matches!(outcomes[1], Err(AcceptError::Handshake(_))),
        "the second link was served: {:?}",
        outcomes[1]
    );
    assert!(second.is_err(), "the dialer was served a resumed link");
}

#[tokio::test]
async fn a_peer_that_names_no_protocol_is_not_served() {
    let (server_key, client_key) = (test_key(), test_key());
    let config = link_server_config(&server_key, Arc::new(|_| true)).expect("config");
    let (addr, server) = serve_accepting(config, 2, LINK_ALPN).await;
    let silent = dial(&addr, resuming_link_client(&client_key, b"")).await;
    let named = dial(&addr, resuming_link_client(&client_key, LINK_ALPN)).await;
    let outcomes = server.await.expect("join");
    assert!(silent.is_err(), "a link without ALPN was served");
    assert!(
        matches!(outcomes[0], Err(AcceptError::Protocol { .. })),
        "{:?}",
        outcomes[0]
    );
    assert!(named.is_ok() && outcomes[1].is_ok(), "{:?}", outcomes[1]);

    let (addr, server) =
        serve_accepting(server_config(&server_key).expect("config"), 1, ALPN).await;
    let (no_alpn, _) = pinned_client_builder(Pin::AcceptAny).expect("builder");
    let silent = dial(&addr, Arc::new(no_alpn.with_no_client_auth())).await;
    assert!(silent.is_err(), "a client without ALPN was served");
    let outcome = &server.await.expect("join")[0];
    assert!(
        matches!(outcome, Err(AcceptError::Protocol { .. })),
        "{outcome:?}"
    );
}
