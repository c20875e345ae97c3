//! High-level client operations. [`Client`] knows the home and the server;
//! [`Session`] is a logged-in connection with the user's identity loaded.

use zeroize::Zeroizing;

use super::account::Account;
use super::contacts::{Contacts, KeyOffer};
use super::device::{Device, setup};
use super::home::Home;
use super::receive::{self, Received, Refusal};
use super::{ClientError, Connection, Notice, Notify, unexpected};
use crate::clock::Clock;
use crate::crypto::{Identity, PublicKey, Purpose};
use crate::domain::{Fingerprint, MessageId, PhoneNumber};
use crate::protocol::{B64, Delivered, ErrorCode, Request, Response, UserInfo};
use crate::tls::Pin;

/// A client bound to a home directory and a server address.
pub struct Client {
    pub home: Home,
    server: String,
    server_fingerprint: Option<Fingerprint>,
    passphrase: Option<Zeroizing<String>>,
    /// Behind a lock so `chat` can route notices through its screen.
    notify: std::sync::RwLock<Notify>,
    pub(in crate::client) clock: Clock,
}

impl Client {
    pub fn new(
        home: Home,
        server: String,
        server_fingerprint: Option<Fingerprint>,
        passphrase: Option<Zeroizing<String>>,
        notify: Notify,
    ) -> Self {
        Self {
            home,
            server,
            server_fingerprint,
            passphrase,
            notify: std::sync::RwLock::new(notify),
            clock: Clock::System,
        }
    }

    /// The server address this client dials.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Where notices go now.
    pub(super) fn notify(&self) -> Notify {
        self.notify
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Sends notices to `notify` from now on; returns where they went.
    pub fn replace_notify(&self, notify: Notify) -> Notify {
        std::mem::replace(
            &mut *self.notify.write().unwrap_or_else(|p| p.into_inner()),
            notify,
        )
    }

    pub(in crate::client) fn passphrase(&self) -> Option<&str> {
        self.passphrase.as_ref().map(|p| p.as_str())
    }

    /// Connects and checks the server's key: the one given on the command
    /// line, else the one pinned for this address, else pins what it sees.
    pub async fn connect(&self) -> Result<Connection, ClientError> {
        super::account::check_address(&self.server)?;
        if let Err(e) = tokio::net::lookup_host(&self.server).await {
            return Err(ClientError::Unreachable {
                addr: self.server.clone(),
                reason: format!("no host by that name is known ({e}); check the spelling"),
            });
        }
        let pinned = self.home.server_pin(&self.server).await?;
        let pin = match self.server_fingerprint.or(pinned) {
            Some(fp) => Pin::Expect(fp),
            None => Pin::AcceptAny,
        };
        let conn = Connection::connect(&self.server, pin).await?;
        let seen = conn.server_fingerprint();
        if pinned != Some(seen) {
            self.home.pin_server(&self.server, seen).await?;
            if pinned.is_none() && self.server_fingerprint.is_none() {
                (self.notify())(Notice::ServerPinned {
                    addr: self.server.clone(),
                    fingerprint: seen,
                });
            }
        }
        Ok(conn)
    }

    pub fn account(&self) -> Result<Account, ClientError> {
        self.home
            .account()?
            .ok_or_else(|| ClientError::NoAccount(self.home.dir().to_owned()))
    }

    /// The identity key, decrypted with the passphrase if it has one.
    pub fn identity(&self) -> Result<Identity, ClientError> {
        super::error::load_key(&self.home.identity_path(), self.passphrase())
    }

    /// Connects and logs in: as this home's device with its own key
    /// (protocol v2), then brings its prekeys up to date; a home registered
    /// before protocol v2, which has no device, logs in with the account key.
    pub async fn login(&self) -> Result<Session<'_>, ClientError> {
        let account = self.account()?;
        let me = PhoneNumber::from_canonical(&account.phone)
            .map_err(|e| ClientError::Input(e.to_string()))?;
        let identity = self.identity()?;
        let device = Device::load(&self.home, self.passphrase()).await?;
        let conn = self.connect().await?;
        if let Some(device) = device {
            setup::log_in(&conn, &device)
                .await
                .map_err(|e| self.login_refused(&me, e))?;
            let mut session = Session::new(self, conn, identity, me);
            session.device = Some(device);
            session.maintain_prekeys().await?;
            return Ok(session);
        }
        let signature = conn.prove(&identity, Purpose::Login, &me).await?;
        let answer = conn
            .call(Request::Login {
                phone: me.to_string(),
                signature: B64(signature),
            })
            .await
            .map_err(|e| self.login_refused(&me, e))?;
        if !matches!(answer, Response::LoggedIn { .. }) {
            return Err(unexpected(answer));
        }
        Ok(Session::new(self, conn, identity, me))
    }

    /// A refused login, with what to do about it: the server is up but does
    /// not take this home's account.
    fn login_refused(&self, me: &PhoneNumber, e: ClientError) -> ClientError {
        let ClientError::Server {
            code,
            message,
            retry_after_ms,
        } = e
        else {
            return e;
        };
        let server = &self.server;
        match code {
            ErrorCode::UnknownUser => ClientError::Server {
                code,
                message: format!(
                    "the server at {server} does not know {me} ({message}). Pass the server \
                     you registered on with --server HOST:PORT, or register here with \
                     `carrier register {me}`"
                ),
                retry_after_ms,
            },
            ErrorCode::BadSignature => ClientError::AccountRefused(format!(
                "the server at {server} refused the key in {} for {me}: another key has \
                 been registered for {me} since (another device?). To use this home again, \
                 run `carrier register {me}`: it keeps this key and asks for a new code",
                self.home.identity_path().display()
            )),
            _ => ClientError::Server {
                code,
                message,
                retry_after_ms,
            },
        }
    }
}

/// A logged-in connection.
pub struct Session<'c> {
    pub(in crate::client) client: &'c Client,
    pub conn: Connection,
    pub(in crate::client) identity: Identity,
    pub(in crate::client) me: PhoneNumber,
    /// This home's device, when logged in as it (protocol v2).
    pub(in crate::client) device: Option<Device>,
}

impl<'c> Session<'c> {
    pub(super) fn new(
        client: &'c Client,
        conn: Connection,
        identity: Identity,
        me: PhoneNumber,
    ) -> Self {
        Self {
            client,
            conn,
            identity,
            me,
            device: None,
        }
    }

    /// This device's id, when logged in as a device.
    pub fn device_id(&self) -> Option<u32> {
        self.device.as_ref().map(|d| d.id().get())
    }

    /// Makes this home's device for the account just registered on this
    /// connection (which is logged in with the account key), publishes the
    /// account's new device list, then logs in again as the device and
    /// publishes its prekeys. Registration does this.
    pub(in crate::client) async fn create_device(self) -> Result<Session<'c>, ClientError> {
        let client = self.client;
        let now = super::device::now_ms(&client.clock);
        setup::register_device(
            &client.home,
            &self.conn,
            &self.identity,
            &self.me,
            client.passphrase(),
            now,
        )
        .await?;
        self.close().await;
        client.login().await
    }

    /// The client this session belongs to.
    pub fn client(&self) -> &'c Client {
        self.client
    }

    pub fn me(&self) -> &PhoneNumber {
        &self.me
    }

    /// The pins of this home, checked against this connection's server.
    pub(in crate::client) fn contacts(&self) -> Contacts<'_> {
        Contacts {
            conn: &self.conn,
            home: &self.client.home,
            notify: self.client.notify(),
            clock: &self.client.clock,
        }
    }

    /// A user's key as the server reports it.
    pub async fn lookup(&self, phone: &PhoneNumber) -> Result<UserInfo, ClientError> {
        self.contacts().lookup(phone).await
    }

    /// The key to use for `phone`: the pinned one, which must still be the
    /// one the server reports; on first contact the server's, now pinned.
    pub async fn contact_key(
        &self,
        phone: &PhoneNumber,
    ) -> Result<(PublicKey, Fingerprint), ClientError> {
        self.contacts().current(phone).await
    }

    /// The key the server reports for `phone` now, beside the pinned one;
    /// pins nothing.
    pub async fn key_offer(&self, phone: &PhoneNumber) -> Result<KeyOffer, ClientError> {
        self.contacts().offer(phone).await
    }

    /// Pins the offered key (exactly the one shown), replacing any pin.
    pub async fn accept_key(&self, offer: &KeyOffer) -> Result<Fingerprint, ClientError> {
        self.contacts().accept(offer).await
    }

    /// Accepts the key the server now reports for `phone`, replacing the pin.
    pub async fn trust(&self, phone: &PhoneNumber) -> Result<Fingerprint, ClientError> {
        let offer = self.key_offer(phone).await?;
        self.accept_key(&offer).await
    }

    /// Accepts the key the server reports for `phone` only if its
    /// fingerprint is `expected`; otherwise refuses, naming both and
    /// pinning nothing.
    pub async fn trust_expecting(
        &self,
        phone: &PhoneNumber,
        expected: Fingerprint,
    ) -> Result<Fingerprint, ClientError> {
        let offer = self.key_offer(phone).await?;
        if offer.current != expected {
            return Err(ClientError::NotTheExpectedKey {
                phone: phone.to_string(),
                expected,
                current: offer.current,
            });
        }
        self.accept_key(&offer).await
    }

    /// Seals `text` for every device of `to` (and every other device of
    /// this account) and sends them; returns once the server committed
    /// them. A home without a device (registered before protocol v2)
    /// cannot send: protocol v1's `send` is retired.
    pub async fn send(&self, to: &str, text: &str) -> Result<MessageId, ClientError> {
        let to = PhoneNumber::parse(to).map_err(|e| ClientError::Input(e.to_string()))?;
        let device = self.device.as_ref().ok_or_else(|| no_device(&self.me))?;
        self.send_v2(device, &to, text).await
    }

    /// The users of the neighbourhood, with home server and presence: every
    /// page, in phone order. A `next` that does not move forward ends the
    /// walk with an error rather than a loop.
    pub async fn list(&self) -> Result<Vec<crate::protocol::ListedUser>, ClientError> {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let request = Request::List {
                after: after.clone(),
                limit: None,
            };
            let (users, next) = match self.conn.call(request).await? {
                Response::Users { users, next } => (users, next),
                other => return Err(unexpected(other)),
            };
            all.extend(users);
            match next {
                None => return Ok(all),
                Some(next) if after.as_ref().is_none_or(|a| next > *a) => after = Some(next),
                Some(next) => {
                    return Err(ClientError::Protocol(format!(
                        "the server's list went back to {next}"
                    )));
                }
            }
        }
    }

    /// Fetches every waiting message: each is verified, decrypted and stored
    /// in the history before it is acknowledged, so nothing is lost if the
    /// client dies halfway. Each fetch continues after the last message the
    /// one before returned, so messages kept back (unacknowledged) do not
    /// hide those queued after them.
    pub async fn fetch(&mut self) -> Result<(Vec<Received>, Vec<Refusal>), ClientError> {
        let mut received = Vec::new();
        let mut refused = Vec::new();
        let mut kept_back = std::collections::HashSet::new();
        let mut after = None;
        loop {
            let request = Request::Fetch {
                limit: Some(500),
                after,
            };
            let Response::Messages {
                messages,
                more,
                cursor,
            } = self.conn.call(request).await?
            else {
                return Err(ClientError::Protocol("expected messages".into()));
            };
            let fresh: Vec<Delivered> = messages
                .into_iter()
                .filter(|m| !kept_back.contains(&m.id))
                .collect();
            self.take_batch(fresh, &mut received, &mut refused, &mut kept_back)
                .await?;
            match cursor {
                Some(c) if more && after.is_none_or(|a| c > a) => after = Some(c),
                _ => break,
            }
        }
        while let Some(event) = self.conn.try_next_event() {
            if let super::Event::Message(m) = event {
                self.take_batch(vec![m], &mut received, &mut refused, &mut kept_back)
                    .await?;
            }
        }
        self.maintain_prekeys().await?;
        Ok((received, refused))
    }

    /// Handles one pushed message (for `chat`); acknowledges it if it was
    /// stored or is garbage.
    pub async fn take_pushed(
        &mut self,
        m: Delivered,
    ) -> Result<Result<Option<Received>, Refusal>, ClientError> {
        let (mut received, mut refused) = (Vec::new(), Vec::new());
        self.take_batch(
            vec![m],
            &mut received,
            &mut refused,
            &mut Default::default(),
        )
        .await?;
        Ok(match refused.pop() {
            Some(r) => Err(r),
            None => Ok(received.pop()),
        })
    }

    async fn take_batch(
        &mut self,
        batch: Vec<Delivered>,
        received: &mut Vec<Received>,
        refused: &mut Vec<Refusal>,
        kept_back: &mut std::collections::HashSet<MessageId>,
    ) -> Result<(), ClientError> {
        let mut ack = Vec::new();
        for m in batch {
            let id = m.id;
            let verdict = match &self.device {
                Some(device) => self.accept_v2(device, m).await?,
                None => receive::accept(&self.contacts(), &self.identity, &self.me, m).await?,
            };
            match verdict {
                receive::Verdict::Stored(r) => {
                    received.push(r);
                    ack.push(id);
                }
                receive::Verdict::Duplicate => ack.push(id),
                receive::Verdict::Drop(r) => {
                    refused.push(r);
                    ack.push(id);
                }
                receive::Verdict::KeepBack(r) => {
                    refused.push(r);
                    kept_back.insert(id);
                }
            }
        }
        if !ack.is_empty() {
            self.conn.call(Request::Ack { ids: ack }).await?;
        }
        Ok(())
    }

    /// Says goodbye and closes the connection.
    pub async fn close(self) {
        self.conn.close().await;
    }
}

/// Why a home without a device cannot send.
pub(in crate::client) fn no_device(me: &PhoneNumber) -> ClientError {
    ClientError::Input(format!(
        "this home has no device of {me} (it was registered before protocol v2, whose \
         send is retired): run `carrier register {me}` to make one"
    ))
}
