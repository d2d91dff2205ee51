//! Identity primitives for Stratus, free of I/O: everything here is a pure function of its inputs,
//! the time passed in, and the operating system's random number generator.
//!
//! - [`jwt`]: signing and verifying Ed25519 JSON Web Tokens, the verifier fixing the algorithm
//!   (RFC 8725).
//! - [`keys`]: an issuer's rotating signing keys, and the public JWK Set that verifiers fetch.
//! - [`password`]: argon2id password hashes in PHC string format, random passwords and ids.
//! - [`limiter`]: failed logins limited per user and per client address.

pub mod jwt;
pub mod keys;
pub mod limiter;
pub mod password;
pub mod pki;

pub use jwt::{Claims, Expect, TokenError, sign, verify};
pub use keys::{Jwks, KeyError, KeySet, PublicKeys};
pub use limiter::LoginLimiter;
pub use password::{PasswordError, random_id};

use ring::rand::{SecureRandom, SystemRandom};

/// Fills `buf` from the operating system's random number generator.
///
/// # Panics
/// If the operating system cannot supply random bytes. Callers that cannot return an error have
/// no safe fallback: a predictable password, id or salt is worse than no answer.
fn fill_random(buf: &mut [u8]) {
    if SystemRandom::new().fill(buf).is_err() {
        panic!("the operating system's random number generator failed");
    }
}
