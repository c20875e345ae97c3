//! Registration: make (or reuse) the identity key, ask the server for a
//! code, then prove the key with the code and make this home's device
//! (protocol v2: every account registered here has one). A wrong code
//! leaves the registration open while the server says tries are left, so
//! the user can type it again; the account remembers the server it was
//! made on.

use zeroize::Zeroizing;

use super::account::Account;
use super::{ClientError, Connection, Session, refused};
use crate::client::Client;
use crate::crypto::{Identity, Purpose};
use crate::domain::PhoneNumber;
use crate::protocol::{B64, ErrorCode, KeyType, Request, Response};

/// A registration whose code the server has sent and now waits for.
pub struct Registration<'c> {
    client: &'c Client,
    conn: Connection,
    identity: Identity,
    phone: PhoneNumber,
}

/// What the server made of a code.
pub enum CodeAnswer<'c> {
    /// Registered, with this home's device made and logged in as it;
    /// whether an older key was replaced.
    Registered(Session<'c>, bool),
    /// A wrong code with tries left, or a code that was not 6 digits, with
    /// the server's message: the same registration takes another.
    Wrong(Registration<'c>, String),
}

impl Client {
    /// Registers `phone`: makes (or reuses) the identity key, asks the server
    /// for a code, reads it with `read_code`, and proves the key. Returns the
    /// logged-in session and whether an older key was replaced. One code is
    /// tried; [`Client::start_registration`] lets a caller try again.
    pub async fn register(
        &self,
        phone: &str,
        key_type: KeyType,
        read_code: impl FnOnce(&PhoneNumber) -> Result<String, ClientError>,
    ) -> Result<(Session<'_>, bool), ClientError> {
        let registration = self.start_registration(phone, key_type).await?;
        let code = Zeroizing::new(read_code(registration.phone())?);
        match registration.verify(&code).await? {
            CodeAnswer::Registered(session, replaced) => Ok((session, replaced)),
            CodeAnswer::Wrong(_, message) => Err(ClientError::Server {
                code: ErrorCode::WrongCode,
                message,
                retry_after_ms: None,
            }),
        }
    }

    /// Makes (or reuses) the identity key and asks the server to send a code.
    pub async fn start_registration(
        &self,
        phone: &str,
        key_type: KeyType,
    ) -> Result<Registration<'_>, ClientError> {
        let phone = PhoneNumber::parse(phone).map_err(|e| ClientError::Input(e.to_string()))?;
        let identity = self.identity_for(&phone, key_type)?;
        let conn = self.connect().await?;
        conn.call(Request::Register {
            phone: phone.to_string(),
            key_type: identity.key_type(),
            public_key: B64(identity.public_key().to_spki_der()),
        })
        .await?;
        Ok(Registration {
            client: self,
            conn,
            identity,
            phone,
        })
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
        identity.save(&path, self.passphrase())?;
        Ok(identity)
    }
}

impl<'c> Registration<'c> {
    pub fn phone(&self) -> &PhoneNumber {
        &self.phone
    }

    /// Proves the key with `code`. On success the account (with this
    /// client's server) is saved in the home, and the home's device is made
    /// and published (replacing any devices of an earlier key).
    ///
    /// A wrong code that spent the last try is an error (`wrong_code`), not
    /// [`CodeAnswer::Wrong`]: the server would refuse every further code
    /// until its window ends, so there is nothing left to type.
    pub async fn verify(self, code: &str) -> Result<CodeAnswer<'c>, ClientError> {
        let signature = self
            .conn
            .prove(&self.identity, Purpose::Register, &self.phone)
            .await?;
        let answer = self
            .conn
            .start(Request::Verify {
                phone: self.phone.to_string(),
                code: code.trim().into(),
                signature: B64(signature),
            })
            .await?
            .await
            .map_err(|_| ClientError::Disconnected)?;
        let (replaced_key, fingerprint) = match answer {
            Response::Registered {
                replaced_key,
                fingerprint,
                ..
            } => (replaced_key, fingerprint),
            // A wrong code keeps the registration open only while the
            // server says the code has tries left (or spent none, for a
            // code that was not 6 digits); the last one is a refusal that
            // keeps the server's wait, so the caller can say when to
            // register again.
            Response::Error {
                code: ErrorCode::WrongCode,
                message,
                tries_left,
                ..
            } if tries_left != Some(0) => return Ok(CodeAnswer::Wrong(self, message)),
            other => return Err(refused(other)),
        };
        self.client.home.save_account(&Account {
            phone: self.phone.to_string(),
            key_type: self.identity.key_type(),
            fingerprint,
            server: Some(self.client.server().to_owned()),
        })?;
        let session = Session::new(self.client, self.conn, self.identity, self.phone);
        Ok(CodeAnswer::Registered(
            session.create_device().await?,
            replaced_key,
        ))
    }
}
