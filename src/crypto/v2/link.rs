//! Link codes: how a new device joins an account through a server that
//! must not be able to join in its place (docs/PROTOCOL.md §16).
//!
//! The code is 128 random bits shown to the user. The server only learns a
//! rendezvous id derived from it; the request (the new device's key and
//! name) and the response (its certificate, the new device list, and the
//! account key if it is handed over) are sealed with AES-256-GCM under a key
//! derived from the code, so the server can neither read them nor swap the
//! device key, and it never holds the account key that signs certificates.

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use hkdf::Hkdf;
use rand::Rng;
use rand::rand_core::UnwrapErr;
use rand::rngs::SysRng;
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::Error;
use super::codec::{Put, Reader};
use super::device::{DeviceCertificate, DeviceList, MAX_DEVICE_NAME};
use super::ec::{DeviceKey, POINT_LEN, PublicPoint, SIGNATURE_LEN, Secret32};
use crate::domain::PhoneNumber;

const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
const CODE_CHARS: usize = 26;
const REQUEST_LABEL: &[u8] = b"carrier-v2 link request\0";
const RESPONSE_LABEL: &[u8] = b"carrier-v2 link response\0";
const NONCE_LEN: usize = 12;
/// Bounds the parts of a response (an RSA-4096 key's PKCS#8 is ~2.4 KB).
const MAX_PART: usize = 8192;

/// A one-use link code. Its secret never appears in `Debug`.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct LinkCode([u8; 16]);

impl LinkCode {
    pub fn generate() -> Self {
        let mut code = [0u8; 16];
        UnwrapErr(SysRng).fill_bytes(&mut code);
        Self(code)
    }

    /// Reads a code as typed: case, spaces and dashes do not matter.
    pub fn parse(typed: &str) -> Result<Self, Error> {
        let bad = Error::Malformed("link code (26 letters and digits 2-7)");
        let chars: Zeroizing<Vec<u8>> = Zeroizing::new(
            typed
                .bytes()
                .filter(|b| !matches!(b, b'-' | b' '))
                .map(|b| b.to_ascii_lowercase())
                .collect(),
        );
        if chars.len() != CODE_CHARS {
            return Err(bad);
        }
        let mut bits: u128 = 0;
        for (i, c) in chars.iter().enumerate() {
            let v = ALPHABET.iter().position(|a| a == c).ok_or(bad.clone())? as u128;
            if i == CODE_CHARS - 1 {
                if v & 0b11 != 0 {
                    return Err(bad);
                }
                bits = (bits << 3) | (v >> 2);
            } else {
                bits = (bits << 5) | v;
            }
        }
        Ok(Self(bits.to_be_bytes()))
    }

    /// The code for the user: 26 characters in groups of five.
    pub fn to_display(&self) -> Zeroizing<String> {
        let bits = u128::from_be_bytes(self.0);
        let mut out = Zeroizing::new(String::with_capacity(32));
        for i in 0..CODE_CHARS {
            let v = if i == CODE_CHARS - 1 {
                (bits & 0b111) << 2
            } else {
                (bits >> (123 - 5 * i)) & 0b11111
            };
            if i > 0 && i % 5 == 0 && i < 25 {
                out.push('-');
            }
            out.push(ALPHABET[v as usize] as char);
        }
        out
    }

    /// What the server is given to pair the two devices.
    pub fn rendezvous(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        self.expand(b"carrier-v2 link rendezvous", &mut out);
        out
    }

    fn key(&self) -> Secret32 {
        let mut key = Zeroizing::new([0u8; 32]);
        self.expand(b"carrier-v2 link key", key.as_mut());
        key
    }

    fn expand(&self, info: &[u8], out: &mut [u8]) {
        Hkdf::<Sha256>::new(Some(&[0u8; 32]), &self.0)
            .expand(info, out)
            .expect("16 and 32 bytes are valid HKDF-SHA256 lengths");
    }

    fn aad(&self, label: &[u8], phone: &PhoneNumber) -> Vec<u8> {
        let mut aad = label.to_vec();
        aad.put(&self.rendezvous());
        aad.put_phone(phone);
        aad
    }

    fn seal(&self, label: &[u8], phone: &PhoneNumber, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        UnwrapErr(SysRng).fill_bytes(&mut nonce);
        let aad = self.aad(label, phone);
        let sealed = Aes256Gcm::new((&*self.key()).into())
            .encrypt(
                (&nonce).into(),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .expect("a link message fits AES-GCM");
        [&nonce[..], &sealed].concat()
    }

    fn open(
        &self,
        label: &[u8],
        phone: &PhoneNumber,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, Error> {
        if sealed.len() < NONCE_LEN {
            return Err(Error::Decrypt);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().expect("split at the nonce length");
        let aad = self.aad(label, phone);
        Aes256Gcm::new((&*self.key()).into())
            .decrypt(
                (&nonce).into(),
                Payload {
                    msg: body,
                    aad: &aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| Error::Decrypt)
    }

    /// The new device's request: its name and key, signed by that key.
    pub fn seal_request(
        &self,
        phone: &PhoneNumber,
        name: &str,
        device: &DeviceKey,
    ) -> Result<Vec<u8>, Error> {
        if name.is_empty() || name.len() > MAX_DEVICE_NAME {
            return Err(Error::Malformed("device name"));
        }
        let mut body = Vec::new();
        body.put_short(name.as_bytes());
        body.put(device.public().as_bytes());
        let signature = device.sign(&[REQUEST_LABEL, &self.rendezvous(), &body].concat());
        body.put(&signature);
        Ok(self.seal(REQUEST_LABEL, phone, &body))
    }

    /// Opens a request on the existing device: the name and the key, whose
    /// signature proves the requester holds it.
    pub fn open_request(
        &self,
        phone: &PhoneNumber,
        sealed: &[u8],
    ) -> Result<(String, PublicPoint), Error> {
        let body = self.open(REQUEST_LABEL, phone, sealed)?;
        let mut r = Reader::new(&body);
        let name = std::str::from_utf8(r.short("link device name")?)
            .map_err(|_| Error::Malformed("link device name"))?
            .to_owned();
        let key = PublicPoint::from_bytes(r.take(POINT_LEN, "link device key")?)?;
        let signed_len = r.position();
        let signature = r.take(SIGNATURE_LEN, "link signature")?;
        r.finish("link request")?;
        key.verify(
            &[REQUEST_LABEL, &self.rendezvous(), &body[..signed_len]].concat(),
            signature,
        )?;
        Ok((name, key))
    }

    /// The existing device's answer: the new certificate and list, and the
    /// account key's PKCS#8 DER when the account key is handed over.
    pub fn seal_response(
        &self,
        phone: &PhoneNumber,
        certificate: &DeviceCertificate,
        list: &DeviceList,
        account_pkcs8: Option<&[u8]>,
    ) -> Vec<u8> {
        let mut body = Zeroizing::new(Vec::new());
        body.put_medium(&certificate.to_bytes());
        body.put_medium(&list.to_bytes());
        body.put_medium(account_pkcs8.unwrap_or_default());
        self.seal(RESPONSE_LABEL, phone, &body)
    }

    /// Opens the answer on the new device. The caller checks the list and
    /// certificate against the account key (§10.1) before using them.
    pub fn open_response(&self, phone: &PhoneNumber, sealed: &[u8]) -> Result<LinkResponse, Error> {
        let body = self.open(RESPONSE_LABEL, phone, sealed)?;
        let mut r = Reader::new(&body);
        let certificate = DeviceCertificate::parse(r.medium(MAX_PART, "link certificate")?)?;
        let list = DeviceList::parse(r.medium(MAX_PART, "link device list")?)?;
        let key = r.medium(MAX_PART, "link account key")?;
        let account_pkcs8 = (!key.is_empty()).then(|| Zeroizing::new(key.to_vec()));
        r.finish("link response")?;
        Ok(LinkResponse {
            certificate,
            list,
            account_pkcs8,
        })
    }
}

impl std::fmt::Debug for LinkCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkCode(…)")
    }
}

/// What the new device receives.
pub struct LinkResponse {
    pub certificate: DeviceCertificate,
    pub list: DeviceList,
    /// The account key as unencrypted PKCS#8 DER, if it was handed over.
    pub account_pkcs8: Option<Zeroizing<Vec<u8>>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Identity;
    use crate::crypto::v2::DeviceId;
    use crate::protocol::KeyType;

    #[test]
    fn code_text_round_trips_and_is_strict() {
        for _ in 0..50 {
            let code = LinkCode::generate();
            let shown = code.to_display();
            assert_eq!(shown.len(), 26 + 4);
            assert_eq!(LinkCode::parse(&shown).unwrap().0, code.0);
            assert_eq!(
                LinkCode::parse(&shown.to_uppercase().replace('-', " "))
                    .unwrap()
                    .0,
                code.0
            );
        }
        let shown = LinkCode([0xff; 16]).to_display();
        assert_eq!(&*shown, "77777-77777-77777-77777-777774");
        assert!(
            LinkCode::parse("77777-77777-77777-77777-77777z").is_err(),
            "trailing bits"
        );
        // The example the help and error texts show is a code that parses.
        assert!(LinkCode::parse("abcde-fghij-klmno-pqrst-uvwxya").is_ok());
        assert!(LinkCode::parse("abc").is_err());
        assert!(LinkCode::parse("00000-00000-00000-00000-000000").is_err());
        assert_eq!(format!("{:?}", LinkCode([0xab; 16])), "LinkCode(…)");
    }

    #[test]
    fn a_device_links_and_the_server_can_neither_read_nor_swap() {
        let phone = PhoneNumber::from_canonical("+12025550101").unwrap();
        let code = LinkCode::generate();
        let new_device = DeviceKey::generate();
        let request = code.seal_request(&phone, "tablet", &new_device).unwrap();
        let (name, key) = code.open_request(&phone, &request).unwrap();
        assert_eq!((name.as_str(), &key), ("tablet", &new_device.public()));

        let other = LinkCode::generate();
        assert_eq!(
            other.open_request(&phone, &request).err(),
            Some(Error::Decrypt)
        );
        let elsewhere = PhoneNumber::from_canonical("+12025550102").unwrap();
        assert!(code.open_request(&elsewhere, &request).is_err());
        let swapped = other
            .seal_request(&phone, "tablet", &DeviceKey::generate())
            .unwrap();
        assert!(
            code.open_request(&phone, &swapped).is_err(),
            "the server cannot substitute a key"
        );
        for i in (0..request.len()).step_by(11) {
            let mut t = request.clone();
            t[i] ^= 1;
            assert!(code.open_request(&phone, &t).is_err());
        }

        let account = Identity::generate(KeyType::P256);
        let id = DeviceId::new(2).unwrap();
        let cert = DeviceCertificate::issue(&account, &phone, id, &key, &name, 1).unwrap();
        let list = DeviceList::issue(&account, &phone, 2, 1, vec![(id, key)]).unwrap();
        let pkcs8 = account.pkcs8_der();
        let response = code.seal_response(&phone, &cert, &list, Some(&pkcs8));
        let got = code.open_response(&phone, &response).unwrap();
        assert_eq!((got.certificate, got.list), (cert, list));
        assert_eq!(
            got.account_pkcs8.as_deref().map(Vec::as_slice),
            Some(&pkcs8[..])
        );
        assert!(
            code.open_request(&phone, &response).is_err(),
            "directions differ"
        );
    }
}
