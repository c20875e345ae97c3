//! High-level client operations. [`Client`] knows the home and the server;
//! [`Session`] is a logged-in connection with the user's identity loaded.

use zeroize::Zeroizing;

use super::contacts::Contacts;
use super::home::{Account, Direction, Home, Record};
use super::receive::{self, Received, Refusal};
use super::{ClientError, Connection, Notice, Notify, unexpected};
use crate::clock::Clock;
use crate::crypto::{self, Identity, Outgoing, PublicKey, Purpose};
use crate::domain::{Fingerprint, MessageId, PhoneNumber};
use crate::protocol::{B64, Delivered, KeyType, Request, Response, UserInfo};
use crate::tls::Pin;

/// A client bound to a home directory and a server address.
pub struct Client {
    pub home: Home,
    server: String,
    server_fingerprint: Option<Fingerprint>,
    passphrase: Option<Zeroizing<String>>,
    notify: Notify,
    clock: Clock,
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
            notify,
            clock: Clock::System,
        }
    }

    /// Connects and checks the server's key: the one given on the command
    /// line, else the one pinned for this address, else pins what it sees.
    pub async fn connect(&self) -> Result<Connection, ClientError> {
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
                (self.notify)(Notice::ServerPinned {
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
        let passphrase = self.passphrase.as_ref().map(|p| p.as_str());
        Ok(Identity::load(&self.home.identity_path(), passphrase)?)
    }

    /// Registers `phone`: makes (or reuses) the identity key, asks the server
    /// for a code, reads it with `read_code`, and proves the key. Returns the
    /// logged-in session and whether an older key was replaced.
    pub async fn register(
        &self,
        phone: &str,
        key_type: KeyType,
        read_code: impl FnOnce(&PhoneNumber) -> Result<String, ClientError>,
    ) -> Result<(Session<'_>, bool), ClientError> {
        let phone = PhoneNumber::parse(phone).map_err(|e| ClientError::Input(e.to_string()))?;
        let identity = self.identity_for(&phone, key_type)?;
        let spki = identity.public_key().to_spki_der();
        let conn = self.connect().await?;
        conn.call(Request::Register {
            phone: phone.to_string(),
            key_type: identity.key_type(),
            public_key: B64(spki.clone()),
        })
        .await?;
        let code = Zeroizing::new(read_code(&phone)?);
        let signature = conn.prove(&identity, Purpose::Register, &phone).await?;
        let answer = conn
            .call(Request::Verify {
                phone: phone.to_string(),
                code: code.trim().into(),
                signature: B64(signature),
            })
            .await?;
        let Response::Registered {
            replaced_key,
            fingerprint,
            ..
        } = answer
        else {
            return Err(unexpected(answer));
        };
        self.home.save_account(&Account {
            phone: phone.to_string(),
            key_type: identity.key_type(),
            fingerprint,
        })?;
        Ok((
            Session {
                client: self,
                conn,
                identity,
                me: phone,
            },
            replaced_key,
        ))
    }

    /// Keeps the existing key if the home already has one for this phone
    /// (re-registering a device); otherwise makes and saves a new one.
    fn identity_for(
        &self,
        phone: &PhoneNumber,
        key_type: KeyType,
    ) -> Result<Identity, ClientError> {
        let path = self.home.identity_path();
        if path.exists() {
            match self.home.account()? {
                Some(a) if a.phone != phone.as_str() => {
                    return Err(ClientError::Input(format!(
                        "{} already holds the account of {}; use another --home for {phone}",
                        self.home.dir().display(),
                        a.phone
                    )));
                }
                _ => return self.identity(),
            }
        }
        let identity = Identity::generate(key_type);
        identity.save(&path, self.passphrase.as_ref().map(|p| p.as_str()))?;
        Ok(identity)
    }

    /// Connects and logs in as the home's account.
    pub async fn login(&self) -> Result<Session<'_>, ClientError> {
        let account = self.account()?;
        let me = PhoneNumber::from_canonical(&account.phone)
            .map_err(|e| ClientError::Input(e.to_string()))?;
        let identity = self.identity()?;
        let conn = self.connect().await?;
        let signature = conn.prove(&identity, Purpose::Login, &me).await?;
        let answer = conn
            .call(Request::Login {
                phone: me.to_string(),
                signature: B64(signature),
            })
            .await?;
        if !matches!(answer, Response::LoggedIn { .. }) {
            return Err(unexpected(answer));
        }
        Ok(Session {
            client: self,
            conn,
            identity,
            me,
        })
    }
}

/// A logged-in connection.
pub struct Session<'c> {
    client: &'c Client,
    pub conn: Connection,
    identity: Identity,
    me: PhoneNumber,
}

impl Session<'_> {
    pub fn me(&self) -> &PhoneNumber {
        &self.me
    }

    /// The pins of this home, checked against this connection's server.
    fn contacts(&self) -> Contacts<'_> {
        Contacts {
            conn: &self.conn,
            home: &self.client.home,
            notify: &self.client.notify,
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

    /// Accepts the key the server now reports for `phone`, replacing the pin.
    pub async fn trust(&self, phone: &PhoneNumber) -> Result<Fingerprint, ClientError> {
        self.contacts().trust(phone).await
    }

    /// Seals `text` to `to` and sends it; returns once the server committed it.
    pub async fn send(&self, to: &str, text: &str) -> Result<MessageId, ClientError> {
        let to = PhoneNumber::parse(to).map_err(|e| ClientError::Input(e.to_string()))?;
        let (key, fp) = self.contact_key(&to).await?;
        let id = MessageId::random();
        let counter = self.client.home.next_counter(to.as_str()).await?;
        let sent_at = self.client.clock.now_ms();
        let envelope = crypto::seal(
            &self.identity,
            &key,
            &Outgoing {
                id,
                counter,
                sent_at_ms: sent_at as u64,
                sender_phone: &self.me,
                recipient_phone: &to,
                text,
            },
        )?;
        let answer = self
            .conn
            .call(Request::Send {
                id,
                to: to.to_string(),
                envelope: B64(envelope),
            })
            .await?;
        if !matches!(answer, Response::Accepted { .. }) {
            return Err(unexpected(answer));
        }
        self.client
            .home
            .record(&Record {
                id,
                direction: Direction::Out,
                peer: &to,
                peer_fingerprint: fp,
                counter,
                text,
                sent_at,
                stored_at: self.client.clock.now_ms(),
            })
            .await?;
        Ok(id)
    }

    /// The users of the neighbourhood, with home server and presence.
    pub async fn list(&self) -> Result<Vec<crate::protocol::ListedUser>, ClientError> {
        match self.conn.call(Request::List).await? {
            Response::Users { users } => Ok(users),
            other => Err(unexpected(other)),
        }
    }

    /// Signs `text` and sends it to every connected user of the neighbourhood.
    pub async fn broadcast(&self, text: &str) -> Result<MessageId, ClientError> {
        if text.len() > crate::protocol::MAX_TEXT_BYTES {
            return Err(ClientError::Input(format!(
                "the text is {} bytes; the limit is {}",
                text.len(),
                crate::protocol::MAX_TEXT_BYTES
            )));
        }
        let id = MessageId::random();
        let sent_at = self.client.clock.now_ms() as u64;
        let bytes = crate::protocol::signed::broadcast_bytes(&id, sent_at, self.me.as_str(), text);
        let signature = B64(self.identity.sign(&bytes));
        match self
            .conn
            .call(Request::Broadcast {
                id,
                sent_at,
                text: text.to_owned(),
                signature,
            })
            .await?
        {
            Response::BroadcastSent { .. } => Ok(id),
            other => Err(unexpected(other)),
        }
    }

    /// Checks a broadcast's signature against its author's key (pinned, or
    /// pinned now on first contact).
    pub async fn verify_broadcast(
        &self,
        b: &crate::protocol::Broadcast,
    ) -> Result<(), ClientError> {
        let from =
            PhoneNumber::from_canonical(&b.from).map_err(|e| ClientError::Input(e.to_string()))?;
        let (key, _) = self.contacts().sender(&from).await?;
        let bytes = crate::protocol::signed::broadcast_bytes(&b.id, b.sent_at, &b.from, &b.text);
        key.verify(&bytes, &b.signature.0).map_err(|_| {
            ClientError::Input(format!(
                "a broadcast claiming to be from {} has a bad signature",
                b.from
            ))
        })
    }

    /// Fetches every waiting message: each is verified, decrypted and stored
    /// in the history before it is acknowledged, so nothing is lost if the
    /// client dies halfway.
    pub async fn fetch(&mut self) -> Result<(Vec<Received>, Vec<Refusal>), ClientError> {
        let mut received = Vec::new();
        let mut refused = Vec::new();
        let mut kept_back = std::collections::HashSet::new();
        loop {
            let Response::Messages { messages, more } =
                self.conn.call(Request::Fetch { limit: Some(500) }).await?
            else {
                return Err(ClientError::Protocol("expected messages".into()));
            };
            let fresh: Vec<Delivered> = messages
                .into_iter()
                .filter(|m| !kept_back.contains(&m.id))
                .collect();
            let progress = !fresh.is_empty();
            self.take_batch(fresh, &mut received, &mut refused, &mut kept_back)
                .await?;
            if !more || !progress {
                break;
            }
        }
        while let Some(event) = self.conn.try_next_event() {
            if let super::Event::Message(m) = event {
                self.take_batch(vec![m], &mut received, &mut refused, &mut kept_back)
                    .await?;
            }
        }
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
            match receive::accept(&self.contacts(), &self.identity, &self.me, m).await? {
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
