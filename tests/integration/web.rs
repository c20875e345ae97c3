//! The web port: the embedded client at `/`, and the client protocol over
//! a WebSocket at `/ws` with its `hello` binding, meeting users of the TCP
//! port; refusals of another origin, of a proof bound elsewhere, of an
//! oversized message, and of plain HTTP off loopback.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use base64::Engine;
use carrier::clock::Clock;
use carrier::config::{ServerConfig, WebConfig};
use carrier::crypto::{self, Identity, Purpose};
use carrier::domain::{Fingerprint, MessageId};
use carrier::protocol::{KeyType, MAX_PRE_LOGIN_FRAME, MAX_REQUEST_FRAME, Request, Response};
use carrier::server::{Listeners, Server};
use carrier::web::Endpoint;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

use crate::common::{
    ALICE, BOB, Reachable, copy_of, next_pushed_message, phone, register, sealed_for, within,
};
use crate::devices::client::{Account, check_user, now_ms, seal, send_request, start_session};

/// A server with its TCP port and its web port, both on 127.0.0.1:0.
struct WebServer {
    addr: SocketAddr,
    web: SocketAddr,
    fingerprint: Fingerprint,
    otp_file: PathBuf,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    _dir: TempDir,
}

impl Reachable for WebServer {
    fn addr(&self) -> String {
        self.addr.to_string()
    }
    fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }
    fn otp_file(&self) -> &Path {
        &self.otp_file
    }
}

async fn spawn_web_server() -> WebServer {
    spawn_web_server_with(ServerConfig::default().max_connections).await
}

async fn spawn_web_server_with(max_connections: usize) -> WebServer {
    let dir = tempfile::tempdir().unwrap();
    let otp_file = dir.path().join("otp.txt");
    let config = ServerConfig {
        host: "127.0.0.1".into(),
        port: 0,
        data_dir: dir.path().join("data"),
        code_sink: carrier::auth::code_sink::CodeSink::File(otp_file.clone()),
        web: Some(WebConfig::loopback(0)),
        max_connections,
        ..ServerConfig::default()
    };
    let endpoint = Endpoint::bind(config.web.as_ref().unwrap())
        .await
        .expect("the web port binds");
    let web = endpoint.local_addr().unwrap();
    let server = Server::open(&config, Clock::System)
        .await
        .expect("the server opens")
        .with_edge(endpoint.edge());
    let listeners = Listeners::bind(&config).await.expect("binds");
    let addr = listeners.client_addr().unwrap();
    let fingerprint = server.fingerprint();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server.run(listeners, shutdown.clone()));
    WebServer {
        addr,
        web,
        fingerprint,
        otp_file,
        shutdown,
        task,
        _dir: dir,
    }
}

impl WebServer {
    fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.web.port())
    }

    async fn stop(self) {
        self.shutdown.cancel();
        within("the server stops", self.task).await.unwrap();
    }
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A browser-like session on `/ws`: the hello's binding, and requests
/// numbered as the web client numbers them.
struct WsClient {
    socket: Socket,
    binding: [u8; 32],
    seq: u64,
}

async fn open_ws(server: &WebServer, origin: &str) -> Result<Socket, WsError> {
    let mut request = format!("ws://{}/ws", server.web)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("Origin", origin.parse().unwrap());
    let (socket, _) = tokio_tungstenite::connect_async(request).await?;
    Ok(socket)
}

async fn next_json(socket: &mut Socket) -> Option<Value> {
    loop {
        match within("a WebSocket message", socket.next()).await {
            Some(Ok(Message::Text(t))) => return Some(serde_json::from_str(t.as_str()).unwrap()),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => continue,
        }
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unb64(v: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str().expect("a base64 string"))
        .unwrap()
}

impl WsClient {
    /// Connects and reads the hello, checking its fingerprint.
    async fn connect(server: &WebServer) -> Self {
        let mut socket = open_ws(server, &server.origin()).await.expect("connects");
        let hello = next_json(&mut socket).await.expect("a hello");
        assert_eq!(hello["type"], "hello", "{hello}");
        assert_eq!(hello["version"], 2, "the protocol's version: {hello}");
        assert_eq!(hello["fingerprint"], server.fingerprint.to_hex());
        let binding = carrier::web::binding::binding(
            &unb64(&hello["challenge"]).try_into().unwrap(),
            server.fingerprint.as_bytes(),
            &unb64(&hello["connection"]).try_into().unwrap(),
        );
        Self {
            socket,
            binding,
            seq: 0,
        }
    }

    /// Sends `request` and returns its answer (events meanwhile are kept
    /// out of the way in `events`).
    async fn call(&mut self, mut request: Value, events: &mut Vec<Value>) -> Value {
        self.seq += 1;
        request["seq"] = json!(self.seq);
        self.socket
            .send(Message::text(request.to_string()))
            .await
            .unwrap();
        loop {
            let frame = next_json(&mut self.socket).await.expect("an answer");
            if frame["re"] == json!(self.seq) {
                return frame;
            }
            events.push(frame);
        }
    }

    async fn nonce(&mut self) -> [u8; 32] {
        let answer = self
            .call(json!({"type": "challenge"}), &mut Vec::new())
            .await;
        unb64(&answer["nonce"]).try_into().unwrap()
    }

    fn proof(&self, identity: &Identity, purpose: Purpose, nonce: &[u8; 32], who: &str) -> String {
        b64(&crypto::sign_proof(
            identity,
            purpose,
            &self.binding,
            nonce,
            &phone(who),
        ))
    }
}

/// A raw HTTP/1.1 GET, as a browser's first request for the page.
async fn http_get(addr: SocketAddr, path: &str) -> (String, Vec<u8>) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    within("the HTTP answer", tcp.read_to_end(&mut raw))
        .await
        .unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP head");
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    (head.to_ascii_lowercase(), raw[split + 4..].to_vec())
}

#[tokio::test]
async fn the_page_is_the_embedded_bundle_with_its_policy() {
    let server = spawn_web_server().await;
    let (head, body) = http_get(server.web, "/").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        head.contains("content-type: text/html; charset=utf-8"),
        "{head}"
    );
    assert!(head.contains("cache-control: no-cache"), "{head}");
    let policy = head
        .lines()
        .find_map(|l| l.strip_prefix("content-security-policy: "))
        .expect("a content-security-policy header");
    let mut directives: Vec<&str> = policy.split("; ").collect();
    directives.sort_unstable();
    assert_eq!(
        directives,
        [
            "base-uri 'none'",
            "connect-src 'self'",
            "default-src 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
            "img-src 'self'",
            "require-trusted-types-for 'script'",
            "script-src 'self'",
            "style-src 'self'",
            "trusted-types 'none'",
        ],
        "{head}"
    );
    let committed = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/web/dist/index.html"));
    assert_eq!(body, committed.unwrap(), "GET / is web/dist/index.html");
    let (head, _) = http_get(server.web, "/no-such-file.js").await;
    assert!(head.starts_with("http/1.1 404"), "{head}");
    server.stop().await;
}

#[tokio::test]
async fn a_browser_user_registers_logs_in_and_talks_with_a_tcp_user() {
    let server = spawn_web_server().await;
    let bob = register(&server, BOB, KeyType::P256).await;
    let bob_identity = bob.identity();
    let mut bob_session = bob.client.login().await.unwrap();

    // Registration over /ws, its proof bound to the hello.
    let alice = Identity::generate(KeyType::P256);
    let mut ws = WsClient::connect(&server).await;
    let mut events = Vec::new();
    let spki = alice.public_key().to_spki_der();
    let sent = ws
        .call(
            json!({"type": "register", "phone": ALICE, "key_type": "p256", "public_key": b64(&spki)}),
            &mut events,
        )
        .await;
    assert_eq!(sent["type"], "code_sent", "{sent}");
    let nonce = ws.nonce().await;
    let verified = ws
        .call(
            json!({"type": "verify", "phone": ALICE, "code": server.code_for(ALICE),
                   "signature": ws.proof(&alice, Purpose::Register, &nonce, ALICE)}),
            &mut events,
        )
        .await;
    assert_eq!(verified["type"], "registered", "{verified}");
    // The browser's one device, published under the account key.
    let mut account = Account::unregistered(ALICE);
    account.identity = alice;
    account.add_device("browser");
    let mut device = account.device(1);
    let listed = ws
        .call(
            serde_json::to_value(account.next_list()).unwrap(),
            &mut events,
        )
        .await;
    assert_eq!(listed["type"], "devices_published", "{listed}");
    drop(ws);

    // A later login on a new connection, then a message each way.
    let mut ws = WsClient::connect(&server).await;
    let nonce = ws.nonce().await;
    let signature = device.local.sign_login(&ws.binding, &nonce);
    let login = ws
        .call(
            json!({"type": "device_login", "phone": ALICE, "device": 1,
                   "signature": b64(&signature)}),
            &mut events,
        )
        .await;
    assert_eq!(login["type"], "logged_in", "{login}");
    let prekeys = device
        .prekeys
        .maintain(device.local.key(), now_ms())
        .iter()
        .map(|p| carrier::protocol::B64(p.to_bytes()))
        .collect();
    let request = Request::PublishPrekeys { prekeys };
    let published = ws
        .call(serde_json::to_value(request).unwrap(), &mut events)
        .await;
    assert_eq!(published["type"], "prekeys_published", "{published}");
    let looked_up = ws
        .call(json!({"type": "lookup", "phone": BOB}), &mut events)
        .await;
    let Ok(Response::User(info)) = serde_json::from_value::<Response>(looked_up.clone()) else {
        panic!("lookup of Bob: {looked_up}");
    };
    let bob_peer = check_user(&info, &bob_identity);

    let id = MessageId::random();
    let mut session = start_session(&device, &bob_peer, 1, None);
    let envelope = seal(&device, &mut session, id, "from the browser");
    let request = send_request(id, BOB, 1, 1, envelope.clone());
    let accepted = ws
        .call(serde_json::to_value(request).unwrap(), &mut events)
        .await;
    assert_eq!(accepted["type"], "accepted", "{accepted}");
    let pushed = next_pushed_message(&mut bob_session.conn).await;
    assert_eq!((pushed.id, pushed.from.as_str()), (id, ALICE));
    assert_eq!(pushed.envelope.0, envelope);

    let (id, request) = sealed_for(&bob_session, ALICE, "from the terminal").await;
    let Request::DeviceSend { envelope, .. } = copy_of(&request) else {
        panic!("a device_send");
    };
    let envelope = envelope.0;
    let answer = bob_session.conn.call(request).await.unwrap();
    assert!(matches!(answer, Response::Accepted { .. }), "{answer:?}");
    let event = match events.pop() {
        Some(e) => e,
        None => next_json(&mut ws.socket).await.expect("a pushed message"),
    };
    assert_eq!(event["type"], "message", "{event}");
    assert!(
        event.get("re").is_none(),
        "a pushed event has no re: {event}"
    );
    assert_eq!(
        serde_json::from_value::<MessageId>(event["id"].clone()).unwrap(),
        id
    );
    assert_eq!(event["from"], BOB);
    assert_eq!(unb64(&event["envelope"]), envelope);
    server.stop().await;
}

#[tokio::test]
async fn a_proof_bound_to_another_connection_is_refused() {
    let server = spawn_web_server().await;
    let alice = register(&server, ALICE, KeyType::P256).await;
    let identity = alice.identity();
    let other = WsClient::connect(&server).await;
    let mut ws = WsClient::connect(&server).await;
    let nonce = ws.nonce().await;
    // Signed with the other connection's binding, and with a TCP-style
    // exporter: neither holds here.
    for (case, binding) in [
        ("another connection", other.binding),
        ("an exporter", [0x44; 32]),
    ] {
        let nonce = if case == "an exporter" {
            ws.nonce().await
        } else {
            nonce
        };
        let signature =
            crypto::sign_proof(&identity, Purpose::Login, &binding, &nonce, &phone(ALICE));
        let answer = ws
            .call(
                json!({"type": "login", "phone": ALICE, "signature": b64(&signature)}),
                &mut Vec::new(),
            )
            .await;
        assert_eq!(answer["code"], "bad_signature", "{case}: {answer}");
    }
    server.stop().await;
}

/// The HTTP connection's slot becomes the session's: with one slot, the
/// one connection can still open `/ws`.
#[tokio::test]
async fn an_upgrade_takes_over_its_connections_slot() {
    let server = spawn_web_server_with(1).await;
    let mut socket = open_ws(&server, &server.origin())
        .await
        .expect("the one connection opens /ws");
    let hello = next_json(&mut socket).await.expect("a hello");
    assert_eq!(hello["type"], "hello", "{hello}");
    drop(socket);
    server.stop().await;
}

/// Web connections not logged in count per address from their accept, as
/// TCP ones do: a newer one from an address at the limit closes its oldest
/// and is served, and the server's last slot stays for another client.
#[tokio::test]
async fn one_address_cannot_hold_more_connections_without_logging_in() {
    use carrier::server::MAX_PENDING_PER_ADDRESS;

    let server = spawn_web_server_with(MAX_PENDING_PER_ADDRESS + 1).await;
    let mut held = Vec::new();
    for _ in 0..MAX_PENDING_PER_ADDRESS {
        held.push(TcpStream::connect(server.web).await.unwrap());
    }
    let newest = TcpStream::connect(server.web).await.unwrap();
    let mut oldest = held.remove(0);
    let mut byte = [0u8; 1];
    let read = within("the server closes the oldest", oldest.read(&mut byte)).await;
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "the address's oldest connection is closed, got {read:?}"
    );
    let mut cli = crate::wire::Wire::connect_from(&server, [127, 0, 0, 2].into()).await;
    assert!(cli.ping().await, "a client from another address is served");
    // The newest connection is served.
    for mut conn in [newest, held.pop().unwrap()] {
        conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut head = [0u8; 12];
        within("an answer", conn.read_exact(&mut head))
            .await
            .unwrap();
        assert_eq!(&head, b"HTTP/1.1 200");
    }
    drop(held);
    server.stop().await;
}

/// A `/ws` session not logged in holds a slot the TCP port shares: a TCP
/// client that finds every slot taken closes it, and the browser is told
/// `server_busy` before the socket closes.
#[tokio::test]
async fn a_socket_not_logged_in_yields_its_slot_and_is_told_why() {
    let server = spawn_web_server_with(1).await;
    let mut socket = open_ws(&server, &server.origin())
        .await
        .expect("the one slot opens /ws");
    let hello = next_json(&mut socket).await.expect("a hello");
    assert_eq!(hello["type"], "hello", "{hello}");
    let mut cli = crate::wire::Wire::connect(&server).await;
    let told = next_json(&mut socket)
        .await
        .expect("a frame before closing");
    assert_eq!(told["type"], "error", "{told}");
    assert_eq!(told["code"], "server_busy", "{told}");
    assert!(told.get("re").is_none(), "{told}");
    assert!(next_json(&mut socket).await.is_none(), "then closed");
    assert!(cli.ping().await, "the TCP client is served");
    server.stop().await;
}

#[tokio::test]
async fn another_origin_cannot_open_the_socket() {
    let server = spawn_web_server().await;
    for origin in ["http://evil.example", "http://127.0.0.1:1", "null"] {
        match open_ws(&server, origin).await {
            Err(WsError::Http(response)) => {
                assert_eq!(response.status(), 403, "{origin}");
                let body = response.body().as_deref().unwrap_or_default();
                assert!(
                    String::from_utf8_lossy(body).starts_with("origin_refused"),
                    "{origin}"
                );
            }
            other => panic!("{origin}: expected a 403, got {:?}", other.map(|_| ())),
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn an_oversized_message_gets_the_frame_size_error_and_a_close() {
    let server = spawn_web_server().await;
    let mut ws = WsClient::connect(&server).await;
    let padding = "x".repeat(MAX_REQUEST_FRAME);
    let huge = json!({"type": "ping", "seq": 1, "padding": padding}).to_string();
    ws.socket.send(Message::text(huge)).await.unwrap();
    let error = next_json(&mut ws.socket).await.expect("an error frame");
    assert_eq!(error["code"], "frame_too_large", "{error}");
    assert!(error.get("re").is_none(), "{error}");
    assert!(
        next_json(&mut ws.socket).await.is_none(),
        "the server closed"
    );
    // Before login, the lower limit applies: its maximum passes, one byte
    // more is refused the same way.
    let padded = |len: usize| {
        let mut text = json!({"type": "ping", "seq": 2}).to_string();
        text.insert_str(1, &" ".repeat(len - text.len()));
        text
    };
    let mut ws = WsClient::connect(&server).await;
    ws.socket
        .send(Message::text(padded(MAX_PRE_LOGIN_FRAME)))
        .await
        .unwrap();
    let pong = next_json(&mut ws.socket).await.expect("an answer");
    assert_eq!(pong["type"], "pong", "{pong}");
    ws.socket
        .send(Message::text(padded(MAX_PRE_LOGIN_FRAME + 1)))
        .await
        .unwrap();
    let error = next_json(&mut ws.socket).await.expect("an error frame");
    assert_eq!(error["code"], "frame_too_large", "{error}");
    assert!(
        next_json(&mut ws.socket).await.is_none(),
        "the server closed"
    );
    // An empty message is malformed, and the session goes on.
    let mut ws = WsClient::connect(&server).await;
    ws.socket.send(Message::text("")).await.unwrap();
    let error = next_json(&mut ws.socket).await.unwrap();
    assert_eq!(error["code"], "malformed_json", "{error}");
    let pong = ws.call(json!({"type": "ping"}), &mut Vec::new()).await;
    assert_eq!(pong["type"], "pong", "{pong}");
    server.stop().await;
}

/// A text message that is not UTF-8 closes with 1007 (invalid data).
#[tokio::test]
async fn a_text_message_not_utf8_closes_with_1007() {
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};

    let server = spawn_web_server().await;
    let mut ws = WsClient::connect(&server).await;
    let bad = Frame::message(vec![b'{', 0xff, 0xfe, b'}'], OpCode::Data(Data::Text), true);
    ws.socket.send(Message::Frame(bad)).await.unwrap();
    loop {
        match within("the close", ws.socket.next()).await {
            Some(Ok(Message::Close(frame))) => {
                let frame = frame.expect("a close frame with a code");
                assert_eq!(frame.code, CloseCode::Invalid, "{frame:?}");
                break;
            }
            Some(Ok(Message::Text(_))) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn plain_http_off_loopback_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("server.toml");
    std::fs::write(
        &file,
        "[server]\nport = 0\n\n[web]\nlisten = \"0.0.0.0:8080\"\n",
    )
    .unwrap();
    let err = ServerConfig::load(&file).unwrap_err().to_string();
    assert!(
        err.contains("web.listen") && err.contains("tls_cert"),
        "{err}"
    );
    let line = carrier::config::check_file(&file).unwrap_err();
    assert!(
        line.contains(":5") || line.contains("line 5"),
        "names the line: {line}"
    );
    let config = WebConfig {
        listen: "0.0.0.0:0".parse().unwrap(),
        ..WebConfig::loopback(0)
    };
    let refused = Endpoint::bind(&config).await;
    assert!(
        matches!(refused, Err(carrier::web::WebError::PlainHttp(_))),
        "a configuration built in code is refused at bind too"
    );
}

/// The exact bytes of an undeliverable notice, as the browser client's unit
/// tests (web/test/notice.test.ts) take them: the two sides agree on them.
#[test]
fn an_undeliverable_notice_has_the_bytes_the_browser_expects() {
    use carrier::protocol::ErrorCode;
    use carrier::protocol::notice::Undeliverable;
    let notice = Undeliverable {
        id: MessageId::parse_hex("0123456789abcdef0123456789abcdef").unwrap(),
        to: "+12025550102".into(),
        device: 2,
        code: ErrorCode::StaleDevices,
        reason: "the device list changed: \u{202e}é".into(),
    };
    let mut expected = vec![0u8];
    expected.extend_from_slice(
        "{\"type\":\"undeliverable\",\"id\":\"0123456789abcdef0123456789abcdef\",\
         \"to\":\"+12025550102\",\"device\":2,\"code\":\"stale_devices\",\
         \"reason\":\"the device list changed: \u{202e}é\"}"
            .as_bytes(),
    );
    assert_eq!(notice.to_bytes(), expected);
}
