//! In-process servers on ephemeral ports and registered users.
//!
//! [`spawn_server`] opens a server on a fresh temporary data directory with a
//! manual clock and one-time codes appended to a file, binds 127.0.0.1:0 and
//! runs it until [`TestServer::stop`]. [`register`] makes a user the way the
//! `carrier` command does, reading the code from that file: a protocol v2
//! account with one device. [`register_account`] makes only the account
//! key, for tests that publish devices of their own. [`sealed_for`] seals
//! real v2 envelopes for tests that drive `device_send` themselves.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use carrier::auth::code_sink::CodeSink;
use carrier::client::{Client, ClientError, Connection, Event, Home, Notice, Session};
use carrier::clock::Clock;
use carrier::config::ServerConfig;
use carrier::crypto::{self, Identity, Purpose};
use carrier::db::users::UserRow;
use carrier::domain::{Fingerprint, MessageId, PhoneNumber};
use carrier::protocol::{B64, Broadcast, Delivered, ErrorCode, KeyType, Request, Response, signed};
use carrier::server::{Listeners, Server};
use carrier::tls::Pin;

use crate::test_db::TestDb;
use sqlx::AnyPool;
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

pub const ALICE: &str = "+12025550101";
pub const BOB: &str = "+12025550102";
pub const CAROL: &str = "+12025550103";
pub const DAVE: &str = "+12025550104";
/// A valid number nobody registers.
pub const NOBODY: &str = "+12025550199";

/// A broadcast claiming `from`, signed by `key` (servers do not check
/// `sent_at`, so a fixed one serves).
pub fn broadcast_by(key: &Identity, from: &str, text: &str) -> Broadcast {
    let id = MessageId::random();
    let sent_at = 1_800_000_000_000;
    let signature = key.sign(&signed::broadcast_bytes(&id, sent_at, from, text));
    Broadcast {
        id,
        from: from.into(),
        sent_at,
        text: text.into(),
        signature: B64(signature),
    }
}

/// How long to wait for something that should happen promptly. A guard
/// against a hanging test, never a timing assertion.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// How long a graceful shutdown may take: in-flight requests finish in
/// milliseconds here, and a half-open TLS handshake is cut after 10 s.
pub const SHUTDOWN_PATIENCE: Duration = Duration::from_secs(15);

/// Awaits `f`, failing the test (naming `what`) if it hangs.
pub async fn within<F: std::future::Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(PATIENCE, f).await {
        Ok(out) => out,
        Err(_) => panic!("{what}: did not happen within {PATIENCE:?}"),
    }
}

/// Where a server is and how its codes are delivered; implemented by the
/// in-process server and by the binary run as a child process.
pub trait Reachable {
    fn addr(&self) -> String;
    fn fingerprint(&self) -> Fingerprint;
    fn otp_file(&self) -> &Path;

    /// The last code written for `phone`, if any.
    fn try_code_for(&self, phone: &str) -> Option<String> {
        codes_in(self.otp_file(), phone).pop()
    }

    /// The last code written for `phone`; the server writes it before it
    /// answers `register`, so it is there once the answer arrived.
    fn code_for(&self, phone: &str) -> String {
        self.try_code_for(phone)
            .unwrap_or_else(|| panic!("no code for {phone} in {}", self.otp_file().display()))
    }

    /// Every code written for `phone`, oldest first.
    fn codes_for(&self, phone: &str) -> Vec<String> {
        codes_in(self.otp_file(), phone)
    }
}

/// Codes in an OTP file (`OTP for <phone>: <code>` lines) for `phone`.
pub fn codes_in(file: &Path, phone: &str) -> Vec<String> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => panic!("cannot read {}: {e}", file.display()),
    };
    let prefix = format!("OTP for {phone}: ");
    text.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(|c| c.trim().to_owned())
        .collect()
}

/// A code that is certainly not `code`.
pub fn wrong_code(code: &str) -> String {
    let n: u32 = code.parse().expect("codes are digits");
    format!("{:06}", (n + 1) % 1_000_000)
}

/// A server running in this test's runtime.
pub struct TestServer {
    pub addr: SocketAddr,
    pub fingerprint: Fingerprint,
    /// Holds `data/` (database and key) and `otp.txt`; deleted on drop.
    _dir: TempDir,
    pub otp_file: PathBuf,
    pub clock: Clock,
    pub config: ServerConfig,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
    /// The PostgreSQL schema, when the suite runs against PostgreSQL.
    _postgres: Option<TestDb>,
}

pub async fn spawn_server() -> TestServer {
    spawn_server_with(|_| {}).await
}

/// A server with a fresh data directory (so a fresh key) on 127.0.0.1 and
/// a port of its choosing, whose configuration `adjust` may change before
/// it opens. Its database is SQLite in that directory, or a fresh schema
/// on the cluster `CARRIER_TEST_DATABASE_URL` names.
pub async fn spawn_server_with(adjust: impl FnOnce(&mut ServerConfig)) -> TestServer {
    let dir = tempfile::tempdir().expect("temporary directory");
    let otp_file = dir.path().join("otp.txt");
    let mut config = ServerConfig {
        host: "127.0.0.1".into(),
        port: 0,
        data_dir: dir.path().join("data"),
        code_sink: CodeSink::File(otp_file.clone()),
        ..ServerConfig::default()
    };
    let postgres = TestDb::postgres().await;
    config.database = postgres.as_ref().map(TestDb::location);
    adjust(&mut config);
    let clock = Clock::manual();
    let (addr, fingerprint, shutdown, task) = start(&config, &clock).await;
    TestServer {
        addr,
        fingerprint,
        _dir: dir,
        otp_file,
        clock,
        config,
        shutdown,
        task: Some(task),
        _postgres: postgres,
    }
}

/// Opens the server and binds what `config` says, as `carrier-server`
/// does, but with the test's clock.
async fn start(
    config: &ServerConfig,
    clock: &Clock,
) -> (
    SocketAddr,
    Fingerprint,
    CancellationToken,
    tokio::task::JoinHandle<()>,
) {
    let server = Server::open(config, clock.clone())
        .await
        .expect("the server opens");
    let listeners = Listeners::bind(config)
        .await
        .unwrap_or_else(|e| panic!("cannot bind: {e}"));
    let addr = listeners.client_addr().unwrap();
    let fingerprint = server.fingerprint();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server.run(listeners, shutdown.clone()));
    (addr, fingerprint, shutdown, task)
}

impl TestServer {
    /// Cancels the shutdown token and waits until the server has finished
    /// in-flight requests and closed its storage.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            match tokio::time::timeout(SHUTDOWN_PATIENCE, task).await {
                Ok(done) => done.expect("the server task does not panic"),
                Err(_) => panic!(
                    "graceful shutdown did not finish within {SHUTDOWN_PATIENCE:?} \
                     (nothing was in flight that could take that long)"
                ),
            }
        }
    }

    /// Starts the server again on the same data directory, address and clock.
    pub async fn restart(&mut self) {
        assert!(self.task.is_none(), "stop the server before restarting it");
        self.config.port = self.addr.port();
        let (addr, fingerprint, shutdown, task) = start(&self.config, &self.clock).await;
        assert_eq!((addr, fingerprint), (self.addr, self.fingerprint));
        self.shutdown = shutdown;
        self.task = Some(task);
    }

    /// A separate connection pool on the server's database, whichever
    /// backend it is, to check and tamper with persisted state.
    pub async fn db(&self) -> AnyPool {
        open_any(&self.config.database_location()).await
    }

    /// The persisted `users` row of `phone`.
    pub async fn user_row(&self, phone: &str) -> Option<UserRow> {
        let pool = self.db().await;
        let row = sqlx::query_as::<_, UserRow>(
            "SELECT phone, key_type, public_key, fingerprint, registered_at FROM users
             WHERE phone = $1",
        )
        .bind(phone)
        .fetch_optional(&pool)
        .await
        .expect("users query");
        pool.close().await;
        row
    }

    /// How many messages are stored for `recipient` (expired or not).
    pub async fn queued_for(&self, recipient: &str) -> i64 {
        let pool = self.db().await;
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM message_queue WHERE recipient = $1")
            .bind(recipient)
            .fetch_one(&pool)
            .await
            .expect("queue count");
        pool.close().await;
        n
    }
}

impl Reachable for TestServer {
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

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Notices are for people; tests ignore them.
pub fn quiet() -> Arc<dyn Fn(Notice) + Send + Sync> {
    Arc::new(|_| {})
}

/// A client with an empty home. `pin` is the `--server-fingerprint` flag:
/// `None` pins the server's key on first use.
pub async fn new_client(addr: &str, pin: Option<Fingerprint>) -> (TempDir, Client) {
    let home_dir = tempfile::tempdir().expect("temporary directory");
    let home = Home::open(home_dir.path()).await.expect("the home opens");
    (
        home_dir,
        Client::new(home, addr.to_owned(), pin, None, quiet()),
    )
}

/// One RSA key shared by the tests that need an RSA user: generating one
/// takes about a second.
pub fn shared_rsa_identity() -> &'static Identity {
    static KEY: OnceLock<Identity> = OnceLock::new();
    KEY.get_or_init(|| Identity::generate(KeyType::Rsa))
}

/// A registered user: its home, a client bound to the server, its phone.
pub struct TestUser {
    pub phone: String,
    pub home: TempDir,
    pub client: Client,
    /// As the server reported it when registering.
    pub fingerprint: String,
}

impl TestUser {
    pub fn identity(&self) -> Identity {
        self.client.identity().expect("the identity key loads")
    }

    /// Another client on the same home (for a restarted server's address).
    pub async fn client_for(&self, server: &impl Reachable) -> Client {
        let home = Home::open(self.home.path()).await.expect("the home opens");
        Client::new(
            home,
            server.addr(),
            Some(server.fingerprint()),
            None,
            quiet(),
        )
    }
}

/// Registers `phone` as `carrier register` does: the account key, then one
/// device (id 1 on a new account) with its prekeys published. RSA users get
/// the shared RSA key; P-256 users a new key.
pub async fn register(server: &impl Reachable, phone: &str, key_type: KeyType) -> TestUser {
    let (home, client) = new_client(&server.addr(), Some(server.fingerprint())).await;
    if key_type == KeyType::Rsa {
        shared_rsa_identity()
            .save(&client.home.identity_path(), None)
            .expect("the key file is written");
    }
    let replaced = register_client(server, &client, phone, key_type)
        .await
        .expect("registration succeeds");
    assert!(!replaced, "a first registration of {phone} replaced a key");
    let fingerprint = client
        .account()
        .expect("an account after registration")
        .fingerprint;
    TestUser {
        phone: phone.to_owned(),
        home,
        client,
        fingerprint,
    }
}

/// Registers only the account key of `phone` (no device), by hand on the
/// wire, and saves the account in a new home: for tests that sign and
/// publish device lists of their own.
pub async fn register_account(server: &impl Reachable, phone: &str, key_type: KeyType) -> TestUser {
    let (home, client) = new_client(&server.addr(), Some(server.fingerprint())).await;
    let path = client.home.identity_path();
    match key_type {
        KeyType::Rsa => shared_rsa_identity().save(&path, None),
        KeyType::P256 => Identity::generate(KeyType::P256).save(&path, None),
    }
    .expect("the key file is written");
    let identity = client.identity().expect("the key file loads");
    let conn = Connection::connect(&server.addr(), Pin::Expect(server.fingerprint()))
        .await
        .expect("connects");
    conn.call(Request::Register {
        phone: phone.to_owned(),
        key_type,
        public_key: B64(identity.public_key().to_spki_der()),
    })
    .await
    .expect("a code is sent");
    let signature = conn
        .prove(&identity, Purpose::Register, &self::phone(phone))
        .await
        .expect("the registration is signed");
    let answer = conn
        .call(Request::Verify {
            phone: phone.to_owned(),
            code: server.code_for(phone).as_str().into(),
            signature: B64(signature),
        })
        .await;
    let Ok(Response::Registered { fingerprint, .. }) = answer else {
        panic!("registering {phone}: {answer:?}");
    };
    conn.close().await;
    client
        .home
        .save_account(&carrier::client::Account {
            phone: phone.to_owned(),
            key_type,
            fingerprint: fingerprint.clone(),
            server: Some(server.addr()),
        })
        .expect("the account is saved");
    TestUser {
        phone: phone.to_owned(),
        home,
        client,
        fingerprint,
    }
}

/// A second home registering `phone` on `server`: a new device of its
/// owner, or someone the server lets claim the phone.
pub async fn another_device(server: &TestServer, phone: &str) -> TestUser {
    let (home, client) = new_client(&server.addr(), Some(server.fingerprint)).await;
    let replaced = register_client(server, &client, phone, KeyType::P256)
        .await
        .expect("the registration succeeds");
    assert!(replaced, "{phone} had a key before");
    let fingerprint = client.account().unwrap().fingerprint;
    TestUser {
        phone: phone.into(),
        home,
        client,
        fingerprint,
    }
}

/// Runs `Client::register` with the code the server wrote; returns whether
/// a key was replaced.
pub async fn register_client(
    server: &impl Reachable,
    client: &Client,
    phone: &str,
    key_type: KeyType,
) -> Result<bool, ClientError> {
    let (session, replaced) = client
        .register(phone, key_type, |p| {
            server
                .try_code_for(p.as_str())
                .ok_or_else(|| ClientError::Input(format!("no code for {p}")))
        })
        .await?;
    session.close().await;
    Ok(replaced)
}

pub fn phone(s: &str) -> PhoneNumber {
    PhoneNumber::from_canonical(s).expect("a canonical phone number")
}

/// The signature a client makes to register or log in on a connection.
pub fn proof(
    identity: &Identity,
    purpose: Purpose,
    exporter: &[u8; 32],
    nonce: &[u8],
    who: &str,
) -> Vec<u8> {
    let nonce: [u8; 32] = nonce.try_into().expect("a 32-byte nonce");
    // No transcript exists for a malformed phone; the server must refuse
    // the phone before it looks at the signature.
    let Ok(who_phone) = PhoneNumber::from_canonical(who) else {
        return vec![0; 64];
    };
    crypto::sign_proof(identity, purpose, exporter, &nonce, &who_phone)
}

/// A library connection logged in as `who` by hand (no `Client`), for
/// pipelining raw requests.
pub async fn logged_in_connection(
    server: &impl Reachable,
    who: &str,
    identity: &Identity,
) -> Connection {
    let conn = Connection::connect(&server.addr(), Pin::Expect(server.fingerprint()))
        .await
        .expect("connects");
    let Response::Challenge { nonce } = conn.call(Request::Challenge).await.expect("a challenge")
    else {
        panic!("expected a challenge");
    };
    let signature = proof(identity, Purpose::Login, conn.exporter(), &nonce.0, who);
    let answer = conn
        .call(Request::Login {
            phone: who.to_owned(),
            signature: B64(signature),
        })
        .await;
    assert!(
        matches!(answer, Ok(Response::LoggedIn { .. })),
        "login as {who}: {answer:?}"
    );
    conn
}

/// `text` sealed on `session` (logged in as a device) for the one device of
/// `to`, as a `device_send` request, with its message id. The session is
/// saved as a send saves it, so `to` can open it.
pub async fn sealed_for(session: &Session<'_>, to: &str, text: &str) -> (MessageId, Request) {
    let sealed = session
        .seal_for(to, MessageId::random(), text)
        .await
        .unwrap_or_else(|e| panic!("sealing for {to}: {e}"));
    let [copy] = &sealed.copies[..] else {
        panic!("{to} has {} devices, not one", sealed.copies.len());
    };
    (sealed.id, copy.request(sealed.id))
}

/// The same request again (requests are not `Clone`: some carry secrets).
pub fn copy_of(request: &Request) -> Request {
    serde_json::from_value(serde_json::to_value(request).expect("a request serialises"))
        .expect("a request parses back")
}

/// The stable code of a server refusal, if `err` is one.
pub fn server_code(err: &ClientError) -> Option<ErrorCode> {
    match err {
        ClientError::Server { code, .. } => Some(*code),
        _ => None,
    }
}

/// The error's message if `response` is the error `code`; panics naming `case` otherwise.
pub fn expect_error(response: Response, code: ErrorCode, case: &str) -> String {
    match response {
        Response::Error {
            code: got, message, ..
        } if got == code => message,
        other => panic!("{case}: expected error {code:?}, got {other:?}"),
    }
}

/// The next message pushed on `conn` (other events are skipped).
pub async fn next_pushed_message(conn: &mut Connection) -> Delivered {
    loop {
        match within("a pushed message", conn.next_event()).await {
            Some(Event::Message(m)) => return m,
            Some(_) => continue,
            None => panic!("the connection closed before a message was pushed"),
        }
    }
}

/// A pool on the database at `location`, for reading a server's tables.
pub async fn open_any(location: &carrier::db::Location) -> AnyPool {
    sqlx::any::install_default_drivers();
    let url = match location {
        carrier::db::Location::Sqlite(path) => format!("sqlite://{}", path.display()),
        carrier::db::Location::Postgres(url) => url.clone(),
    };
    AnyPool::connect(&url)
        .await
        .expect("the server database opens")
}
