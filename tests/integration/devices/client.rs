//! A small protocol v2 client for the device tests, built on the same
//! `crypto::v2` calls a real client makes: an account key that signs
//! device lists and certificates, devices with their prekey stores that log
//! in, publish and seal, and the checks a sender makes on what `lookup`
//! and `claim` return.

use std::time::{SystemTime, UNIX_EPOCH};

use carrier::client::Connection;
use carrier::crypto::Identity;
use carrier::crypto::v2::{
    ClaimedPrekeys, Content, DeviceCertificate, DeviceId, DeviceKey, DeviceList, Envelope,
    LocalDevice, Opened, PrekeyBundle, PrekeyStore, Session, VerifiedBundle, VerifiedDevice,
    VerifiedDeviceList,
};
use carrier::domain::MessageId;
use carrier::protocol::{B64, Request, Response, UserInfo};
use carrier::tls::Pin;

use crate::common::*;

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// An account as the device holding its key sees it: the key, the
/// devices it lists, and the version of the last list it signed.
pub struct Account {
    pub phone: String,
    pub identity: Identity,
    pub version: u64,
    devices: Vec<(DeviceId, DeviceKey, String)>,
}

impl Account {
    pub fn new(user: &TestUser) -> Self {
        Self {
            phone: user.phone.clone(),
            identity: user.identity(),
            version: 0,
            devices: Vec::new(),
        }
    }

    /// An account the server has never seen: a fresh key, no devices.
    pub fn unregistered(phone: &str) -> Self {
        Self {
            phone: phone.to_owned(),
            identity: Identity::generate(carrier::protocol::KeyType::P256),
            version: 0,
            devices: Vec::new(),
        }
    }

    /// This account's devices as a sender would see them after `lookup`
    /// (list version 1, a fresh bundle each), without asking any server.
    pub fn as_peer(&self) -> Peer {
        let (list, certificates) = self.issue(1);
        let bundles: Vec<B64> = certificates
            .into_iter()
            .map(|certificate| {
                let device = self.device(certificate.device_id.get());
                let mut prekeys = PrekeyStore::new();
                prekeys.maintain(device.local.key(), now_ms());
                let (signed_prekey, kem_prekey) = prekeys.current(device.local.key()).unwrap();
                let bundle = PrekeyBundle {
                    certificate,
                    signed_prekey,
                    kem_prekey,
                };
                B64(bundle.to_bytes())
            })
            .collect();
        check_devices(&list.to_bytes(), &bundles, &self.identity, &self.phone)
    }

    /// Adds a device with a fresh key; returns its id.
    pub fn add_device(&mut self, name: &str) -> u32 {
        let id = self
            .devices
            .iter()
            .map(|(id, ..)| id.get())
            .max()
            .unwrap_or(0)
            + 1;
        let id = DeviceId::new(id).unwrap();
        self.devices
            .push((id, DeviceKey::generate(), name.to_owned()));
        id.get()
    }

    pub fn remove_device(&mut self, id: u32) {
        self.devices.retain(|(d, ..)| d.get() != id);
    }

    /// The next `publish_devices` request: a list one version up and a
    /// certificate per device.
    pub fn next_list(&mut self) -> Request {
        self.version += 1;
        self.list_request(self.version)
    }

    /// A `publish_devices` request for the current devices under `version`.
    pub fn list_request(&self, version: u64) -> Request {
        let (list, certificates) = self.issue(version);
        Request::PublishDevices {
            list: B64(list.to_bytes()),
            certificates: certificates.iter().map(|c| B64(c.to_bytes())).collect(),
        }
    }

    /// The current devices' list under `version`, and their certificates.
    pub fn issue(&self, version: u64) -> (DeviceList, Vec<DeviceCertificate>) {
        let phone = phone(&self.phone);
        let now = now_ms();
        let devices = self
            .devices
            .iter()
            .map(|(id, key, _)| (*id, key.public()))
            .collect();
        let list = DeviceList::issue(&self.identity, &phone, version, now, devices).unwrap();
        let certificates = self
            .devices
            .iter()
            .map(|(id, key, name)| {
                DeviceCertificate::issue(&self.identity, &phone, *id, &key.public(), name, now)
                    .unwrap()
            })
            .collect();
        (list, certificates)
    }

    /// Device `id`'s own state, to log in and publish with.
    pub fn device(&self, id: u32) -> Device {
        let (id, key, _) = self
            .devices
            .iter()
            .find(|(d, ..)| d.get() == id)
            .expect("a device of this account");
        let key = DeviceKey::from_bytes(key.to_bytes().as_ref()).unwrap();
        Device {
            local: LocalDevice::new(phone(&self.phone), *id, key),
            prekeys: PrekeyStore::new(),
            phone: self.phone.clone(),
            id: id.get(),
        }
    }
}

/// One device: its key and its prekey store.
pub struct Device {
    pub phone: String,
    pub id: u32,
    pub local: LocalDevice,
    pub prekeys: PrekeyStore,
}

impl Device {
    /// A connection logged in as this device.
    pub async fn connect(&self, server: &impl Reachable) -> Connection {
        let conn = Connection::connect(&server.addr(), Pin::Expect(server.fingerprint()))
            .await
            .expect("connects");
        let answer = self.log_in(&conn).await;
        assert!(
            matches!(answer, Response::LoggedIn { device: Some(d), .. } if d == self.id),
            "device {} of {} logs in: {answer:?}",
            self.id,
            self.phone
        );
        conn
    }

    /// `challenge` and `device_login` on `conn`; the answer.
    pub async fn log_in(&self, conn: &Connection) -> Response {
        let Response::Challenge { nonce } = conn.ask(Request::Challenge).await.unwrap() else {
            panic!("a challenge");
        };
        let nonce: [u8; 32] = nonce.0.try_into().unwrap();
        let signature = self.local.sign_login(conn.exporter(), &nonce);
        conn.ask(Request::DeviceLogin {
            phone: self.phone.clone(),
            device: self.id,
            signature: B64(signature.to_vec()),
        })
        .await
        .unwrap()
    }

    /// Logs in on a raw connection; the answer.
    pub async fn log_in_on_wire(&self, wire: &mut crate::wire::Wire) -> Response {
        let nonce: [u8; 32] = wire.challenge().await.try_into().unwrap();
        let signature = self.local.sign_login(&wire.exporter, &nonce);
        wire.call(Request::DeviceLogin {
            phone: self.phone.clone(),
            device: self.id,
            signature: B64(signature.to_vec()),
        })
        .await
    }

    /// Publishes what `PrekeyStore::maintain` says is due; the answer.
    pub async fn publish_prekeys(&mut self, conn: &Connection) -> Response {
        let prekeys = self
            .prekeys
            .maintain(self.local.key(), now_ms())
            .iter()
            .map(|p| B64(p.to_bytes()))
            .collect();
        conn.ask(Request::PublishPrekeys { prekeys }).await.unwrap()
    }
}

/// What a sender learns from `lookup`: the checked list and bundles.
pub struct Peer {
    pub list: VerifiedDeviceList,
    pub bundles: Vec<VerifiedBundle>,
}

impl Peer {
    pub fn version(&self) -> u64 {
        self.list.version()
    }

    pub fn device(&self, id: u32) -> VerifiedDevice {
        self.bundles
            .iter()
            .find(|b| b.device.device_id.get() == id)
            .unwrap_or_else(|| panic!("no bundle for device {id}"))
            .device
            .clone()
    }
}

/// Checks a `lookup` answer as a client does, against `account_key`.
pub fn check_user(info: &UserInfo, account: &Identity) -> Peer {
    let devices = info.devices.as_ref().expect("the user has devices");
    check_devices(
        &devices.device_list.0,
        &devices.bundles,
        account,
        &info.phone,
    )
}

pub fn check_devices(list: &[u8], bundles: &[B64], account: &Identity, who: &str) -> Peer {
    let list = DeviceList::parse(list)
        .unwrap()
        .verify(&account.public_key(), &phone(who))
        .expect("the list verifies under the account key");
    let bundles = bundles
        .iter()
        .map(|b| {
            PrekeyBundle::parse(&b.0)
                .unwrap()
                .verify(&list, now_ms())
                .expect("the bundle verifies")
        })
        .collect();
    Peer { list, bundles }
}

/// `lookup` of `who` on `conn`, checked.
pub async fn look_up(conn: &Connection, who: &str, account: &Identity) -> Peer {
    match conn
        .ask(Request::Lookup { phone: who.into() })
        .await
        .unwrap()
    {
        Response::User(info) => check_user(&info, account),
        other => panic!("lookup of {who}: {other:?}"),
    }
}

/// Claims one-time prekeys of `devices` of `who`; the parsed results.
pub async fn claim(conn: &Connection, who: &str, devices: &[u32]) -> Vec<ClaimedPrekeys> {
    match conn
        .ask(Request::Claim {
            phone: who.into(),
            devices: devices.to_vec(),
        })
        .await
        .unwrap()
    {
        Response::Claimed { claims } => claims
            .iter()
            .map(|c| ClaimedPrekeys::parse(&c.0).expect("a claim result parses"))
            .collect(),
        other => panic!("claim of {who}'s devices {devices:?}: {other:?}"),
    }
}

/// Starts a session from `own` to device `id` of `peer`, with a claimed
/// one-time prekey when one is given.
pub fn start_session(
    own: &Device,
    peer: &Peer,
    id: u32,
    claim: Option<&ClaimedPrekeys>,
) -> Session {
    let bundle = peer
        .bundles
        .iter()
        .find(|b| b.device.device_id.get() == id)
        .unwrap()
        .clone();
    let bundle = match claim {
        Some(c) => bundle.with_claim(c).unwrap(),
        None => bundle,
    };
    Session::initiate(&own.local, &bundle, now_ms())
}

/// Seals `text` in `session` under `id`.
pub fn seal(own: &Device, session: &mut Session, id: MessageId, text: &str) -> Vec<u8> {
    session
        .seal(&own.local, id, &Content::Text(text.into()), now_ms())
        .unwrap()
}

/// A `device_send` request.
pub fn send_request(
    id: MessageId,
    to: &str,
    device: u32,
    list_version: u64,
    envelope: Vec<u8>,
) -> Request {
    Request::DeviceSend {
        id,
        to: to.into(),
        device,
        list_version,
        envelope: B64(envelope),
    }
}

/// Opens the first message of a session at the recipient device.
pub fn accept(own: &mut Device, sender: &VerifiedDevice, envelope: &[u8]) -> Opened {
    let envelope = Envelope::parse(envelope).expect("the envelope parses");
    let (_, opened) = Session::accept(&own.local, &mut own.prekeys, sender, &envelope, now_ms())
        .expect("the prekey message opens");
    opened
}

/// The text of an opened message.
pub fn text_of(opened: &Opened) -> &str {
    match &opened.content {
        Content::Text(t) => t,
        other => panic!("expected a text, got {other:?}"),
    }
}

/// Requests answered as they come, a refusal included (with what it
/// carries, such as the current devices of `stale_devices`).
pub trait Ask {
    async fn ask(&self, request: Request) -> Result<Response, carrier::client::ClientError>;
}

impl Ask for Connection {
    async fn ask(&self, request: Request) -> Result<Response, carrier::client::ClientError> {
        self.start(request)
            .await?
            .await
            .map_err(|_| carrier::client::ClientError::Disconnected)
    }
}
