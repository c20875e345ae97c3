//! A session between two devices: PQXDH to start it, the Double Ratchet to
//! run it, padded payloads inside signed envelopes (docs/PROTOCOL.md
//! §11–§15). Opening checks, in this order and before any secret state is
//! read: the recipient is this device, the sender is the verified device
//! given, its signature holds; then it decrypts on a copy of the state and
//! keeps the copy only if the message authenticates and parses.

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, AeadInOut, KeyInit, Payload};
use rand::Rng;
use rand::rand_core::UnwrapErr;
use rand::rngs::SysRng;
use zeroize::Zeroizing;

use super::codec::{Put, Reader};
use super::device::VerifiedDevice;
use super::ec::{DeviceKey, EcSecret, POINT_LEN, PublicPoint, SIGNATURE_LEN};
use super::envelope::{Envelope, PrekeyPart, Route, SessionId, assemble};
use super::padding::{Content, pad, unpad};
use super::pqxdh::{self, Party, Prekeys, ResponderSecrets};
use super::prekey_store::PrekeyStore;
use super::prekeys::VerifiedBundle;
use super::ratchet::{Ratchet, aead_key};
use super::{DeviceId, Error};
use crate::domain::{MessageId, PhoneNumber};

/// Encoding version of [`Session::to_bytes`] and [`LocalDevice::to_bytes`].
const STATE_FORMAT: u8 = 1;
const LOGIN_LABEL: &[u8] = b"carrier-v2 device login\0";

/// This device: its account's phone, its id, and its identity key.
pub struct LocalDevice {
    pub phone: PhoneNumber,
    pub device_id: DeviceId,
    key: DeviceKey,
}

impl LocalDevice {
    pub fn new(phone: PhoneNumber, device_id: DeviceId, key: DeviceKey) -> Self {
        Self {
            phone,
            device_id,
            key,
        }
    }

    pub fn key(&self) -> &DeviceKey {
        &self.key
    }

    /// Signs the login transcript of [`device_login_transcript`].
    pub fn sign_login(&self, exporter: &[u8; 32], nonce: &[u8; 32]) -> [u8; SIGNATURE_LEN] {
        let transcript = device_login_transcript(
            exporter,
            nonce,
            &self.phone,
            self.device_id,
            &self.key.public(),
        );
        self.key.sign(&transcript)
    }

    /// Version ‖ phone ‖ device id ‖ 32-byte scalar.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(64));
        out.put_u8(STATE_FORMAT);
        out.put_phone(&self.phone);
        out.put_u32(self.device_id.get());
        out.put(&self.key.to_bytes()[..]);
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let mut r = Reader::new(bytes);
        check_format(&mut r)?;
        let phone = r.phone("device phone")?;
        let device_id = DeviceId::new(r.u32("device id")?)?;
        let key = DeviceKey::from_bytes(r.take(32, "device key")?)?;
        r.finish("device")?;
        Ok(Self::new(phone, device_id, key))
    }
}

impl std::fmt::Debug for LocalDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "LocalDevice({} #{}, {:?})",
            self.phone, self.device_id, self.key
        )
    }
}

/// What a device signs to log in (docs/PROTOCOL.md §16): label ‖
/// TLS exporter ‖ server nonce ‖ phone ‖ device id ‖ device key.
pub fn device_login_transcript(
    exporter: &[u8; 32],
    nonce: &[u8; 32],
    phone: &PhoneNumber,
    device_id: DeviceId,
    device_key: &PublicPoint,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(200);
    out.put(LOGIN_LABEL);
    out.put(exporter);
    out.put(nonce);
    out.put_phone(phone);
    out.put_u32(device_id.get());
    out.put(device_key.as_bytes());
    out
}

/// An opened message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opened {
    pub id: MessageId,
    pub sender: PhoneNumber,
    pub sender_device: DeviceId,
    pub sent_at_ms: u64,
    pub content: Content,
}

/// One Double Ratchet session with one peer device.
pub struct Session {
    hash: [u8; 32],
    own_phone: PhoneNumber,
    own_device: DeviceId,
    peer_phone: PhoneNumber,
    peer_device: DeviceId,
    peer_key: PublicPoint,
    created_at_ms: u64,
    /// The set-up, repeated in every envelope until the peer answers.
    pending: Option<PrekeyPart>,
    ratchet: Ratchet,
}

impl Session {
    /// Starts a session with the device of `bundle` (PQXDH as initiator).
    pub fn initiate(own: &LocalDevice, bundle: &VerifiedBundle, now_ms: u64) -> Self {
        let mut m = Zeroizing::new([0u8; 32]);
        UnwrapErr(SysRng).fill_bytes(m.as_mut());
        Self::initiate_with(own, bundle, &EcSecret::generate(), &m, now_ms)
    }

    /// [`Session::initiate`] with its randomness given, for test vectors.
    pub(crate) fn initiate_with(
        own: &LocalDevice,
        bundle: &VerifiedBundle,
        ephemeral: &EcSecret,
        kem_m: &[u8; 32],
        now_ms: u64,
    ) -> Self {
        let own_key = own.key.public();
        let peer = &bundle.device;
        let prekeys = Prekeys {
            signed: (bundle.signed.0, &bundle.signed.1),
            one_time: bundle.one_time.as_ref().map(|(id, k)| (*id, k)),
            kem: (bundle.kem.0, &bundle.kem.1),
        };
        let (agreement, ciphertext) = pqxdh::initiate(
            &own.key,
            Party {
                phone: &own.phone,
                device_id: own.device_id,
                key: &own_key,
            },
            Party {
                phone: &peer.phone,
                device_id: peer.device_id,
                key: &peer.key,
            },
            &prekeys,
            ephemeral,
            kem_m,
        );
        Self {
            hash: agreement.session_hash,
            own_phone: own.phone.clone(),
            own_device: own.device_id,
            peer_phone: peer.phone.clone(),
            peer_device: peer.device_id,
            peer_key: peer.key.clone(),
            created_at_ms: now_ms,
            pending: Some(PrekeyPart {
                signed_id: bundle.signed.0,
                one_time_id: bundle.one_time.as_ref().map(|(id, _)| *id),
                kem_id: bundle.kem.0,
                base_key: ephemeral.public(),
                ciphertext,
            }),
            ratchet: Ratchet::initiator(agreement.root_key, bundle.signed.1.clone()),
        }
    }

    /// Starts the responder's side from a prekey envelope and opens it. On
    /// success the one-time prekeys it used are deleted from `store`; save
    /// the store and the session in one transaction before acknowledging.
    pub fn accept(
        own: &LocalDevice,
        store: &mut PrekeyStore,
        sender: &VerifiedDevice,
        envelope: &Envelope,
        now_ms: u64,
    ) -> Result<(Self, Opened), Error> {
        check_route(own, sender, envelope)?;
        let part = envelope.prekey.as_ref().ok_or(Error::WrongSession)?;
        let base = part.base_key.as_bytes();
        let keys = store.responder_keys(part.signed_id, part.one_time_id, part.kem_id, base)?;
        let (own_key, signed_pub) = (own.key.public(), keys.signed.public());
        let one_time_pub = keys.one_time.map(EcSecret::public);
        let kem_pub = keys.kem.public();
        let prekeys = Prekeys {
            signed: (part.signed_id, &signed_pub),
            one_time: part.one_time_id.zip(one_time_pub.as_ref()),
            kem: (part.kem_id, &kem_pub),
        };
        let secrets = ResponderSecrets {
            own_key: &own.key,
            signed: keys.signed,
            one_time: keys.one_time,
            kem_shared: keys.kem.decapsulate(&part.ciphertext),
        };
        let agreement = pqxdh::respond(
            &secrets,
            Party {
                phone: &sender.phone,
                device_id: sender.device_id,
                key: &sender.key,
            },
            Party {
                phone: &own.phone,
                device_id: own.device_id,
                key: &own_key,
            },
            &prekeys,
            &part.base_key,
            &part.ciphertext,
        );
        if agreement.session_hash[..16] != envelope.session_id().0 {
            return Err(Error::WrongSession);
        }
        let mut session = Self {
            hash: agreement.session_hash,
            own_phone: own.phone.clone(),
            own_device: own.device_id,
            peer_phone: sender.phone.clone(),
            peer_device: sender.device_id,
            peer_key: sender.key.clone(),
            created_at_ms: now_ms,
            pending: None,
            ratchet: Ratchet::responder(agreement.root_key, keys.signed.clone()),
        };
        let opened = session.decrypt(envelope, now_ms)?;
        store.consume(part.signed_id, part.one_time_id, part.kem_id, base);
        Ok((session, opened))
    }

    /// Opens an envelope of this session from `sender`.
    pub fn open(
        &mut self,
        own: &LocalDevice,
        sender: &VerifiedDevice,
        envelope: &Envelope,
        now_ms: u64,
    ) -> Result<Opened, Error> {
        check_route(own, sender, envelope)?;
        let same_peer = (&sender.phone, sender.device_id, &sender.key)
            == (&self.peer_phone, self.peer_device, &self.peer_key);
        if !same_peer || envelope.session_id() != self.id() || own.device_id != self.own_device {
            return Err(Error::WrongSession);
        }
        self.decrypt(envelope, now_ms)
    }

    fn decrypt(&mut self, envelope: &Envelope, now_ms: u64) -> Result<Opened, Error> {
        let aad = envelope.associated_data(&self.hash);
        let (content, sent_at_ms) = self.ratchet.receive(&envelope.header, now_ms, |mk| {
            let (key, nonce) = aead_key(mk);
            let mut buf = Zeroizing::new(envelope.ciphertext().to_vec());
            Aes256Gcm::new((&*key).into())
                .decrypt_in_place((&nonce).into(), &aad, &mut *buf)
                .map_err(|_| Error::Decrypt)?;
            unpad(&buf)
        })?;
        self.pending = None;
        Ok(Opened {
            id: envelope.id(),
            sender: self.peer_phone.clone(),
            sender_device: self.peer_device,
            sent_at_ms,
            content,
        })
    }

    /// Seals `content` for the peer device. The state moves on: save it
    /// before the envelope leaves, so a chain key is never used twice.
    pub fn seal(
        &mut self,
        own: &LocalDevice,
        id: MessageId,
        content: &Content,
        sent_at_ms: u64,
    ) -> Result<Vec<u8>, Error> {
        self.seal_with(own, id, content, sent_at_ms, EcSecret::generate)
    }

    /// [`Session::seal`] with the next ratchet key given, for test vectors.
    pub(crate) fn seal_with(
        &mut self,
        own: &LocalDevice,
        id: MessageId,
        content: &Content,
        sent_at_ms: u64,
        fresh: impl FnOnce() -> EcSecret,
    ) -> Result<Vec<u8>, Error> {
        if (own.device_id, &own.phone) != (self.own_device, &self.own_phone) {
            return Err(Error::WrongSession);
        }
        let plaintext = pad(content, sent_at_ms)?;
        let (header, mk) = self.ratchet.send(fresh)?;
        let route = Route {
            id,
            session: self.id(),
            sender: self.own_phone.clone(),
            sender_device: self.own_device,
            recipient: self.peer_phone.clone(),
            recipient_device: self.peer_device,
        };
        let encrypt = |aad: &[u8]| {
            let (key, nonce) = aead_key(&mk);
            Aes256Gcm::new((&*key).into())
                .encrypt(
                    (&nonce).into(),
                    Payload {
                        msg: &plaintext,
                        aad,
                    },
                )
                .map_err(|_| Error::TooLong)
        };
        assemble(
            &route,
            self.pending.as_ref(),
            &header,
            &self.hash,
            plaintext.len(),
            encrypt,
            &own.key,
        )
    }

    pub fn id(&self) -> SessionId {
        let mut id = [0u8; 16];
        id.copy_from_slice(&self.hash[..16]);
        SessionId(id)
    }

    /// The peer device's account, id and key.
    pub fn peer(&self) -> (&PhoneNumber, DeviceId, &PublicPoint) {
        (&self.peer_phone, self.peer_device, &self.peer_key)
    }

    /// True until the peer's first message arrives: envelopes still carry
    /// the set-up (kind 1).
    pub fn is_pending(&self) -> bool {
        self.pending.is_some()
    }

    pub fn created_at_ms(&self) -> u64 {
        self.created_at_ms
    }

    /// Versioned encoding of the whole state (docs/PROTOCOL.md §15).
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(1400 + self.ratchet.encoded_len()));
        out.put_u8(STATE_FORMAT);
        out.put(&self.hash);
        out.put_phone(&self.own_phone);
        out.put_u32(self.own_device.get());
        out.put_phone(&self.peer_phone);
        out.put_u32(self.peer_device.get());
        out.put(self.peer_key.as_bytes());
        out.put_u64(self.created_at_ms);
        out.put_u8(u8::from(self.pending.is_some()));
        if let Some(p) = &self.pending {
            p.encode(&mut out);
        }
        self.ratchet.encode(&mut out);
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let mut r = Reader::new(bytes);
        check_format(&mut r)?;
        let hash = r.array("session hash")?;
        let own_phone = r.phone("own phone")?;
        let own_device = DeviceId::new(r.u32("own device")?)?;
        let peer_phone = r.phone("peer phone")?;
        let peer_device = DeviceId::new(r.u32("peer device")?)?;
        let peer_key = PublicPoint::from_bytes(r.take(POINT_LEN, "peer key")?)?;
        let created_at_ms = r.u64("session time")?;
        let pending = match r.u8("pending flag")? {
            0 => None,
            1 => Some(PrekeyPart::decode(&mut r)?),
            _ => return Err(Error::Malformed("pending flag")),
        };
        let ratchet = Ratchet::decode(&mut r)?;
        r.finish("session")?;
        Ok(Self {
            hash,
            own_phone,
            own_device,
            peer_phone,
            peer_device,
            peer_key,
            created_at_ms,
            pending,
            ratchet,
        })
    }

    #[cfg(test)]
    pub(crate) fn skipped_count(&self) -> usize {
        self.ratchet.skipped_count()
    }
}

impl Clone for Session {
    fn clone(&self) -> Self {
        Self::from_bytes(&self.to_bytes()).expect("a session decodes its own encoding")
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id())
            .field("peer", &(&self.peer_phone, self.peer_device))
            .field("pending", &self.pending.is_some())
            .finish_non_exhaustive()
    }
}

/// The envelope is for this device, from the verified sender device, and
/// that device signed it. Runs before any secret state is touched.
fn check_route(
    own: &LocalDevice,
    sender: &VerifiedDevice,
    envelope: &Envelope,
) -> Result<(), Error> {
    if envelope.recipient() != (&own.phone, own.device_id) {
        return Err(Error::WrongRecipient);
    }
    if envelope.sender() != (&sender.phone, sender.device_id) {
        return Err(Error::WrongSession);
    }
    envelope.verify(&sender.key)
}

fn check_format(r: &mut Reader<'_>) -> Result<(), Error> {
    match r.u8("state format")? {
        STATE_FORMAT => Ok(()),
        other => Err(Error::StateVersion(other)),
    }
}
