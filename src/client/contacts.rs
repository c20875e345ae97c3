//! Contact keys pinned on first use. The key the server reports for a phone
//! is trusted the first time and must stay the same afterwards; a different
//! one is refused until the user has checked its fingerprint with its owner
//! and run `carrier trust`. A server that swaps keys is caught this way, and
//! `trust` pins exactly the key the user was shown or named
//! ([`KeyOffer`]), never a second answer of the server.

use super::home::{Contact, Home};
use super::{ClientError, Connection, Notice, Notify, unexpected};
use crate::clock::Clock;
use crate::crypto::PublicKey;
use crate::domain::{Fingerprint, PhoneNumber};
use crate::protocol::{KeyType, Request, Response, UserInfo};

/// A contact's key as the server reports it now, beside the pinned one.
/// Trusting an offer pins exactly this key.
#[derive(Debug, Clone)]
pub struct KeyOffer {
    pub phone: PhoneNumber,
    /// The pinned key's fingerprint, if the contact is pinned.
    pub pinned: Option<Fingerprint>,
    /// The fingerprint of the key the server reports now.
    pub current: Fingerprint,
    info: UserInfo,
}

impl KeyOffer {
    /// Whether a pinned key differs from the server's.
    pub fn changed(&self) -> bool {
        self.pinned.is_some_and(|p| p != self.current)
    }
}

/// The pins of one home, checked against what a logged-in connection's
/// server reports.
pub(super) struct Contacts<'a> {
    pub conn: &'a Connection,
    pub home: &'a Home,
    pub notify: Notify,
    pub clock: &'a Clock,
}

impl Contacts<'_> {
    /// A user's key as the server reports it.
    pub async fn lookup(&self, phone: &PhoneNumber) -> Result<UserInfo, ClientError> {
        match self
            .conn
            .call(Request::Lookup {
                phone: phone.to_string(),
            })
            .await?
        {
            Response::User(info) => Ok(info),
            other => Err(unexpected(other)),
        }
    }

    /// The key to encrypt to `phone` with: the pinned one, which must still
    /// be the one the server reports; on first contact the server's, now
    /// pinned.
    pub async fn current(
        &self,
        phone: &PhoneNumber,
    ) -> Result<(PublicKey, Fingerprint), ClientError> {
        let (key, fp, _) = self.current_info(phone).await?;
        Ok((key, fp))
    }

    /// [`Contacts::current`], with the whole `lookup` answer (the devices).
    pub async fn current_info(
        &self,
        phone: &PhoneNumber,
    ) -> Result<(PublicKey, Fingerprint, UserInfo), ClientError> {
        let info = self.lookup(phone).await?;
        let current = PublicKey::from_spki_der_typed(info.key_type, &info.public_key.0)?;
        let current_fp = current.fingerprint();
        match self.home.contact(phone.as_str()).await? {
            Some(pinned) if pinned.fingerprint == current_fp.to_hex() => {
                Ok((current, current_fp, info))
            }
            Some(pinned) => Err(ClientError::KeyChanged {
                phone: phone.to_string(),
                pinned: Fingerprint::parse(&pinned.fingerprint).unwrap_or(current_fp),
                current: current_fp,
            }),
            None => {
                self.pin(phone, &info, current_fp).await?;
                (self.notify)(Notice::ContactPinned {
                    phone: phone.to_string(),
                    fingerprint: current_fp,
                });
                Ok((current, current_fp, info))
            }
        }
    }

    /// The key to check a signature from `phone` with: the pinned one,
    /// without asking the server; on first contact the server's, now pinned.
    pub async fn sender(
        &self,
        phone: &PhoneNumber,
    ) -> Result<(PublicKey, Fingerprint), ClientError> {
        match self.pinned(phone).await? {
            Some(pinned) => Ok(pinned),
            None => self.current(phone).await,
        }
    }

    /// The pinned key of `phone`, if any.
    pub async fn pinned(
        &self,
        phone: &PhoneNumber,
    ) -> Result<Option<(PublicKey, Fingerprint)>, ClientError> {
        let Some(c) = self.home.contact(phone.as_str()).await? else {
            return Ok(None);
        };
        let key_type = KeyType::parse(&c.key_type)
            .ok_or_else(|| ClientError::Protocol("bad pinned key type".into()))?;
        let key = PublicKey::from_spki_der_typed(key_type, &c.public_key)?;
        let fp = key.fingerprint();
        Ok(Some((key, fp)))
    }

    /// The key the server reports for `phone` now, beside the pinned one;
    /// pins nothing.
    pub async fn offer(&self, phone: &PhoneNumber) -> Result<KeyOffer, ClientError> {
        let info = self.lookup(phone).await?;
        let current = PublicKey::from_spki_der_typed(info.key_type, &info.public_key.0)?;
        let pinned = self.pinned(phone).await?.map(|(_, fp)| fp);
        Ok(KeyOffer {
            phone: phone.clone(),
            pinned,
            current: current.fingerprint(),
            info,
        })
    }

    /// Pins the offered key, replacing any earlier pin.
    pub async fn accept(&self, offer: &KeyOffer) -> Result<Fingerprint, ClientError> {
        self.pin(&offer.phone, &offer.info, offer.current).await?;
        Ok(offer.current)
    }

    async fn pin(
        &self,
        phone: &PhoneNumber,
        info: &UserInfo,
        fp: Fingerprint,
    ) -> Result<(), ClientError> {
        let contact = Contact {
            phone: phone.to_string(),
            key_type: info.key_type.as_str().into(),
            public_key: info.public_key.0.clone(),
            fingerprint: fp.to_hex(),
        };
        self.home.pin_contact(&contact, self.clock.now_ms()).await
    }
}
