//! A raw protocol client: one TLS connection, frames written and read in
//! order by the test itself, so every answer (including the connection-level
//! errors that carry no `re`) is seen exactly where it arrives.

use carrier::crypto::{Identity, Purpose};
use carrier::protocol::{
    self, B64, Delivered, KeyType, Request, RequestFrame, Response, ResponseFrame,
};
use carrier::tls::{self, ClientTlsStream, Pin};
use tokio::io::AsyncWriteExt;

use crate::common::{Reachable, proof, within};

pub struct Wire {
    stream: ClientTlsStream,
    /// This connection's TLS exporter value, which login proofs sign.
    pub exporter: [u8; 32],
    next_seq: u64,
    /// Messages pushed while waiting for an answer.
    pub pushed: Vec<Delivered>,
}

impl Wire {
    pub async fn connect(server: &impl Reachable) -> Self {
        let (stream, _) = within(
            "TLS connect",
            tls::connect(&server.addr(), Pin::Expect(server.fingerprint())),
        )
        .await
        .expect("the TLS connection opens");
        Self::over(stream)
    }

    /// Connects from `source` (another loopback address, such as
    /// 127.0.0.2), as a client elsewhere on the network would: the server
    /// sees that address as the peer's.
    pub async fn connect_from(server: &impl Reachable, source: std::net::IpAddr) -> Self {
        let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
        socket
            .bind(std::net::SocketAddr::new(source, 0))
            .expect("bind to the source address");
        let addr = server.addr().parse().expect("the server's address");
        let tcp = within("TCP connect", socket.connect(addr))
            .await
            .expect("the TCP connection opens");
        let (config, _) = tls::client_config(Pin::Expect(server.fingerprint()));
        let name = rustls::pki_types::ServerName::try_from(tls::SERVER_NAME).unwrap();
        let stream = within(
            "TLS handshake",
            tokio_rustls::TlsConnector::from(config).connect(name, tcp),
        )
        .await
        .expect("the TLS connection opens");
        Self::over(stream)
    }

    fn over(stream: ClientTlsStream) -> Self {
        let exporter = tls::auth_exporter(stream.get_ref().1).expect("an exporter value");
        Self {
            stream,
            exporter,
            next_seq: 1,
            pushed: Vec::new(),
        }
    }

    /// Writes bytes as they are (no frame header).
    pub async fn write_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
        self.stream.flush().await.expect("flush");
    }

    /// Writes `body` as one frame.
    pub async fn send_frame(&mut self, body: &[u8]) {
        protocol::write_frame(&mut self.stream, body)
            .await
            .expect("write");
        self.stream.flush().await.expect("flush");
    }

    /// Sends a request with a fresh `seq`, which it returns.
    pub async fn send(&mut self, request: Request) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let body = serde_json::to_vec(&RequestFrame {
            seq: Some(seq),
            request,
        })
        .unwrap();
        self.send_frame(&body).await;
        seq
    }

    /// The next frame; `None` once the server closed the connection.
    pub async fn read(&mut self) -> Option<ResponseFrame> {
        match within(
            "a frame from the server",
            protocol::read_frame(&mut self.stream, protocol::MAX_RESPONSE_FRAME),
        )
        .await
        {
            Ok(Some(body)) => Some(serde_json::from_slice(&body).unwrap_or_else(|e| {
                panic!(
                    "the server sent a frame that does not parse ({e}): {}",
                    String::from_utf8_lossy(&body)
                )
            })),
            Ok(None) | Err(_) => None,
        }
    }

    /// The answer to `seq`: the first frame with that `re`, or the first
    /// frame without `re` that is not a pushed message (a connection-level
    /// error). Pushed messages met on the way are kept in `pushed`.
    pub async fn answer(&mut self, seq: Option<u64>) -> Response {
        loop {
            let frame = self
                .read()
                .await
                .unwrap_or_else(|| panic!("connection closed before the answer to {seq:?}"));
            match (frame.re, frame.response) {
                (None, Response::Message(m)) => self.pushed.push(m),
                (re, response) if re == seq => return response,
                (None, response) => return response,
                (Some(re), response) => {
                    panic!("an answer to {re} while waiting for {seq:?}: {response:?}")
                }
            }
        }
    }

    pub async fn call(&mut self, request: Request) -> Response {
        let seq = self.send(request).await;
        self.answer(Some(seq)).await
    }

    pub async fn challenge(&mut self) -> Vec<u8> {
        match self.call(Request::Challenge).await {
            Response::Challenge { nonce } => nonce.0,
            other => panic!("expected a challenge, got {other:?}"),
        }
    }

    /// Logs in as `phone` with `identity`; returns the server's answer.
    pub async fn login(&mut self, phone: &str, identity: &Identity) -> Response {
        let nonce = self.challenge().await;
        let signature = proof(identity, Purpose::Login, &self.exporter, &nonce, phone);
        self.call(Request::Login {
            phone: phone.to_owned(),
            signature: B64(signature),
        })
        .await
    }

    /// Asks for a code that would register `identity` for `phone`.
    pub async fn register(&mut self, phone: &str, identity: &Identity) -> Response {
        let public_key = B64(identity.public_key().to_spki_der());
        let key_type: KeyType = identity.key_type();
        self.call(Request::Register {
            phone: phone.to_owned(),
            key_type,
            public_key,
        })
        .await
    }

    /// Answers a pending registration with `code` and a fresh proof.
    pub async fn verify(&mut self, phone: &str, identity: &Identity, code: &str) -> Response {
        let nonce = self.challenge().await;
        let signature = proof(identity, Purpose::Register, &self.exporter, &nonce, phone);
        self.call(Request::Verify {
            phone: phone.to_owned(),
            code: code.into(),
            signature: B64(signature),
        })
        .await
    }

    /// Reads until the server closes the connection; returns the
    /// connection-level error (no `re`) it was told on the way, if any.
    pub async fn told_before_closing(&mut self) -> Option<protocol::ErrorCode> {
        self.farewell().await.map(|(code, _)| code)
    }

    /// Reads until the server closes the connection; returns the last
    /// connection-level error (no `re`) it was told on the way, with its
    /// message, if any.
    pub async fn farewell(&mut self) -> Option<(protocol::ErrorCode, String)> {
        let mut told = None;
        while let Some(frame) = self.read().await {
            if let (None, Response::Error { code, message, .. }) = (frame.re, frame.response) {
                told = Some((code, message));
            }
        }
        told
    }

    /// Whether the connection still answers.
    pub async fn ping(&mut self) -> bool {
        matches!(self.call(Request::Ping).await, Response::Pong)
    }
}
