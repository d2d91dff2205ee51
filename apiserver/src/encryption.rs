//! Encryption at rest: every Secret is sealed with AES-256-GCM before it reaches the store
//! (embedded or etcd), as kube-apiserver's `aesgcm` provider does.
//!
//! The stored value is `stratus:enc:aesgcm:v1:<key name>:` followed by a random 96-bit nonce
//! and the ciphertext of the object's protobuf encoding (with its tag). The object's store key
//! (`/registry/secrets/NAMESPACE/NAME`) is the associated data, so a ciphertext copied under
//! another key does not open. The key name in the prefix lets several keys coexist: the first
//! key of the key file (the primary) seals every write, and any key of the file opens.
//!
//! The key file is YAML, private to its owner (mode 0600; a file others may read is refused):
//!
//! ```yaml
//! keys:
//! - name: key2
//!   secret: <32 bytes, base64>
//! - name: key1
//!   secret: <32 bytes, base64>
//! ```
//!
//! Rotation: [`rotate_file`] puts a new primary key first and keeps the others for reading; an
//! API server started with it re-encrypts every Secret under the primary
//! ([`crate::Registry::reencrypt_secrets`]); after that the old keys may be removed.

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

/// What every sealed value starts with, before the key's name.
pub const PREFIX: &str = "stratus:enc:aesgcm:v1:";

/// The length of a key, in bytes (AES-256).
const KEY_LEN: usize = 32;

/// Why keys could not be loaded, or a value not sealed or opened. No message carries a key or
/// a plaintext.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading the encryption key file {path} failed: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing the encryption key file {path} failed: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the encryption key file {path} is not valid: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error(
        "the encryption key file {path} may be read by others (mode {mode:o}): make it private with `chmod 600 {path}`"
    )]
    NotPrivate { path: PathBuf, mode: u32 },
    #[error("the system's random number generator failed")]
    Random,
    #[error("the stored value is not encrypted (it has no {PREFIX} prefix)")]
    NotEncrypted,
    #[error("the stored value is encrypted with key {0:?}, which is not in the encryption key file")]
    UnknownKey(String),
    #[error("the stored value does not decrypt with key {0:?}: it was altered, or moved from another object")]
    Decrypt(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The keys Secrets are sealed with: the first (the primary) seals, every one opens.
pub struct Keys {
    keys: Vec<NamedKey>,
    random: SystemRandom,
}

struct NamedKey {
    name: String,
    key: LessSafeKey,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.keys.iter().map(|k| k.name.as_str()).collect();
        f.debug_struct("Keys").field("names", &names).finish_non_exhaustive()
    }
}

/// The file's form.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    keys: Vec<KeyEntry>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    name: String,
    secret: String,
}

impl Keys {
    /// Reads the key file at `path`, which must exist and be private to its owner.
    pub fn load(path: &Path) -> Result<Keys> {
        check_private(path)?;
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read { path: path.into(), source })?;
        Keys::parse(&text).map_err(|reason| Error::Invalid { path: path.into(), reason })
    }

    /// Reads the key file at `path`, or, when there is none, makes one with a new key (mode
    /// 0600): what a data directory's `encryption-key` is on first start.
    pub fn load_or_create(path: &Path) -> Result<Keys> {
        if !path.exists() {
            let file = KeyFile { keys: vec![new_entry(&[])?] };
            write_file(path, &file, true)?;
        }
        Keys::load(path)
    }

    fn parse(text: &str) -> Result<Keys, String> {
        let file: KeyFile = yaml_serde::from_str(text).map_err(|e| e.to_string())?;
        if file.keys.is_empty() {
            return Err("it names no key".into());
        }
        let mut keys: Vec<NamedKey> = Vec::new();
        for (i, entry) in file.keys.into_iter().enumerate() {
            valid_name(&entry.name).map_err(|e| format!("keys[{i}].name: {e}"))?;
            if keys.iter().any(|k| k.name == entry.name) {
                return Err(format!("keys[{i}].name: {:?} is there twice", entry.name));
            }
            let bytes = STANDARD.decode(entry.secret.trim()).map_err(|_| format!("keys[{i}].secret: is not base64"))?;
            if bytes.len() != KEY_LEN {
                return Err(format!("keys[{i}].secret: is {} bytes, not {KEY_LEN}", bytes.len()));
            }
            let key = UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| format!("keys[{i}].secret: is not a key"))?;
            keys.push(NamedKey { name: entry.name, key: LessSafeKey::new(key) });
        }
        Ok(Keys { keys, random: SystemRandom::new() })
    }

    /// A key set of one random key named `name`, kept in memory only (tests).
    pub fn generate(name: &str) -> Result<Keys> {
        let entry = KeyEntry { name: name.into(), secret: random_secret()? };
        let file = KeyFile { keys: vec![entry] };
        let text =
            yaml_serde::to_string(&file).map_err(|e| Error::Invalid { path: PathBuf::new(), reason: e.to_string() })?;
        Keys::parse(&text).map_err(|reason| Error::Invalid { path: PathBuf::new(), reason })
    }

    /// The name of the key that seals.
    pub fn primary(&self) -> &str {
        self.keys.first().map(|k| k.name.as_str()).unwrap_or_default()
    }

    /// The names of every key, the primary first.
    pub fn names(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.name.as_str()).collect()
    }

    /// Seals `plain` with the primary key; `context` (the store key) must be given again to open.
    pub fn seal(&self, context: &[u8], plain: &[u8]) -> Result<Vec<u8>> {
        let Some(primary) = self.keys.first() else { return Err(Error::UnknownKey(String::new())) };
        let mut nonce = [0u8; NONCE_LEN];
        self.random.fill(&mut nonce).map_err(|_| Error::Random)?;
        let mut sealed = plain.to_vec();
        primary
            .key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(context), &mut sealed)
            .map_err(|_| Error::Random)?;
        let mut out = Vec::with_capacity(PREFIX.len() + primary.name.len() + 1 + NONCE_LEN + sealed.len());
        out.extend_from_slice(PREFIX.as_bytes());
        out.extend_from_slice(primary.name.as_bytes());
        out.push(b':');
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens what [`Keys::seal`] made for `context`, with the key its prefix names.
    pub fn open(&self, context: &[u8], stored: &[u8]) -> Result<Vec<u8>> {
        let (name, rest) = split(stored).ok_or(Error::NotEncrypted)?;
        let key = self.keys.iter().find(|k| k.name == name).ok_or_else(|| Error::UnknownKey(name.to_string()))?;
        if rest.len() < NONCE_LEN {
            return Err(Error::Decrypt(name.to_string()));
        }
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| Error::Decrypt(name.to_string()))?;
        let mut buf = sealed.to_vec();
        let plain =
            key.key.open_in_place(nonce, Aad::from(context), &mut buf).map_err(|_| Error::Decrypt(name.to_string()))?;
        Ok(plain.to_vec())
    }
}

/// The name of the key a stored value was sealed with; `None` when it is not sealed.
pub fn key_name(stored: &[u8]) -> Option<&str> {
    split(stored).map(|(name, _)| name)
}

fn split(stored: &[u8]) -> Option<(&str, &[u8])> {
    let rest = stored.strip_prefix(PREFIX.as_bytes())?;
    let end = rest.iter().position(|b| *b == b':')?;
    let name = std::str::from_utf8(&rest[..end]).ok()?;
    Some((name, &rest[end + 1..]))
}

/// Puts a new random key first in the key file at `path` (creating the file when there is
/// none), keeping the others for reading, and returns its name. Servers that load the file
/// then seal with it; each re-encrypts the Secrets it finds under an older key when it starts.
pub fn rotate_file(path: &Path) -> Result<String> {
    let mut file = match path.exists() {
        true => {
            check_private(path)?;
            let text = std::fs::read_to_string(path).map_err(|source| Error::Read { path: path.into(), source })?;
            Keys::parse(&text).map_err(|reason| Error::Invalid { path: path.into(), reason })?;
            yaml_serde::from_str::<KeyFile>(&text)
                .map_err(|e| Error::Invalid { path: path.into(), reason: e.to_string() })?
        }
        false => KeyFile { keys: Vec::new() },
    };
    let entry = new_entry(&file.keys)?;
    let name = entry.name.clone();
    file.keys.insert(0, entry);
    write_file(path, &file, false)?;
    Ok(name)
}

/// A new key named `keyN`, N one more than the largest of `existing`.
fn new_entry(existing: &[KeyEntry]) -> Result<KeyEntry> {
    let n = existing.iter().filter_map(|k| k.name.strip_prefix("key")?.parse::<u64>().ok()).max().unwrap_or(0) + 1;
    Ok(KeyEntry { name: format!("key{n}"), secret: random_secret()? })
}

fn random_secret() -> Result<String> {
    let mut bytes = [0u8; KEY_LEN];
    SystemRandom::new().fill(&mut bytes).map_err(|_| Error::Random)?;
    Ok(STANDARD.encode(bytes))
}

fn valid_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok { Ok(()) } else { Err(format!("{name:?} is not a key name: 1 to 63 letters, digits, '-', '_' or '.'")) }
}

/// Writes the key file (mode 0600) through a temporary file renamed over it, so that a crash
/// leaves the old file or the new one. With `create_new`, an existing file is not replaced.
fn write_file(path: &Path, file: &KeyFile, create_new: bool) -> Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| Error::Write { path: path.into(), source };
    let header = "# Stratus encryption keys for Secrets at rest. The first key encrypts; every key decrypts.\n\
                  # Keep this file private and backed up: without its keys, stored Secrets cannot be read.\n";
    let body = yaml_serde::to_string(file).map_err(|e| Error::Invalid { path: path.into(), reason: e.to_string() })?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir).map_err(err)?;
    }
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut out = options.open(&tmp).map_err(err)?;
    out.write_all(header.as_bytes())
        .and_then(|()| out.write_all(body.as_bytes()))
        .and_then(|()| out.sync_all())
        .map_err(err)?;
    if create_new && path.exists() {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(std::io::Error::from(std::io::ErrorKind::AlreadyExists)));
    }
    std::fs::rename(&tmp, path).map_err(err)
}

/// Refuses a key file that anyone but its owner may read or write.
fn check_private(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path).map_err(|source| Error::Read { path: path.into(), source })?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(Error::NotPrivate { path: path.into(), mode });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_context() {
        let keys = Keys::generate("k1").unwrap();
        let sealed = keys.seal(b"/registry/secrets/a/db", b"hunter2").unwrap();
        assert!(sealed.starts_with(b"stratus:enc:aesgcm:v1:k1:"));
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(keys.open(b"/registry/secrets/a/db", &sealed).unwrap(), b"hunter2");
        // Moved to another object, it does not open.
        assert!(matches!(keys.open(b"/registry/secrets/b/db", &sealed), Err(Error::Decrypt(k)) if k == "k1"));
        // A fresh nonce each time.
        assert_ne!(keys.seal(b"c", b"v").unwrap(), keys.seal(b"c", b"v").unwrap());
        let mut tampered = sealed.clone();
        if let Some(last) = tampered.last_mut() {
            *last ^= 1;
        }
        assert!(matches!(keys.open(b"/registry/secrets/a/db", &tampered), Err(Error::Decrypt(_))));
        let other = Keys::generate("k2").unwrap();
        assert!(matches!(other.open(b"/registry/secrets/a/db", &sealed), Err(Error::UnknownKey(k)) if k == "k1"));
        assert!(matches!(keys.open(b"x", b"plain"), Err(Error::NotEncrypted)));
        assert_eq!(key_name(&sealed), Some("k1"));
    }

    #[test]
    fn the_key_file_is_made_private_and_rotates_with_the_old_keys_kept() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/encryption-key");
        let first = Keys::load_or_create(&path).unwrap();
        assert_eq!(first.names(), ["key1"]);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let sealed = first.seal(b"c", b"v").unwrap();
        // A second start reads the same key.
        assert_eq!(Keys::load_or_create(&path).unwrap().open(b"c", &sealed).unwrap(), b"v");

        assert_eq!(rotate_file(&path).unwrap(), "key2");
        let rotated = Keys::load(&path).unwrap();
        assert_eq!((rotated.primary(), rotated.names()), ("key2", vec!["key2", "key1"]));
        assert_eq!(rotated.open(b"c", &sealed).unwrap(), b"v");
        assert_eq!(key_name(&rotated.seal(b"c", b"v").unwrap()), Some("key2"));
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Keys::load(&path).unwrap_err().to_string();
        assert!(e.contains("may be read by others (mode 644)") && e.contains("chmod 600"), "{e}");
    }

    #[test]
    fn a_bad_key_file_is_refused_naming_the_field() {
        let bad = |text: &str| Keys::parse(text).err().unwrap_or_default();
        assert!(bad("keys: []").contains("names no key"));
        assert!(bad("keys: [{name: 'a:b', secret: x}]").contains("keys[0].name"));
        assert!(bad("keys: [{name: a, secret: '***'}]").contains("keys[0].secret: is not base64"));
        assert!(bad("keys: [{name: a, secret: YWJj}]").contains("keys[0].secret: is 3 bytes, not 32"));
        let k = STANDARD.encode([7u8; 32]);
        assert!(bad(&format!("keys: [{{name: a, secret: {k}}}, {{name: a, secret: {k}}}]")).contains("twice"));
    }
}
