//! Password hashes (argon2id, PHC string format) and random secrets.

use argon2::password_hash::phc::{Output, ParamsString, Salt};
use argon2::{Algorithm, Argon2, Block, Params, PasswordHash, Version, password_hash};
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
    let (algorithm, version, params) = (Algorithm::Argon2id, Version::default(), Params::default());
    let output = compute(password, &salt, algorithm, version, &params).map_err(PasswordError::Hash)?;
    let hash = PasswordHash {
        algorithm: algorithm.ident(),
        version: Some(version.into()),
        params: ParamsString::try_from(&params).map_err(PasswordError::Hash)?,
        salt: Some(Salt::new(&salt).map_err(|e| PasswordError::Hash(e.into()))?),
        hash: Some(output),
    };
    Ok(hash.to_string())
}

/// Whether `password` matches the PHC string `phc`, with the parameters the string names. False
/// on a mismatch and on a string that does not parse. The comparison is constant-time.
pub fn verify(password: &str, phc: &str) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else { return false };
    let (Some(salt), Some(expected)) = (&hash.salt, &hash.hash) else { return false };
    let Ok(algorithm) = Algorithm::try_from(hash.algorithm.as_str()) else { return false };
    let Ok(version) = hash.version.map_or(Ok(Version::default()), Version::try_from) else { return false };
    let Ok(params) = Params::try_from(&hash) else { return false };
    // `Output`'s comparison is constant-time.
    compute(password, salt, algorithm, version, &params).is_ok_and(|computed| computed == *expected)
}

/// How many bytes argon2's working memory is allocated in, at least: more than glibc's ceiling
/// for its dynamic mmap threshold (32 MiB on 64-bit), so that the allocation is always a mapping
/// of its own, returned to the system when freed. At the default 19 MiB it would be mapped the
/// first time, and its freeing would raise the threshold to 19 MiB: every later hash, and any
/// other allocation under 19 MiB, would then come from the heap and stay resident after it is
/// freed (about 30 MB of an idle `stratus up`). Only the blocks the parameters need are touched.
const WORKING_MEMORY_FLOOR: usize = 33 << 20;

/// argon2 of `password` and `salt` with these parameters, its working memory allocated as
/// [`WORKING_MEMORY_FLOOR`] says.
fn compute(
    password: &str,
    salt: &[u8],
    algorithm: Algorithm,
    version: Version,
    params: &Params,
) -> Result<Output, password_hash::Error> {
    let blocks = params.block_count();
    let mut memory: Vec<Block> = Vec::new();
    memory
        .try_reserve_exact(blocks.max(WORKING_MEMORY_FLOOR / size_of::<Block>()))
        .map_err(|_| password_hash::Error::from(argon2::Error::OutOfMemory))?;
    memory.resize(blocks, Block::default());
    let mut buffer = [0u8; Output::MAX_LENGTH];
    let out = buffer
        .get_mut(..params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN))
        .ok_or(password_hash::Error::OutputSize)?;
    Argon2::new(algorithm, version, params.clone()).hash_password_into_with_memory(
        password.as_bytes(),
        salt,
        out,
        &mut memory,
    )?;
    Ok(Output::new(out)?)
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
    fn hashes_are_the_argon2_crates_own_both_ways() {
        use argon2::{PasswordHasher, PasswordVerifier};
        let theirs = Argon2::default().hash_password_with_salt(b"hunter2", b"sixteen byte sal").unwrap().to_string();
        assert!(verify("hunter2", &theirs));
        assert!(!verify("hunter3", &theirs));
        let ours = hash("hunter2").unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(Argon2::default().verify_password(b"hunter2", &parsed).is_ok());
        assert!(Argon2::default().verify_password(b"hunter3", &parsed).is_err());
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
