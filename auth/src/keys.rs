//! An issuer's Ed25519 signing keys, their rotation, and the public JWK Set (RFC 7517) that
//! verifiers read.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde::{Deserialize, Serialize};

/// Length of an Ed25519 public key.
const PUBLIC_KEY_LEN: usize = 32;

/// Random bytes in a generated key id: 12 bytes are 16 base64url characters.
const KID_BYTES: usize = 12;

/// Longest key id accepted from a stored key set.
const MAX_KID_LEN: usize = 64;

/// The keys a verifier trusts, by key id.
pub trait PublicKeys {
    /// The 32-byte Ed25519 public key with this key id, if the verifier trusts one.
    fn public_key(&self, kid: &str) -> Option<&[u8]>;
}

/// The signing keys of an issuer: one active key that signs, and retired keys kept only to verify
/// tokens signed before a rotation, until those tokens must have expired.
///
/// Exactly one key is active at any time; the type holds no other state. Retired keys keep
/// verifying until [`prune`](Self::prune) (or [`rotate`](Self::rotate)) drops them: the set holds
/// no clock of its own.
#[derive(Clone)]
pub struct KeySet {
    active: SigningKey,
    /// Newest first.
    retired: Vec<RetiredKey>,
}

/// Public keys read from a JWK Set document (what a gateway fetches from
/// `/.well-known/jwks.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Jwks {
    keys: HashMap<String, [u8; PUBLIC_KEY_LEN]>,
}

/// Why a key set or a JWK Set could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the operating system's random number generator failed while generating a key")]
    Random,
    #[error("key set is not JSON of the stored form: {0}")]
    Json(#[source] serde_json::Error),
    #[error("key {kid:?}: pkcs8 is not standard base64: {source}")]
    Base64 {
        kid: String,
        #[source]
        source: base64::DecodeError,
    },
    #[error("key {kid:?}: pkcs8 is not an Ed25519 private key: {reason}")]
    InvalidKey { kid: String, reason: String },
    #[error("key id {0:?} is not 1 to 64 characters of A-Z, a-z, 0-9, '-' and '_'")]
    InvalidKid(String),
    #[error("key id {0:?} appears more than once")]
    DuplicateKid(String),
    #[error("key set has {0} active keys, where exactly one must be")]
    ActiveKeys(usize),
    #[error("retired key {0:?} has no keep_until")]
    MissingKeepUntil(String),
    #[error("active key {0:?} has a keep_until: only retired keys expire")]
    ActiveKeepUntil(String),
    #[error("JWK Set is malformed: {0}")]
    Jwks(String),
}

impl KeySet {
    /// A new key set with one freshly generated active key, made at `now`.
    pub fn generate(now: i64) -> Result<KeySet, KeyError> {
        Ok(KeySet { active: SigningKey::generate(now, &[])?, retired: Vec::new() })
    }

    /// Reads the stored form written by [`to_json`](Self::to_json). Every key must parse as an
    /// Ed25519 PKCS#8 document, key ids must be distinct, exactly one key must be active, and
    /// every other key must say until when it is kept.
    pub fn from_json(bytes: &[u8]) -> Result<KeySet, KeyError> {
        let stored: Stored = serde_json::from_slice(bytes).map_err(KeyError::Json)?;
        let active_count = stored.keys.iter().filter(|key| key.active).count();
        if active_count != 1 {
            return Err(KeyError::ActiveKeys(active_count));
        }
        let mut active = None;
        let mut retired = Vec::new();
        let mut seen = Vec::with_capacity(stored.keys.len());
        for key in stored.keys {
            if seen.contains(&key.kid) {
                return Err(KeyError::DuplicateKid(key.kid));
            }
            seen.push(key.kid.clone());
            let pkcs8 =
                STANDARD.decode(&key.pkcs8).map_err(|source| KeyError::Base64 { kid: key.kid.clone(), source })?;
            let signing = SigningKey::from_parts(key.kid, key.created, pkcs8)?;
            match (key.active, key.keep_until) {
                (true, None) => active = Some(signing),
                (true, Some(_)) => return Err(KeyError::ActiveKeepUntil(signing.kid)),
                (false, Some(keep_until)) => retired.push(RetiredKey { key: signing, keep_until }),
                (false, None) => return Err(KeyError::MissingKeepUntil(signing.kid)),
            }
        }
        let active = active.ok_or(KeyError::ActiveKeys(0))?;
        // Newest first, whatever order the document had.
        retired.sort_by_key(|r| std::cmp::Reverse(r.keep_until));
        Ok(KeySet { active, retired })
    }

    /// The stored form, private keys included (PKCS#8, standard base64): keep it secret.
    pub fn to_json(&self) -> Vec<u8> {
        let active = std::iter::once(self.active.stored(None));
        let retired = self.retired.iter().map(|r| r.key.stored(Some(r.keep_until)));
        let stored = Stored { keys: active.chain(retired).collect() };
        // Serializing strings, integers and booleans cannot fail.
        serde_json::to_vec_pretty(&stored).unwrap_or_default()
    }

    /// The id of the key that signs.
    pub fn active_kid(&self) -> &str {
        &self.active.kid
    }

    /// When the active key was made, seconds since the Unix epoch.
    pub fn active_since(&self) -> i64 {
        self.active.created
    }

    /// Makes a new active key at `now`. The previous active key stops signing and is kept to
    /// verify until `now + keep_for` (which should cover the longest token lifetime plus leeway);
    /// retired keys whose keep-until has passed are dropped. On error the set is unchanged.
    pub fn rotate(&mut self, now: i64, keep_for: i64) -> Result<(), KeyError> {
        let kids = self.kids();
        let new = SigningKey::generate(now, &kids)?;
        let previous = std::mem::replace(&mut self.active, new);
        self.retired.insert(0, RetiredKey { key: previous, keep_until: now.saturating_add(keep_for) });
        self.prune(now);
        Ok(())
    }

    /// Drops retired keys whose keep-until has passed (at `now` itself it has), without making a
    /// new key. Returns whether anything was dropped.
    pub fn prune(&mut self, now: i64) -> bool {
        let before = self.retired.len();
        self.retired.retain(|r| r.keep_until > now);
        self.retired.len() != before
    }

    /// The earliest keep-until of the retired keys: when [`prune`](Self::prune) will next have
    /// something to drop. `None` when no key is retired.
    pub fn next_prune(&self) -> Option<i64> {
        self.retired.iter().map(|r| r.keep_until).min()
    }

    /// The RFC 7517 JWK Set of every key that still verifies, active key first:
    /// `{"keys":[{"kty":"OKP","crv":"Ed25519","x":…,"kid":…,"alg":"EdDSA","use":"sig"}]}`.
    /// It holds public keys only, never private material.
    pub fn jwks(&self) -> serde_json::Value {
        let keys: Vec<serde_json::Value> = self.signing_keys().map(SigningKey::jwk).collect();
        serde_json::json!({ "keys": keys })
    }

    /// The ids of every key that still verifies, active key first.
    pub fn kids(&self) -> Vec<String> {
        self.signing_keys().map(|key| key.kid.clone()).collect()
    }

    /// The key pair that signs.
    pub(crate) fn active_pair(&self) -> &Ed25519KeyPair {
        &self.active.pair
    }

    fn signing_keys(&self) -> impl Iterator<Item = &SigningKey> {
        std::iter::once(&self.active).chain(self.retired.iter().map(|r| &r.key))
    }
}

impl PublicKeys for KeySet {
    fn public_key(&self, kid: &str) -> Option<&[u8]> {
        self.signing_keys().find(|key| key.kid == kid).map(|key| key.pair.public_key().as_ref())
    }
}

/// Names and times only: the private keys stay out of logs.
impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let retired: Vec<(&str, i64)> = self.retired.iter().map(|r| (r.key.kid.as_str(), r.keep_until)).collect();
        f.debug_struct("KeySet")
            .field("active_kid", &self.active.kid)
            .field("active_since", &self.active.created)
            .field("retired_until", &retired)
            .finish()
    }
}

impl Jwks {
    /// Reads a JWK Set document. Keys that are not Ed25519 signing keys (another `kty` or `crv`,
    /// `use` other than `sig`, `alg` other than `EdDSA`) are skipped; a document without a `keys`
    /// array, a key that is not an object, or an Ed25519 key without a `kid` or with an `x` that
    /// is not 32 bytes of base64url fails the whole document, as do repeated key ids.
    pub fn from_json(value: &serde_json::Value) -> Result<Jwks, KeyError> {
        let entries = value
            .get("keys")
            .and_then(serde_json::Value::as_array)
            .ok_or_else(|| KeyError::Jwks("no \"keys\" array".to_owned()))?;
        let mut keys = HashMap::new();
        for (index, entry) in entries.iter().enumerate() {
            let entry = entry.as_object().ok_or_else(|| KeyError::Jwks(format!("key {index} is not an object")))?;
            let member = |name: &str| entry.get(name).and_then(serde_json::Value::as_str);
            let is_ed25519 = member("kty") == Some("OKP") && member("crv") == Some("Ed25519");
            let signs = entry.get("use").is_none_or(|u| u.as_str() == Some("sig"));
            let eddsa = entry.get("alg").is_none_or(|alg| alg.as_str() == Some(crate::jwt::ALGORITHM));
            if !(is_ed25519 && signs && eddsa) {
                continue;
            }
            let kid = member("kid").ok_or_else(|| KeyError::Jwks(format!("Ed25519 key {index} has no kid")))?;
            let x = member("x")
                .and_then(|x| URL_SAFE_NO_PAD.decode(x).ok())
                .and_then(|x| <[u8; PUBLIC_KEY_LEN]>::try_from(x).ok())
                .ok_or_else(|| KeyError::Jwks(format!("key {kid:?}: x is not a 32-byte base64url public key")))?;
            if keys.insert(kid.to_owned(), x).is_some() {
                return Err(KeyError::Jwks(format!("key id {kid:?} appears more than once")));
            }
        }
        Ok(Jwks { keys })
    }

    /// How many keys the document held that this verifier can use.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

impl PublicKeys for Jwks {
    fn public_key(&self, kid: &str) -> Option<&[u8]> {
        self.keys.get(kid).map(|key| key.as_slice())
    }
}

#[derive(Clone)]
struct SigningKey {
    kid: String,
    created: i64,
    pkcs8: Arc<[u8]>,
    pair: Arc<Ed25519KeyPair>,
}

#[derive(Clone)]
struct RetiredKey {
    key: SigningKey,
    keep_until: i64,
}

impl SigningKey {
    /// A new key whose random id is none of `taken`.
    fn generate(now: i64, taken: &[String]) -> Result<SigningKey, KeyError> {
        let rng = SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| KeyError::Random)?;
        let kid = loop {
            let mut bytes = [0u8; KID_BYTES];
            rng.fill(&mut bytes).map_err(|_| KeyError::Random)?;
            let kid = URL_SAFE_NO_PAD.encode(bytes);
            if !taken.contains(&kid) {
                break kid;
            }
        };
        SigningKey::from_parts(kid, now, pkcs8.as_ref().to_vec())
    }

    fn from_parts(kid: String, created: i64, pkcs8: Vec<u8>) -> Result<SigningKey, KeyError> {
        let kid_ok = !kid.is_empty()
            && kid.len() <= MAX_KID_LEN
            && kid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !kid_ok {
            return Err(KeyError::InvalidKid(kid));
        }
        // Accepts PKCS#8 v2 (what ring generates, checked against its public key) and v1 (what
        // other tools write, its public key derived).
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pkcs8)
            .map_err(|e| KeyError::InvalidKey { kid: kid.clone(), reason: e.to_string() })?;
        Ok(SigningKey { kid, created, pkcs8: pkcs8.into(), pair: Arc::new(pair) })
    }

    fn stored(&self, keep_until: Option<i64>) -> StoredKey {
        StoredKey {
            kid: self.kid.clone(),
            created: self.created,
            active: keep_until.is_none(),
            keep_until,
            pkcs8: STANDARD.encode(&self.pkcs8),
        }
    }

    fn jwk(&self) -> serde_json::Value {
        serde_json::json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": URL_SAFE_NO_PAD.encode(self.pair.public_key().as_ref()),
            "kid": self.kid,
            "alg": crate::jwt::ALGORITHM,
            "use": "sig",
        })
    }
}

/// The stored form of a key set.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    keys: Vec<StoredKey>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredKey {
    kid: String,
    /// When the key was made.
    created: i64,
    /// Whether this key signs.
    active: bool,
    /// For a retired key, until when it verifies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    keep_until: Option<i64>,
    /// The private key, PKCS#8, standard base64.
    pkcs8: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::{Claims, Expect, TokenError, sign, verify};

    const T0: i64 = 1_700_000_000;
    const TTL: i64 = 3600;
    const LEEWAY: i64 = 30;

    fn claims(iat: i64) -> Claims {
        Claims {
            iss: "https://stratus.example".to_owned(),
            aud: "stratus".to_owned(),
            sub: "alice".to_owned(),
            exp: iat + TTL,
            nbf: iat,
            iat,
            jti: crate::random_id(),
            tenant: String::new(),
            uid: "uid-1".to_owned(),
        }
    }

    fn at(now: i64) -> Expect<'static> {
        Expect { issuer: "https://stratus.example", audience: "stratus", now, leeway: LEEWAY }
    }

    fn kid_of(token: &str) -> String {
        let header = URL_SAFE_NO_PAD.decode(token.split('.').next().unwrap()).unwrap();
        serde_json::from_slice::<serde_json::Value>(&header).unwrap()["kid"].as_str().unwrap().to_owned()
    }

    fn jwk_kids(jwks: &serde_json::Value) -> Vec<String> {
        jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_owned()).collect()
    }

    #[test]
    fn a_generated_set_has_one_url_safe_active_key() {
        let keys = KeySet::generate(T0).unwrap();
        assert_eq!(keys.active_since(), T0);
        assert_eq!(keys.kids(), vec![keys.active_kid().to_owned()]);
        assert_eq!(keys.active_kid().len(), 16);
        assert!(keys.active_kid().bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(keys.public_key(keys.active_kid()).map(<[u8]>::len), Some(32));
        assert_ne!(keys.active_kid(), KeySet::generate(T0).unwrap().active_kid());
        assert_eq!(keys.next_prune(), None);
    }

    #[test]
    fn a_token_signed_before_rotation_verifies_until_its_key_is_pruned() {
        let mut keys = KeySet::generate(T0).unwrap();
        let old_kid = keys.active_kid().to_owned();
        let old_token = sign(&keys, &claims(T0));

        let rotated_at = T0 + 100;
        let keep_for = TTL + LEEWAY;
        keys.rotate(rotated_at, keep_for).unwrap();
        assert_ne!(keys.active_kid(), old_kid);
        assert_eq!(keys.active_since(), rotated_at);
        assert_eq!(keys.kids(), vec![keys.active_kid().to_owned(), old_kid.clone()]);
        assert_eq!(keys.next_prune(), Some(rotated_at + keep_for));

        // New tokens are signed with the new key; the old token still verifies.
        let new_token = sign(&keys, &claims(rotated_at));
        assert_eq!(kid_of(&new_token), keys.active_kid());
        assert!(verify(&old_token, &keys, &at(rotated_at + 1)).is_ok());
        assert!(verify(&new_token, &keys, &at(rotated_at + 1)).is_ok());

        // Nothing to prune until keep-until; then the old key goes and its tokens are unknown.
        assert!(!keys.prune(rotated_at + keep_for - 1));
        assert!(verify(&old_token, &keys, &at(T0 + TTL)).is_ok());
        assert!(keys.prune(rotated_at + keep_for));
        assert_eq!(keys.kids(), vec![keys.active_kid().to_owned()]);
        assert_eq!(verify(&old_token, &keys, &at(T0 + 10)), Err(TokenError::UnknownKey(old_kid)));
        assert!(verify(&new_token, &keys, &at(rotated_at + TTL)).is_ok());
        assert!(!keys.prune(rotated_at + keep_for));
    }

    #[test]
    fn rotation_drops_keys_whose_keep_until_has_passed() {
        let mut keys = KeySet::generate(T0).unwrap();
        let first = keys.active_kid().to_owned();
        keys.rotate(T0 + 10, 100).unwrap();
        let second = keys.active_kid().to_owned();
        keys.rotate(T0 + 50, 100).unwrap();
        assert_eq!(keys.kids().len(), 3);
        keys.rotate(T0 + 110, 100).unwrap();
        let kids = keys.kids();
        assert!(!kids.contains(&first), "kept until T0 + 110: {kids:?}");
        assert!(kids.contains(&second));
        assert_eq!(kids.len(), 3);
    }

    #[test]
    fn jwks_lists_every_verifying_key_and_no_private_material() {
        let mut keys = KeySet::generate(T0).unwrap();
        let first = keys.active_kid().to_owned();
        let stored = String::from_utf8(keys.to_json()).unwrap();
        keys.rotate(T0 + 1, 60).unwrap();

        let jwks = keys.jwks();
        assert_eq!(jwk_kids(&jwks), vec![keys.active_kid().to_owned(), first.clone()]);
        for jwk in jwks["keys"].as_array().unwrap() {
            let mut members: Vec<&str> = jwk.as_object().unwrap().keys().map(String::as_str).collect();
            members.sort_unstable();
            assert_eq!(members, ["alg", "crv", "kid", "kty", "use", "x"]);
            assert_eq!(
                (&jwk["kty"], &jwk["crv"], &jwk["alg"], &jwk["use"]),
                (&"OKP".into(), &"Ed25519".into(), &"EdDSA".into(), &"sig".into())
            );
        }
        let text = jwks.to_string();
        assert!(!text.contains("\"d\"") && !text.contains("pkcs8"), "{text}");
        // Nor does the private key appear in any encoding we use.
        let pkcs8 = serde_json::from_str::<serde_json::Value>(&stored).unwrap()["keys"][0]["pkcs8"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(!text.contains(&pkcs8[..40]));
        assert!(!format!("{keys:?}").contains(&pkcs8[..40]));

        keys.prune(T0 + 61);
        assert_eq!(jwk_kids(&keys.jwks()), vec![keys.active_kid().to_owned()]);
    }

    #[test]
    fn the_stored_form_round_trips_and_keeps_verifying() {
        let mut keys = KeySet::generate(T0).unwrap();
        let old_token = sign(&keys, &claims(T0));
        keys.rotate(T0 + 5, TTL + LEEWAY).unwrap();
        let new_token = sign(&keys, &claims(T0 + 5));

        let mut restored = KeySet::from_json(&keys.to_json()).unwrap();
        assert_eq!(restored.kids(), keys.kids());
        assert_eq!(restored.active_since(), keys.active_since());
        assert_eq!(restored.next_prune(), keys.next_prune());
        assert_eq!(restored.jwks(), keys.jwks());
        assert!(verify(&old_token, &restored, &at(T0 + 10)).is_ok());
        assert!(verify(&new_token, &restored, &at(T0 + 10)).is_ok());
        // The restored set signs with the same key.
        assert!(verify(&sign(&restored, &claims(T0 + 6)), &keys, &at(T0 + 10)).is_ok());
        assert!(restored.prune(T0 + 5 + TTL + LEEWAY));
        assert_eq!(restored.kids(), vec![keys.active_kid().to_owned()]);
    }

    #[test]
    fn a_stored_form_that_is_not_exactly_right_is_refused() {
        let mut keys = KeySet::generate(T0).unwrap();
        keys.rotate(T0 + 5, 100).unwrap();
        let good: serde_json::Value = serde_json::from_slice(&keys.to_json()).unwrap();
        let edit = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut doc = good.clone();
            f(&mut doc);
            KeySet::from_json(doc.to_string().as_bytes()).unwrap_err()
        };

        assert!(matches!(KeySet::from_json(b"not json"), Err(KeyError::Json(_))));
        assert!(matches!(edit(&|d| d["keys"][1]["active"] = true.into()), KeyError::ActiveKeys(2)));
        assert!(matches!(edit(&|d| d["keys"][0]["active"] = false.into()), KeyError::ActiveKeys(0)));
        assert!(matches!(edit(&|d| d["keys"] = serde_json::json!([])), KeyError::ActiveKeys(0)));
        assert!(matches!(edit(&|d| d["keys"][1]["kid"] = d["keys"][0]["kid"].clone()), KeyError::DuplicateKid(_)));
        assert!(matches!(edit(&|d| d["keys"][0]["kid"] = "a b".into()), KeyError::InvalidKid(_)));
        assert!(matches!(edit(&|d| d["keys"][0]["kid"] = "".into()), KeyError::InvalidKid(_)));
        assert!(matches!(edit(&|d| d["keys"][0]["pkcs8"] = "***".into()), KeyError::Base64 { .. }));
        assert!(matches!(edit(&|d| d["keys"][0]["pkcs8"] = "AAAA".into()), KeyError::InvalidKey { .. }));
        assert!(matches!(
            edit(&|d| {
                d["keys"][1].as_object_mut().unwrap().remove("keep_until");
            }),
            KeyError::MissingKeepUntil(_)
        ));
        assert!(matches!(edit(&|d| d["keys"][0]["keep_until"] = 1.into()), KeyError::ActiveKeepUntil(_)));
        assert!(matches!(edit(&|d| d["extra"] = 1.into()), KeyError::Json(_)));
        let message = edit(&|d| d["keys"][0]["pkcs8"] = "AAAA".into()).to_string();
        assert!(message.contains(keys.active_kid()), "{message}");
    }

    #[test]
    fn jwks_read_from_the_document_verify_the_key_sets_tokens() {
        let mut keys = KeySet::generate(T0).unwrap();
        let old_token = sign(&keys, &claims(T0));
        keys.rotate(T0 + 5, TTL + LEEWAY).unwrap();
        let new_token = sign(&keys, &claims(T0 + 5));

        // Through text, as a gateway would fetch it.
        let document: serde_json::Value = serde_json::from_str(&keys.jwks().to_string()).unwrap();
        let jwks = Jwks::from_json(&document).unwrap();
        assert_eq!(jwks.len(), 2);
        assert!(!jwks.is_empty());
        assert_eq!(verify(&old_token, &jwks, &at(T0 + 10)).unwrap(), verify(&old_token, &keys, &at(T0 + 10)).unwrap());
        assert!(verify(&new_token, &jwks, &at(T0 + 10)).is_ok());

        let stranger = KeySet::generate(T0).unwrap();
        let token = sign(&stranger, &claims(T0));
        assert_eq!(verify(&token, &jwks, &at(T0 + 10)), Err(TokenError::UnknownKey(stranger.active_kid().to_owned())));
    }

    #[test]
    fn jwks_skips_keys_of_other_kinds_and_fails_on_malformed_ones() {
        let keys = KeySet::generate(T0).unwrap();
        let ours = keys.jwks()["keys"][0].clone();
        let with = |others: Vec<serde_json::Value>| {
            let mut all = others;
            all.push(ours.clone());
            Jwks::from_json(&serde_json::json!({ "keys": all }))
        };

        let skipped = with(vec![
            serde_json::json!({"kty": "RSA", "kid": "rsa", "n": "AQAB", "e": "AQAB"}),
            serde_json::json!({"kty": "OKP", "crv": "X25519", "kid": "x", "x": ours["x"]}),
            serde_json::json!({"kty": "EC", "crv": "P-256", "kid": "ec", "x": "AA", "y": "AA"}),
            serde_json::json!({"kty": "OKP", "crv": "Ed25519", "kid": "enc", "x": ours["x"], "use": "enc"}),
            serde_json::json!({"kty": "OKP", "crv": "Ed25519", "kid": "hs", "x": ours["x"], "alg": "HS256"}),
        ])
        .unwrap();
        assert_eq!(skipped.len(), 1);
        assert!(skipped.public_key(keys.active_kid()).is_some());
        assert!(skipped.public_key("x").is_none() && skipped.public_key("enc").is_none());

        // Without alg and use, an Ed25519 key is still a signing key.
        let bare = with(vec![serde_json::json!({"kty": "OKP", "crv": "Ed25519", "kid": "bare", "x": ours["x"]})]);
        assert_eq!(bare.unwrap().len(), 2);

        for bad in [
            serde_json::json!({}),
            serde_json::json!({"keys": {}}),
            serde_json::json!([]),
            serde_json::json!({"keys": ["a"]}),
            serde_json::json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": ours["x"]}]}),
            serde_json::json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "k", "x": "AAAA"}]}),
            serde_json::json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "k"}]}),
            serde_json::json!({"keys": [ours.clone(), ours.clone()]}),
        ] {
            assert!(matches!(Jwks::from_json(&bad), Err(KeyError::Jwks(_))), "{bad}");
        }
        assert!(Jwks::from_json(&serde_json::json!({"keys": []})).unwrap().is_empty());
    }
}
