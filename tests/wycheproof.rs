//! Project Wycheproof's vectors run through Carrier's own code: key parsing
//! (`PublicKey::from_spki_der`, `Identity::from_pkcs8_pem`), signature
//! checking (`PublicKey::verify`) and the envelope's primitive steps
//! (`crypto::primitives`), not only the crates underneath.
//!
//! Every `invalid` vector must be refused and every `valid` one accepted,
//! except where Carrier deliberately refuses more than the primitive allows;
//! each such deviation is named and counted. `acceptable` vectors are counted
//! by outcome. Vectors for parameters Carrier never uses (other nonce or tag
//! sizes, OAEP labels) are counted as not applicable. The counts are printed,
//! which is why this test has its own `main` rather than the test harness.

use std::collections::BTreeMap;
use std::fmt::Debug;

use carrier::crypto::primitives::{
    AES_KEY_LEN, aes_gcm_open, aes_gcm_seal, hkdf_sha256, p256_ecdh, p256_ecdh_key_block,
    rsa_oaep_unwrap,
};
use carrier::crypto::{Identity, PublicKey};
use carrier::protocol::envelope::{NONCE_LEN, TAG_LEN};
use wycheproof::TestResult;

/// (n − 1)/2 for P-256: an `s` above it is high.
const P256_HALF_ORDER: [u8; 32] = [
    0x7f, 0xff, 0xff, 0xff, 0x80, 0x00, 0x00, 0x00, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xde, 0x73, 0x7d, 0x56, 0xd3, 0x8b, 0xcf, 0x42, 0x79, 0xdc, 0xe5, 0x61, 0x7e, 0x31, 0x92, 0xa8,
];

/// What Carrier did with one vector.
enum Outcome {
    Accepted,
    Refused,
    /// Accepted, but the output differs from the vector's.
    WrongOutput,
    /// The vector's parameters are outside what Carrier uses.
    NotApplicable(&'static str),
}

/// Counts for one vector file.
#[derive(Default)]
struct Tally {
    valid_accepted: usize,
    invalid_refused: usize,
    acceptable_accepted: usize,
    acceptable_refused: usize,
    deviations: BTreeMap<&'static str, usize>,
    acceptable_flags: BTreeMap<String, usize>,
    not_applicable: BTreeMap<&'static str, usize>,
    failures: Vec<String>,
}

impl Tally {
    /// Records one vector. `deviation` names why Carrier refuses a vector
    /// the primitive accepts, when it deliberately does.
    fn record(
        &mut self,
        id: usize,
        expected: &TestResult,
        outcome: Outcome,
        flags: &[impl Debug],
        deviation: Option<&'static str>,
    ) {
        match (expected, outcome) {
            (_, Outcome::NotApplicable(why)) => *self.not_applicable.entry(why).or_default() += 1,
            (_, Outcome::WrongOutput) => self.failures.push(format!("tcId {id}: wrong output")),
            (TestResult::Valid, Outcome::Accepted) => self.valid_accepted += 1,
            (TestResult::Valid, Outcome::Refused) => match deviation {
                Some(why) => *self.deviations.entry(why).or_default() += 1,
                None => self
                    .failures
                    .push(format!("tcId {id}: valid, refused ({flags:?})")),
            },
            (TestResult::Invalid, Outcome::Refused) => self.invalid_refused += 1,
            (TestResult::Invalid, Outcome::Accepted) => self
                .failures
                .push(format!("tcId {id}: invalid, accepted ({flags:?})")),
            (TestResult::Acceptable, outcome) => {
                let verdict = match outcome {
                    Outcome::Accepted => {
                        self.acceptable_accepted += 1;
                        "accepted"
                    }
                    _ => {
                        self.acceptable_refused += 1;
                        "refused"
                    }
                };
                *self
                    .acceptable_flags
                    .entry(format!("{flags:?} {verdict}"))
                    .or_default() += 1;
            }
        }
    }

    fn passed(&self) -> usize {
        self.valid_accepted
            + self.invalid_refused
            + self.acceptable_accepted
            + self.acceptable_refused
            + self.deviations.values().sum::<usize>()
    }

    fn skipped(&self) -> usize {
        self.not_applicable.values().sum()
    }

    fn print(&self, name: &str, through: &str) {
        println!(
            "{name} (through {through}): {} valid accepted, {} invalid refused, \
             {} acceptable ({} accepted, {} refused), {} failed",
            self.valid_accepted,
            self.invalid_refused,
            self.acceptable_accepted + self.acceptable_refused,
            self.acceptable_accepted,
            self.acceptable_refused,
            self.failures.len(),
        );
        for (why, n) in &self.deviations {
            println!("    deliberate deviation: {n} valid refused: {why}");
        }
        for (flags, n) in &self.acceptable_flags {
            println!("    acceptable {flags}: {n}");
        }
        for (why, n) in &self.not_applicable {
            println!("    not applicable: {n}: {why}");
        }
        for failure in &self.failures {
            println!("    FAILED {failure}");
        }
    }
}

fn ok<T, E>(r: Result<T, E>) -> Outcome {
    if r.is_ok() {
        Outcome::Accepted
    } else {
        Outcome::Refused
    }
}

/// Accepted with the expected output, or accepted wrongly.
fn checked(same: bool) -> Outcome {
    if same {
        Outcome::Accepted
    } else {
        Outcome::WrongOutput
    }
}

/// Runs a set of signature vectors: each group's key through Carrier's SPKI
/// parser (a refused key refuses its vectors), each signature through
/// `PublicKey::verify`. `deviation` names why a signature is deliberately
/// refused, if it is. A macro because each vector file has its own types.
macro_rules! verify_groups {
    ($tally:expr, $set:expr, $deviation:expr) => {
        for group in &$set.test_groups {
            let key = PublicKey::from_spki_der(&group.der).ok();
            for t in &group.tests {
                let outcome = match &key {
                    Some(key) => ok(key.verify(&t.msg, &t.sig)),
                    None => Outcome::Refused,
                };
                let deviation: Option<&'static str> = $deviation(&t.sig[..]);
                $tally.record(t.tc_id, &t.result, outcome, &t.flags, deviation);
            }
        }
    };
}

/// ECDSA P-256/SHA-256 with r ‖ s signatures, as Carrier signs: the key
/// through Carrier's SPKI parser, the signature through `PublicKey::verify`.
fn ecdsa_p256_p1363() -> Tally {
    use wycheproof::ecdsa::{TestName, TestSet};
    let set = TestSet::load(TestName::EcdsaSecp256r1Sha256P1363).expect("vectors load");
    let mut tally = Tally::default();
    verify_groups!(tally, set, |sig: &[u8]| {
        let high_s = sig.len() == 64 && sig[32..] > P256_HALF_ORDER[..];
        high_s.then_some("high S (PROTOCOL 7.1: only low-S signatures verify)")
    });
    tally
}

/// The same signatures DER-encoded: Carrier takes only r ‖ s, so every one
/// must be refused, valid or not.
fn ecdsa_p256_der_refused() -> Tally {
    use wycheproof::ecdsa::{TestName, TestSet};
    let set = TestSet::load(TestName::EcdsaSecp256r1Sha256).expect("vectors load");
    let mut tally = Tally::default();
    verify_groups!(tally, set, |_: &[u8]| Some(
        "DER encoding (PROTOCOL 7.1: signatures are 64-byte r || s)"
    ));
    tally
}

/// A private scalar from a vector, as 32 big-endian bytes.
fn scalar(bytes: &[u8]) -> p256::NonZeroScalar {
    let trimmed: Vec<u8> = bytes.iter().copied().skip_while(|b| *b == 0).collect();
    let mut padded = [0u8; 32];
    padded[32 - trimmed.len()..].copy_from_slice(&trimmed);
    p256::SecretKey::from_slice(&padded)
        .expect("vector private key is a valid scalar")
        .to_nonzero_scalar()
}

/// ECDH with the peer's key as an SPKI, as a sender meets a recipient's
/// identity key: Carrier's SPKI parser, then `primitives::p256_ecdh`.
fn ecdh_p256_spki() -> Tally {
    use wycheproof::ecdh::{TestName, TestSet};
    let set = TestSet::load(TestName::EcdhSecp256r1).expect("vectors load");
    let mut tally = Tally::default();
    for group in &set.test_groups {
        for t in &group.tests {
            let own = scalar(&t.private_key);
            let outcome = match PublicKey::from_spki_der(&t.public_key) {
                Ok(PublicKey::P256(peer)) => {
                    let shared = p256_ecdh(&own, &peer);
                    checked(shared.raw_secret_bytes().as_slice() == t.shared_secret.as_slice())
                }
                Ok(PublicKey::Rsa(_)) | Err(_) => Outcome::Refused,
            };
            tally.record(t.tc_id, &t.result, outcome, &t.flags, None);
        }
    }
    tally
}

/// ECDH with the peer's point as raw bytes, as a recipient meets the
/// ephemeral point in a key block: `primitives::p256_ecdh_key_block`.
fn ecdh_p256_key_block() -> Tally {
    use wycheproof::ecdh::{TestName, TestSet};
    let set = TestSet::load(TestName::EcdhSecp256r1Ecpoint).expect("vectors load");
    let mut tally = Tally::default();
    for group in &set.test_groups {
        for t in &group.tests {
            let own = scalar(&t.private_key);
            let outcome = match p256_ecdh_key_block(&own, &t.public_key) {
                Ok(shared) => {
                    checked(shared.raw_secret_bytes().as_slice() == t.shared_secret.as_slice())
                }
                Err(_) => Outcome::Refused,
            };
            tally.record(t.tc_id, &t.result, outcome, &t.flags, None);
        }
    }
    tally
}

/// AES-256-GCM with a 12-byte nonce and 16-byte tag, the envelope's cipher:
/// `primitives::aes_gcm_open`, and `aes_gcm_seal` for valid vectors.
fn aes_256_gcm() -> Tally {
    use wycheproof::aead::{TestName, TestSet};
    let set = TestSet::load(TestName::AesGcm).expect("vectors load");
    let mut tally = Tally::default();
    for group in &set.test_groups {
        for t in &group.tests {
            let key: Option<&[u8; AES_KEY_LEN]> = t.key.as_slice().try_into().ok();
            let nonce: Option<&[u8; NONCE_LEN]> = t.nonce.as_slice().try_into().ok();
            let outcome = match (key, nonce) {
                (None, _) => Outcome::NotApplicable("AES-128/192 keys (Carrier uses AES-256)"),
                (_, None) => Outcome::NotApplicable("nonces other than 12 bytes"),
                _ if t.tag.len() != TAG_LEN => Outcome::NotApplicable("tags other than 16 bytes"),
                (Some(key), Some(nonce)) => {
                    let sealed = [t.ct.as_slice(), t.tag.as_slice()].concat();
                    match aes_gcm_open(key, nonce, &sealed, &t.aad) {
                        Ok(pt) => {
                            let again = aes_gcm_seal(key, nonce, &t.pt, &t.aad);
                            checked(pt.as_slice() == t.pt.as_slice() && again.ok() == Some(sealed))
                        }
                        Err(_) => Outcome::Refused,
                    }
                }
            };
            tally.record(t.tc_id, &t.result, outcome, &t.flags, None);
        }
    }
    tally
}

/// HKDF-SHA256, the envelope's key derivation: `primitives::hkdf_sha256`.
fn hkdf_sha256_vectors() -> Tally {
    use wycheproof::hkdf::{TestName, TestSet};
    let set = TestSet::load(TestName::HkdfSha256).expect("vectors load");
    let mut tally = Tally::default();
    for group in &set.test_groups {
        for t in &group.tests {
            let mut out = vec![0u8; t.size];
            let outcome = match hkdf_sha256(&t.ikm, &t.salt, &t.info, &mut out) {
                Ok(()) => checked(out == *t.okm),
                Err(_) => Outcome::Refused,
            };
            tally.record(t.tc_id, &t.result, outcome, &t.flags, None);
        }
    }
    tally
}

/// RSA-PSS with SHA-256, MGF1-SHA256 and a 32-byte salt, as Carrier signs:
/// the key through Carrier's SPKI parser and policy, then `PublicKey::verify`.
fn rsa_pss() -> Tally {
    use wycheproof::rsa_pss_verify::{TestName, TestSet};
    let mut tally = Tally::default();
    for name in [
        TestName::RsaPss2048Sha256Mgf1SaltLen32,
        TestName::RsaPss3072Sha256Mgf1SaltLen32,
        TestName::RsaPss4096Sha256Mgf1SaltLen32,
    ] {
        let set = TestSet::load(name).expect("vectors load");
        verify_groups!(tally, set, |_: &[u8]| None);
    }
    tally
}

/// RSA-OAEP with SHA-256 and MGF1-SHA256, the envelope's RSA key wrap: the
/// private key through Carrier's key file reader, then
/// `primitives::rsa_oaep_unwrap`.
fn rsa_oaep() -> Tally {
    use wycheproof::rsa_oaep::{TestName, TestSet};
    let mut tally = Tally::default();
    for name in [
        TestName::Rsa2048Sha256Mgf1Sha256,
        TestName::Rsa3072Sha256Mgf1Sha256,
        TestName::Rsa4096Sha256Mgf1Sha256,
    ] {
        let set = TestSet::load(name).expect("vectors load");
        for group in &set.test_groups {
            let key = Identity::from_pkcs8_pem(&group.pem, None).expect("vector key loads");
            let Identity::Rsa(key) = &key else {
                panic!("an RSA vector key loaded as {key:?}");
            };
            for t in &group.tests {
                let outcome = if t.label.is_empty() {
                    match rsa_oaep_unwrap(key, &t.ct) {
                        Ok(pt) => checked(pt.as_slice() == t.pt.as_slice()),
                        Err(_) => Outcome::Refused,
                    }
                } else {
                    Outcome::NotApplicable("OAEP labels (Carrier's label is empty)")
                };
                tally.record(t.tc_id, &t.result, outcome, &t.flags, None);
            }
        }
    }
    tally
}

/// A vector file's name, the Carrier code it runs through, and the runner.
type Suite = (&'static str, &'static str, fn() -> Tally);

fn main() {
    let suites: [Suite; 8] = [
        (
            "ECDSA P-256 SHA-256 r||s",
            "PublicKey::from_spki_der + verify",
            ecdsa_p256_p1363,
        ),
        (
            "ECDSA P-256 SHA-256 DER",
            "PublicKey::from_spki_der + verify",
            ecdsa_p256_der_refused,
        ),
        (
            "ECDH P-256 (SPKI)",
            "PublicKey::from_spki_der + primitives::p256_ecdh",
            ecdh_p256_spki,
        ),
        (
            "ECDH P-256 (point)",
            "primitives::p256_ecdh_key_block",
            ecdh_p256_key_block,
        ),
        ("AES-256-GCM", "primitives::aes_gcm_open/seal", aes_256_gcm),
        (
            "HKDF-SHA256",
            "primitives::hkdf_sha256",
            hkdf_sha256_vectors,
        ),
        (
            "RSA-PSS SHA-256 salt 32",
            "PublicKey::from_spki_der + verify",
            rsa_pss,
        ),
        (
            "RSA-OAEP SHA-256",
            "Identity::from_pkcs8_pem + primitives::rsa_oaep_unwrap",
            rsa_oaep,
        ),
    ];
    println!("Wycheproof vectors through Carrier's crypto wrappers");
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for (name, through, run) in suites {
        let tally = run();
        tally.print(name, through);
        passed += tally.passed();
        failed += tally.failures.len();
        skipped += tally.skipped();
    }
    println!("wycheproof: {passed} passed, {failed} failed, {skipped} skipped");
    if failed > 0 {
        std::process::exit(1);
    }
}
