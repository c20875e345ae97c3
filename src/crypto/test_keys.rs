//! RSA identities shared by the tests: key generation is the slow part, so
//! each is made once per test run.

use std::sync::OnceLock;

use rand::rand_core::UnwrapErr;
use rand::rngs::SysRng;
use rsa::RsaPrivateKey;

use super::Identity;
use crate::protocol::KeyType;

/// A key made the way clients make theirs (3072 bits).
pub(crate) fn rsa_3072() -> &'static Identity {
    static KEY: OnceLock<Identity> = OnceLock::new();
    KEY.get_or_init(|| Identity::generate(KeyType::Rsa))
}

/// The smallest key peers may use, to cover a second modulus size.
pub(crate) fn rsa_2048() -> &'static Identity {
    static KEY: OnceLock<Identity> = OnceLock::new();
    KEY.get_or_init(|| {
        Identity::Rsa(RsaPrivateKey::new(&mut UnwrapErr(SysRng), 2048).expect("RSA keygen"))
    })
}
