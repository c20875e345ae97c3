//! The bench's users: valid phone numbers, registration through the server's
//! one-time-code file, and login. Every user is a protocol v2 account with
//! one device (id 1): registering publishes its signed device list and the
//! device's signed and last-resort ML-KEM prekeys, and logging in is the
//! device's `device_login`. Everything goes through the client library's
//! [`Connection`] and the same signatures the `carrier` client makes; no
//! home directory is kept, so thousands of users cost no local storage.
//!
//! All the bench's devices share one device key and one set of prekeys,
//! made once per process: the server neither knows nor cares (each user's
//! own account key certifies it), and making and publishing 140 prekeys
//! per user would otherwise dominate registering thousands of them. No
//! one-time prekeys are published, so every session starts on the
//! last-resort keys, which costs the server nothing more. The private half
//! stays in the process ([`prekey_store`]), so a bench recipient can
//! accept a session as its real device would.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;

use crate::client::Connection;
use crate::crypto::v2::{
    DeviceCertificate, DeviceId, DeviceKey, DeviceList, LocalDevice, PrekeyBundle, PrekeyKind,
    PrekeyStore, PublicPrekey, VerifiedBundle, VerifiedDevice,
};
use crate::crypto::{Identity, PublicKey, Purpose};
use crate::domain::PhoneNumber;
use crate::protocol::{B64, KeyType, Request, Response};
use crate::tls::Pin;

/// How long to wait for a code line to appear in the file.
const CODE_TIMEOUT: Duration = Duration::from_secs(20);

/// A registered user whose private keys the bench holds: its account key
/// and its devices (one, except in W7).
#[derive(Clone)]
pub struct User {
    pub phone: PhoneNumber,
    pub identity: Arc<Identity>,
    pub public: PublicKey,
    /// Device 1, which logs in and sends.
    pub device: Arc<UserDevice>,
    /// Every device in id order, device 1 first.
    pub devices: Arc<Vec<Arc<UserDevice>>>,
}

/// A user's device: its own state, what registering publishes, the
/// bundle a sender checks after `lookup`, and the device as its contacts
/// verify it (to open what it seals).
pub struct UserDevice {
    pub id: u32,
    pub local: LocalDevice,
    pub list: DeviceList,
    pub certificate: DeviceCertificate,
    pub bundle: VerifiedBundle,
    pub seen: VerifiedDevice,
}

/// The device id every bench user's one device has.
pub const DEVICE: u32 = 1;
/// The version of every bench user's device list.
pub const LIST_VERSION: u64 = 1;

/// The device key and prekeys all the bench's devices of one device id
/// share (a device list names each key once, so device 2 has another key
/// than device 1).
struct SharedDevice {
    key: DeviceKey,
    signed: PublicPrekey,
    kem: PublicPrekey,
    store: PrekeyStore,
}

/// The most devices a bench user has (W7's recipients).
pub const MAX_DEVICES: u32 = 3;

fn shared_device(device: u32) -> &'static SharedDevice {
    static SHARED: [std::sync::OnceLock<SharedDevice>; MAX_DEVICES as usize] =
        [const { std::sync::OnceLock::new() }; MAX_DEVICES as usize];
    let index = device.clamp(1, MAX_DEVICES) as usize - 1;
    SHARED[index].get_or_init(|| {
        let key = DeviceKey::generate();
        let mut store = PrekeyStore::new();
        let published = store.maintain(&key, now_ms());
        let of_kind = |kind| {
            published
                .iter()
                .find(|p| p.kind == kind)
                .expect("a new store publishes one of each")
                .clone()
        };
        SharedDevice {
            signed: of_kind(PrekeyKind::Signed),
            kem: of_kind(PrekeyKind::KemLastResort),
            key,
            store,
        }
    })
}

/// The private prekeys of every bench device with id `device`, as just
/// published. Each session a bench recipient accepts takes a copy of its
/// own: a real device keeps its own list of the base keys it has seen,
/// and one list shared by thousands of devices would fill up.
pub fn prekey_store(device: u32) -> PrekeyStore {
    shared_device(device).store.clone()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

impl User {
    pub fn generate(phone: PhoneNumber, key_type: KeyType) -> Self {
        Self::with_devices(phone, key_type, 1)
    }

    /// A user with devices 1 to `devices` (at most [`MAX_DEVICES`]), all in
    /// one signed list.
    pub fn with_devices(phone: PhoneNumber, key_type: KeyType, devices: u32) -> Self {
        let identity = Identity::generate(key_type);
        let public = identity.public_key();
        let devices: Vec<Arc<UserDevice>> = UserDevice::certify(&identity, &phone, devices)
            .into_iter()
            .map(Arc::new)
            .collect();
        Self {
            phone,
            identity: Arc::new(identity),
            public,
            device: devices[0].clone(),
            devices: Arc::new(devices),
        }
    }
}

impl UserDevice {
    /// Devices 1 to `n` of `phone`, certified and listed by `account`.
    fn certify(account: &Identity, phone: &PhoneNumber, n: u32) -> Vec<Self> {
        let now = now_ms();
        let ids: Vec<u32> = (1..=n.clamp(1, MAX_DEVICES)).collect();
        let entries = ids
            .iter()
            .map(|&d| {
                (
                    DeviceId::new(d).expect("not zero"),
                    shared_device(d).key.public(),
                )
            })
            .collect();
        let list = DeviceList::issue(account, phone, LIST_VERSION, now, entries)
            .expect("distinct keys fit a list");
        let verified = list
            .clone()
            .verify(&account.public_key(), phone)
            .expect("the list was just signed");
        ids.into_iter()
            .map(|d| {
                let shared = shared_device(d);
                let id = DeviceId::new(d).expect("not zero");
                let certificate = DeviceCertificate::issue(
                    account,
                    phone,
                    id,
                    &shared.key.public(),
                    "bench",
                    now,
                )
                .expect("a bench phone fits a certificate");
                let bundle = PrekeyBundle {
                    certificate: certificate.clone(),
                    signed_prekey: shared.signed.clone(),
                    kem_prekey: shared.kem.clone(),
                }
                .verify(&verified, now)
                .expect("the bundle was just signed");
                let seen = verified
                    .certify(&certificate)
                    .expect("the certificate was just issued");
                Self {
                    id: d,
                    local: LocalDevice::new(phone.clone(), id, shared.key.clone()),
                    list: list.clone(),
                    certificate,
                    bundle,
                    seen,
                }
            })
            .collect()
    }
}

/// Hands out distinct phone numbers that pass the numbering-plan check:
/// +1 202 2xx xxxx upwards (Washington DC, ordinary exchanges).
#[derive(Default)]
pub struct PhoneGen {
    next: u64,
}

impl PhoneGen {
    pub fn new(start: u64) -> Self {
        Self { next: start }
    }

    pub fn take(&mut self, n: usize) -> Vec<PhoneNumber> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let candidate = format!("+1202{:07}", 2_000_000 + self.next);
            self.next += 1;
            assert!(self.next < 8_000_000, "ran out of bench phone numbers");
            if let Ok(p) = PhoneNumber::parse(&candidate) {
                out.push(p);
            }
        }
        out
    }
}

/// Where a server is and how to reach it.
#[derive(Clone)]
pub struct Endpoint {
    pub addr: String,
    pub pin: Pin,
    pub otp: Arc<OtpReader>,
}

/// Reads `OTP for <phone>: <code>` lines as the server appends them.
pub struct OtpReader {
    path: PathBuf,
    state: tokio::sync::Mutex<OtpState>,
}

#[derive(Default)]
struct OtpState {
    offset: u64,
    partial: String,
    codes: HashMap<String, String>,
}

impl OtpReader {
    /// `skip_existing`: ignore lines already in the file (a running server
    /// may have written codes for the same numbers before).
    pub fn new(path: &Path, skip_existing: bool) -> Self {
        let offset = if skip_existing {
            std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
        } else {
            0
        };
        Self {
            path: path.to_owned(),
            state: tokio::sync::Mutex::new(OtpState {
                offset,
                ..Default::default()
            }),
        }
    }

    /// The newest code sent to `phone`, waiting for it to appear.
    pub async fn code_for(&self, phone: &PhoneNumber) -> Result<String> {
        let deadline = Instant::now() + CODE_TIMEOUT;
        loop {
            {
                let mut s = self.state.lock().await;
                s.read_new(&self.path)?;
                if let Some(code) = s.codes.remove(phone.as_str()) {
                    return Ok(code);
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "no one-time code for {phone} appeared in {} within {} s (is the server's [otp] delivery \"file\" with this file?)",
                    self.path.display(),
                    CODE_TIMEOUT.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

impl OtpState {
    fn read_new(&mut self, path: &Path) -> Result<()> {
        use std::io::{Read, Seek, SeekFrom};
        let mut file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        file.seek(SeekFrom::Start(self.offset))?;
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)?;
        self.offset += buf.len() as u64;
        self.partial.push_str(&String::from_utf8_lossy(&buf));
        let Some(end) = self.partial.rfind('\n') else {
            return Ok(());
        };
        let complete: String = self.partial.drain(..=end).collect();
        for line in complete.lines() {
            if let Some((phone, code)) = line
                .strip_prefix("OTP for ")
                .and_then(|l| l.split_once(": "))
            {
                self.codes
                    .insert(phone.trim().to_owned(), code.trim().to_owned());
            }
        }
        Ok(())
    }
}

/// Registers `user`, publishes its device list, and returns a connection
/// logged in as its device with the device's prekeys published.
pub async fn register(ep: &Endpoint, user: &User) -> Result<Connection> {
    let conn = Connection::connect(&ep.addr, ep.pin).await?;
    conn.call(Request::Register {
        phone: user.phone.to_string(),
        key_type: user.identity.key_type(),
        public_key: B64(user.public.to_spki_der()),
    })
    .await
    .with_context(|| format!("register {}", user.phone))?;
    let code = ep.otp.code_for(&user.phone).await?;
    let signature = conn
        .prove(&user.identity, Purpose::Register, &user.phone)
        .await?;
    match conn
        .call(Request::Verify {
            phone: user.phone.to_string(),
            code: code.into(),
            signature: B64(signature),
        })
        .await
        .with_context(|| format!("verify {}", user.phone))?
    {
        Response::Registered { .. } => {}
        other => bail!("verify {}: unexpected answer {other:?}", user.phone),
    }
    let device = &user.device;
    conn.call(Request::PublishDevices {
        list: B64(device.list.to_bytes()),
        certificates: user
            .devices
            .iter()
            .map(|d| B64(d.certificate.to_bytes()))
            .collect(),
    })
    .await
    .with_context(|| format!("publish the devices of {}", user.phone))?;
    conn.close().await;
    let conn = login(ep, user).await?;
    let shared = shared_device(DEVICE);
    conn.call(Request::PublishPrekeys {
        prekeys: vec![B64(shared.signed.to_bytes()), B64(shared.kem.to_bytes())],
    })
    .await
    .with_context(|| format!("publish the prekeys of {}", user.phone))?;
    Ok(conn)
}

/// Connects and logs in as `user`'s device 1.
pub async fn login(ep: &Endpoint, user: &User) -> Result<Connection> {
    login_as(ep, user, &user.device).await
}

/// Connects and logs in as `device` of `user`.
pub async fn login_as(ep: &Endpoint, user: &User, device: &UserDevice) -> Result<Connection> {
    let conn = Connection::connect(&ep.addr, ep.pin).await?;
    let nonce = match conn.call(Request::Challenge).await? {
        Response::Challenge { nonce } => nonce.0,
        other => bail!("challenge: unexpected answer {other:?}"),
    };
    let nonce: [u8; 32] = nonce
        .try_into()
        .map_err(|_| anyhow::anyhow!("the challenge is not 32 bytes"))?;
    let signature = device.local.sign_login(conn.exporter(), &nonce);
    match conn
        .call(Request::DeviceLogin {
            phone: user.phone.to_string(),
            device: device.id,
            signature: B64(signature.to_vec()),
        })
        .await
        .with_context(|| format!("login {}", user.phone))?
    {
        Response::LoggedIn { .. } => Ok(conn),
        other => bail!("login {}: unexpected answer {other:?}", user.phone),
    }
}

/// Makes P-256 users with `devices` devices each for `phones` and
/// registers them, `concurrency` at a time; their connections are closed.
/// Reports progress on stderr.
pub async fn register_many(
    ep: &Endpoint,
    phones: Vec<PhoneNumber>,
    concurrency: usize,
    devices: u32,
) -> Result<Vec<User>> {
    let total = phones.len();
    let started = Instant::now();
    let mut done = 0usize;
    let mut out = Vec::with_capacity(total);
    let mut stream = futures::stream::iter(phones.into_iter().map(|phone| {
        let ep = ep.clone();
        async move {
            let user = tokio::task::spawn_blocking(move || {
                User::with_devices(phone, KeyType::P256, devices)
            })
            .await?;
            let conn = register(&ep, &user).await?;
            conn.close().await;
            Ok::<_, anyhow::Error>(user)
        }
    }))
    .buffered(concurrency.max(1));
    while let Some(user) = stream.next().await {
        out.push(user?);
        done += 1;
        if total >= 1000 && done.is_multiple_of(1000) {
            eprintln!(
                "  registered {done}/{total} users ({:.0}/s)",
                done as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    Ok(out)
}

/// Logs every user in (in order), `concurrency` at a time.
pub async fn login_many(
    ep: &Endpoint,
    users: &[User],
    concurrency: usize,
) -> Result<Vec<Connection>> {
    let total = users.len();
    let started = Instant::now();
    let mut out = Vec::with_capacity(total);
    let mut stream = futures::stream::iter(users.iter().cloned().map(|user| {
        let ep = ep.clone();
        async move { login(&ep, &user).await }
    }))
    .buffered(concurrency.max(1));
    while let Some(conn) = stream.next().await {
        out.push(conn?);
        if total >= 2000 && out.len().is_multiple_of(2000) {
            eprintln!(
                "  logged in {}/{total} connections ({:.0}/s)",
                out.len(),
                out.len() as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_are_valid_and_distinct() {
        let mut g = PhoneGen::new(0);
        let a = g.take(50);
        let b = g.take(50);
        let all: std::collections::HashSet<_> = a.iter().chain(&b).collect();
        assert_eq!(all.len(), 100);
    }

    #[test]
    fn reads_code_lines_incrementally() {
        let dir = std::env::temp_dir().join(format!("carrier-bench-otp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("codes.txt");
        std::fs::write(&path, "OTP for +12022000000: 111111\nOTP for +1202").unwrap();
        let mut s = OtpState::default();
        s.read_new(&path).unwrap();
        assert_eq!(
            s.codes.get("+12022000000").map(String::as_str),
            Some("111111")
        );
        std::fs::write(
            &path,
            "OTP for +12022000000: 111111\nOTP for +12022000001: 222222\n",
        )
        .unwrap();
        s.read_new(&path).unwrap();
        assert_eq!(
            s.codes.get("+12022000001").map(String::as_str),
            Some("222222")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
