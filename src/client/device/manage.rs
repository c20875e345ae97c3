//! The account's devices (docs/PROTOCOL.md §16, §5.2): listing them,
//! adding one with a link code, linking this home as a new device, and
//! removing one. Every list and certificate is signed here with the
//! account key; the server only stores them, and on linking passes sealed
//! messages it cannot open.

use std::time::Duration;

use base64::Engine;
use serde::Serialize;

use super::setup::{self, FirstDevice};
use super::{now_ms, store};
use crate::client::account::Account;
use crate::client::{Client, ClientError, Session, unexpected};
use crate::crypto::Identity;
use crate::crypto::v2::{
    DeviceCertificate, DeviceId, DeviceKey, DeviceList, LinkCode, VerifiedDeviceList,
};
use crate::domain::PhoneNumber;
use crate::protocol::{B64, ErrorCode, Request, Response};

/// How long `devices add` waits for the new device: the code's lifetime.
pub const LINK_WAIT: Duration = Duration::from_secs(600);

/// One device of this account, as `carrier devices` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceInfo {
    pub id: u32,
    pub name: String,
    /// SHA-256 of the device key's SubjectPublicKeyInfo, hex.
    pub fingerprint: String,
    /// When its certificate was signed, ms since the Unix epoch.
    pub added_at: i64,
    /// When it last logged in, ms since the Unix epoch; 0 for never.
    pub last_seen: i64,
    pub this_device: bool,
}

/// The account's current list and certificates, checked.
struct Current {
    list: VerifiedDeviceList,
    certificates: Vec<DeviceCertificate>,
    last_seen: Vec<(u32, i64)>,
}

impl Session<'_> {
    /// This account's devices, each checked against the account key.
    pub async fn devices(&self) -> Result<Vec<DeviceInfo>, ClientError> {
        let current = self.current_devices().await?;
        let own = self.device_id();
        Ok(current
            .certificates
            .iter()
            .map(|c| DeviceInfo {
                id: c.device_id.get(),
                name: c.name.clone(),
                fingerprint: c.device_key.fingerprint().to_hex(),
                added_at: c.created_at_ms as i64,
                last_seen: current
                    .last_seen
                    .iter()
                    .find(|(d, _)| *d == c.device_id.get())
                    .map_or(0, |(_, at)| *at),
                this_device: own == Some(c.device_id.get()),
            })
            .collect())
    }

    async fn current_devices(&self) -> Result<Current, ClientError> {
        let Response::Devices {
            device_list,
            certificates,
            last_seen,
        } = self.conn.call(Request::Devices).await?
        else {
            return Err(ClientError::Protocol("expected devices".into()));
        };
        let list = DeviceList::parse(&device_list.0)?
            .verify(&self.identity.public_key(), &self.me)
            .map_err(|e| ClientError::Forged(format!("this account's device list: {e}")))?;
        let mut checked = Vec::new();
        for c in &certificates {
            let cert = DeviceCertificate::parse(&c.0)?;
            list.certify(&cert)
                .map_err(|e| ClientError::Forged(format!("a device certificate: {e}")))?;
            checked.push(cert);
        }
        checked.sort_by_key(|c| c.device_id);
        Ok(Current {
            list,
            certificates: checked,
            last_seen: last_seen.iter().map(|s| (s.device, s.at)).collect(),
        })
    }

    /// Signs and publishes a list of the next version with `certificates`.
    async fn publish(
        &self,
        current: &Current,
        certificates: &[DeviceCertificate],
    ) -> Result<DeviceList, ClientError> {
        let devices = certificates
            .iter()
            .map(|c| (c.device_id, c.device_key.clone()))
            .collect();
        let now = now_ms(&self.client.clock);
        let list = DeviceList::issue(
            &self.identity,
            &self.me,
            current.list.version() + 1,
            now,
            devices,
        )?;
        setup::publish_list(&self.conn, &list, certificates).await?;
        Ok(list)
    }

    /// `carrier devices add`: opens a link code (given to `show_code`),
    /// waits for the new device, certifies it, publishes the new list and
    /// hands it the account key sealed under the code. Returns its id and
    /// name.
    pub async fn add_device(
        &self,
        show_code: impl FnOnce(&str),
    ) -> Result<(u32, String), ClientError> {
        let code = LinkCode::generate();
        let rendezvous = code.rendezvous().to_vec();
        match self
            .conn
            .call(Request::LinkOpen {
                rendezvous: B64(rendezvous.clone()),
            })
            .await?
        {
            Response::LinkOpened { .. } => {}
            other => return Err(unexpected(other)),
        }
        show_code(&code.to_display());
        let request = tokio::time::timeout(LINK_WAIT, self.link_request(&rendezvous))
            .await
            .map_err(|_| {
                ClientError::Input(
                    "no device used the link code within 10 minutes; run `carrier devices add` \
                     again for a new one"
                        .into(),
                )
            })??;
        match self.complete_link(&code, &rendezvous, &request).await {
            Ok(linked) => Ok(linked),
            Err(e) => {
                // The new device would otherwise wait until the code
                // expires; the error that stopped the link is this
                // command's to report, so the refusal's own outcome is not.
                let refuse = Request::LinkRefuse {
                    rendezvous: B64(rendezvous),
                };
                let _ = self.conn.call(refuse).await;
                Err(e)
            }
        }
    }

    /// Certifies the device that sent `request`, publishes the new list
    /// and answers it with the account key sealed under the code.
    async fn complete_link(
        &self,
        code: &LinkCode,
        rendezvous: &[u8],
        request: &[u8],
    ) -> Result<(u32, String), ClientError> {
        let (name, key) = code.open_request(&self.me, request).map_err(|e| {
            ClientError::Forged(format!(
                "a link request that does not open with the code was refused ({e})"
            ))
        })?;
        let current = self.current_devices().await?;
        let pool = self.client.home.pool();
        let highest_stored = store::device(pool)
            .await?
            .map_or(0, |d| d.highest_id as u32);
        let highest_listed = current
            .list
            .list()
            .devices
            .iter()
            .map(|(id, _)| id.get())
            .max()
            .unwrap_or(0);
        let id = DeviceId::new(highest_stored.max(highest_listed) + 1)?;
        let now = now_ms(&self.client.clock);
        let cert = DeviceCertificate::issue(&self.identity, &self.me, id, &key, &name, now)?;
        let mut certificates = current.certificates.clone();
        certificates.push(cert.clone());
        let list = self.publish(&current, &certificates).await?;
        store::note_device_id(pool, id.get()).await?;
        let pkcs8 = self.identity.pkcs8_der();
        let response = code.seal_response(&self.me, &cert, &list, Some(&pkcs8));
        match self
            .conn
            .call(Request::LinkAccept {
                rendezvous: B64(rendezvous.to_vec()),
                response: B64(response),
            })
            .await?
        {
            Response::LinkAccepted => Ok((id.get(), name)),
            other => Err(unexpected(other)),
        }
    }

    /// Waits for the push of a request to `rendezvous`.
    async fn link_request(&self, rendezvous: &[u8]) -> Result<Vec<u8>, ClientError> {
        loop {
            match self.conn.next_link_request().await {
                Some((r, request)) if r == rendezvous => return Ok(request),
                Some(_) => {}
                None => return Err(ClientError::Disconnected),
            }
        }
    }

    /// `carrier devices remove ID`: publishes a list without the device;
    /// the server then purges its queue and prekeys. Returns its name.
    pub async fn remove_device(&self, id: u32) -> Result<String, ClientError> {
        if self.device_id() == Some(id) {
            return Err(ClientError::Input(format!(
                "device {id} is the one in use here; remove it from another device"
            )));
        }
        let current = self.current_devices().await?;
        let Some(gone) = current
            .certificates
            .iter()
            .find(|c| c.device_id.get() == id)
        else {
            return Err(ClientError::Input(format!(
                "this account has no device {id}; `carrier devices` lists them"
            )));
        };
        let name = gone.name.clone();
        let rest: Vec<_> = current
            .certificates
            .iter()
            .filter(|c| c.device_id.get() != id)
            .cloned()
            .collect();
        self.publish(&current, &rest).await?;
        Ok(name)
    }
}

impl Client {
    /// `carrier link PHONE CODE`: makes this (empty) home a new device of
    /// `phone`'s account through the code shown by `carrier devices add`.
    /// Returns the device id.
    pub async fn link(&self, phone: &str, code: &str, name: &str) -> Result<u32, ClientError> {
        if self.home.account()?.is_some() || self.home.identity_path().exists() {
            return Err(ClientError::Input(format!(
                "{} already holds an account; link into a new, empty --home",
                self.home.dir().display()
            )));
        }
        let phone = PhoneNumber::parse(phone).map_err(|e| ClientError::Input(e.to_string()))?;
        let code = LinkCode::parse(code).map_err(|_| {
            ClientError::Input(
                "that is not a link code: give the code `carrier devices add` printed, \
                 like abcde-fghij-klmno-pqrst-uvwxya"
                    .into(),
            )
        })?;
        let key = DeviceKey::generate();
        let request = code.seal_request(&phone, name, &key)?;
        let conn = self.connect().await?;
        let answer = conn
            .call(Request::LinkRequest {
                phone: phone.to_string(),
                rendezvous: B64(code.rendezvous().to_vec()),
                request: B64(request),
            })
            .await;
        let response = match answer {
            Ok(Response::Linked { response }) => response,
            Ok(other) => return Err(unexpected(other)),
            // A refusal (exit status 4), not a usage error: the code was
            // well formed, and only the server can tell it is wrong or dead.
            Err(ClientError::Server {
                code: ErrorCode::NoLink,
                message,
                retry_after_ms,
            }) => {
                return Err(ClientError::Server {
                    code: ErrorCode::NoLink,
                    message: format!(
                        "no device of {phone} was linked: {} (a mistyped or used code, or a \
                         stopped `carrier devices add`, ends the same way); run `carrier \
                         devices add` again",
                        crate::client::show::clean(&message)
                    ),
                    retry_after_ms,
                });
            }
            Err(e) => return Err(e),
        };
        conn.close().await;
        let linked = code.open_response(&phone, &response.0).map_err(|e| {
            ClientError::Forged(format!(
                "the answer to the link request does not open ({e})"
            ))
        })?;
        let Some(pkcs8) = linked.account_pkcs8.as_ref() else {
            return Err(account_key_kept(&phone, &linked.certificate));
        };
        let identity = identity_from_pkcs8(pkcs8)?;
        let list = linked
            .list
            .verify(&identity.public_key(), &phone)
            .map_err(|e| ClientError::Forged(format!("the new device list: {e}")))?;
        let device = list
            .certify(&linked.certificate)
            .map_err(|e| ClientError::Forged(format!("the new certificate: {e}")))?;
        if device.key != key.public() {
            return Err(ClientError::Forged(
                "the certificate is for another device key".into(),
            ));
        }
        identity.save(&self.home.identity_path(), self.passphrase())?;
        self.home.save_account(&Account {
            phone: phone.to_string(),
            key_type: identity.key_type(),
            fingerprint: identity.fingerprint().to_hex(),
            server: Some(self.server().to_owned()),
        })?;
        let first = FirstDevice {
            key,
            id: device.device_id,
            name: device.name.clone(),
        };
        let now = now_ms(&self.clock);
        setup::save_device(&self.home, &phone, first, self.passphrase(), now).await?;
        if let Some(highest) = list.list().devices.iter().map(|(id, _)| id.get()).max() {
            store::note_device_id(self.home.pool(), highest).await?;
        }
        self.login().await?.close().await;
        Ok(device.device_id.get())
    }
}

/// Why a link answered without the account key stops: docs/PROTOCOL.md §16
/// lets the existing device keep it, but this client logs in, checks its
/// account's list and sends as a device holding it, so it saves nothing.
/// The other device has already listed this one (by the certificate it
/// sent, under the code), so the user is told which one to remove there.
fn account_key_kept(phone: &PhoneNumber, certificate: &DeviceCertificate) -> ClientError {
    let id = certificate.device_id;
    ClientError::Declined(format!(
        "the device that showed the code kept the account key of {phone} and did not hand \
         it over (the protocol allows that), but this carrier runs only devices that hold \
         the account key, so nothing was saved here. That device has already listed this one \
         as device {id} ({}): remove it there (on a carrier, `carrier devices remove {id}`), \
         then link again through a device that hands over the account key",
        crate::client::show::clean(&certificate.name)
    ))
}

/// The account key handed over as PKCS#8 DER, read as the key file is.
fn identity_from_pkcs8(der: &[u8]) -> Result<Identity, ClientError> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    let pem = zeroize::Zeroizing::new(pem);
    Ok(Identity::from_pkcs8_pem(&pem, None)?)
}
