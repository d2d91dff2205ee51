//! Password hashes (argon2id, PHC string format) and random secrets.

use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier, password_hash};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};

/// Bytes of random salt per hash, as the PHC string format recommends.
const SALT_LEN: usize = 16;

/// The characters of [`random_password`].
const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// A hash with the default parameters, of a password nobody has, for [`verify_dummy`]. Made once
/// so that a dummy verify costs exactly one verify; a test keeps its parameters the defaults.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$Xoe7iTWMKZSw7nJPqaFFJw$yGuCWIxFKzsm+UjZBq+SPG6zbrsC5E91lHDHM7J3TlA";

/// Why a password could not be hashed.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("the operating system's random number generator failed while making a salt")]
    Random,
    #[error("hashing the password failed: {0}")]
    Hash(#[source] password_hash::Error),
}

/// Hashes `password` with argon2id, the argon2 crate's default (OWASP-recommended) parameters
/// and a random 16-byte salt, in PHC string format (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`).
pub fn hash(password: &str) -> Result<String, PasswordError> {
    let mut salt = [0u8; SALT_LEN];
    SystemRandom::new().fill(&mut salt).map_err(|_| PasswordError::Random)?;
    let hash = Argon2::default().hash_password_with_salt(password.as_bytes(), &salt).map_err(PasswordError::Hash)?;
    Ok(hash.to_string())
}

/// Whether `password` matches the PHC string `phc`, with the parameters the string names. False
/// on a mismatch and on a string that does not parse. The comparison is constant-time.
pub fn verify(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|hash| Argon2::default().verify_password(password.as_bytes(), &hash).is_ok())
}

/// Spends the time of one [`verify`] and discards the answer: for logins naming an unknown user,
/// so that the response time does not tell which names exist.
pub fn verify_dummy(password: &str) {
    std::hint::black_box(verify(password, DUMMY_HASH));
}

/// A random password of `len` characters from `[A-Za-z0-9]` (5.95 bits each), drawn uniformly
/// from the operating system's random number generator.
///
/// # Panics
/// If the operating system cannot supply random bytes.
pub fn random_password(len: usize) -> String {
    // 248 = 4 * 62: bytes from 248 up are redrawn so that every character is equally likely.
    const LIMIT: u8 = 248;
    let mut password = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while password.len() < len {
        crate::fill_random(&mut buf);
        for &byte in buf.iter().filter(|&&b| b < LIMIT).take(len - password.len()) {
            password.push(char::from(ALPHABET[usize::from(byte) % ALPHABET.len()]));
        }
    }
    password
}

/// A random URL-safe id (for `jti`): 16 bytes from the operating system's random number
/// generator, base64url without padding (22 characters).
///
/// # Panics
/// If the operating system cannot supply random bytes.
pub fn random_id() -> String {
    let mut bytes = [0u8; 16];
    crate::fill_random(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::Params;
    use std::collections::HashSet;

    fn assert_default_params(hash: &PasswordHash) {
        let (params, default) = (Params::try_from(hash).unwrap(), Params::default());
        assert_eq!(
            (params.m_cost(), params.t_cost(), params.p_cost()),
            (default.m_cost(), default.t_cost(), default.p_cost())
        );
        assert_eq!(
            params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN),
            default.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN)
        );
    }

    #[test]
    fn a_hash_verifies_its_password_and_no_other() {
        let phc = hash("correct horse battery staple").unwrap();
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        assert!(verify("correct horse battery staple", &phc));
        assert!(!verify("correct horse battery stapl", &phc));
        assert!(!verify("", &phc));
    }

    #[test]
    fn hashes_use_the_default_parameters_and_a_fresh_salt() {
        let first = hash("hunter2").unwrap();
        let second = hash("hunter2").unwrap();
        assert_ne!(first, second, "same password, different salts");
        assert!(verify("hunter2", &first) && verify("hunter2", &second));
        let parsed = PasswordHash::new(&first).unwrap();
        assert_default_params(&parsed);
        assert_eq!(parsed.salt.unwrap().len(), SALT_LEN);
    }

    #[test]
    fn garbage_never_verifies() {
        for garbage in [
            "",
            "hunter2",
            "$argon2id$",
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA",
            "$2b$12$abcdefghijklmnopqrstuv",
        ] {
            assert!(!verify("hunter2", garbage), "{garbage:?}");
        }
    }

    #[test]
    fn the_dummy_hash_costs_what_a_real_one_does() {
        let dummy = PasswordHash::new(DUMMY_HASH).unwrap();
        assert_eq!(dummy.algorithm, argon2::ARGON2ID_IDENT);
        assert_default_params(&dummy);
        assert_eq!(dummy.salt.unwrap().len(), SALT_LEN);
        verify_dummy("anything");
    }

    #[test]
    fn random_passwords_have_the_length_and_alphabet_asked_for() {
        assert_eq!(random_password(0), "");
        for len in [1, 20, 63, 64, 65, 300] {
            let password = random_password(len);
            assert_eq!(password.len(), len);
            assert!(password.bytes().all(|b| b.is_ascii_alphanumeric()), "{password}");
        }
        // 10,000 characters reach every letter and digit.
        let seen: HashSet<u8> = random_password(10_000).bytes().collect();
        assert_eq!(seen.len(), 62);
        assert_ne!(random_password(24), random_password(24));
    }

    #[test]
    fn random_ids_are_22_url_safe_characters_and_distinct() {
        let ids: HashSet<String> = (0..1000).map(|_| random_id()).collect();
        assert_eq!(ids.len(), 1000);
        for id in &ids {
            assert_eq!(id.len(), 22);
            assert!(id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{id}");
        }
    }
}
