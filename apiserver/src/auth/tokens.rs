//! The API server's tokens: Ed25519-signed JWTs (`alg: EdDSA`), the keys that sign them, and
//! their rotation.
//!
//! The key set lives in the store under a key outside `/registry/` (no API request reaches it),
//! so that every API server of a cluster signs and verifies with the same keys. One key signs;
//! after a rotation the previous one only verifies, until every token it signed must have
//! expired (the longest a token may last), and is then dropped. Servers re-read the set when it
//! changes in the store and when a token names a key they do not know yet.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use stratus_auth::{Claims, Expect, KeySet, TokenError};
use stratus_store::Store;

use crate::error::{ApiError, ApiResult};

/// Where the key set is stored.
const KEYS_KEY: &str = "/stratus/signing-keys";

/// Clock skew tolerated between the servers that issue and check a token.
const LEEWAY_SECS: i64 = 30;

/// How tokens are issued.
#[derive(Debug, Clone)]
pub struct TokenConfig {
    /// The `iss` claim, and the issuer in the discovery document: the API's URL.
    pub issuer: String,
    /// The `aud` claim every token carries and every check requires.
    pub audience: String,
    /// How long a token from a login lasts.
    pub login_ttl: Duration,
    /// The longest a token may last (and so how long a retired key keeps verifying).
    pub max_ttl: Duration,
    /// How often a new signing key is made.
    pub rotation: Duration,
}

impl Default for TokenConfig {
    fn default() -> TokenConfig {
        TokenConfig {
            issuer: "https://stratus.local".into(),
            audience: "stratus".into(),
            login_ttl: Duration::from_secs(12 * 3600),
            max_ttl: Duration::from_secs(30 * 24 * 3600),
            rotation: Duration::from_secs(24 * 3600),
        }
    }
}

/// A token just issued.
#[derive(Debug, Clone)]
pub struct Issued {
    pub token: String,
    /// Seconds since the epoch.
    pub expires: i64,
    pub ttl: Duration,
}

/// The key set and the rules tokens are issued and checked by. Cheap to share behind an `Arc`.
pub struct Tokens {
    config: TokenConfig,
    store: Arc<dyn Store>,
    /// The key set and the store revision it was read at.
    keys: RwLock<Arc<(KeySet, i64)>>,
    /// When a token naming an unknown key last made this server read the set again: at most once
    /// a second, so that forged `kid`s cannot turn requests into store reads.
    refreshed: std::sync::Mutex<Option<std::time::Instant>>,
    /// Tokens whose signature was verified under the key set of the given store revision: a
    /// client sends the same token with every request, and an Ed25519 verification costs more
    /// than most requests do. Their times are checked again at every use, and a new key set
    /// (a rotation, a retired key dropped) empties it.
    verified: std::sync::Mutex<Verified>,
}

/// See [`Tokens::verified`].
#[derive(Default)]
struct Verified {
    /// The key set's revision the entries were verified under.
    keys_revision: i64,
    claims: std::collections::HashMap<String, Claims>,
}

/// How many verified tokens are remembered; past that the memory starts over.
const VERIFIED_MAX: usize = 16_384;

pub use stratus_api::time::now_seconds as now_secs;

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

fn key_error(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(format!("the signing keys: {e}"))
}

impl Tokens {
    /// Reads the key set from the store, making the first key when there is none.
    pub async fn load(store: Arc<dyn Store>, config: TokenConfig) -> ApiResult<Tokens> {
        let set = match read(&store).await? {
            Some(found) => found,
            None => {
                let set = KeySet::generate(now_secs()).map_err(key_error)?;
                match store.create(KEYS_KEY, set.to_json().into(), 0).await {
                    Ok(rev) => (set, rev),
                    // Another API server made the first key at the same time: use its.
                    Err(stratus_store::Error::AlreadyExists { .. }) => {
                        read(&store).await?.ok_or_else(|| key_error("vanished while being made"))?
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        };
        Ok(Tokens {
            config,
            store,
            keys: RwLock::new(Arc::new(set)),
            refreshed: std::sync::Mutex::new(None),
            verified: Default::default(),
        })
    }

    pub fn config(&self) -> &TokenConfig {
        &self.config
    }

    fn current(&self) -> Arc<(KeySet, i64)> {
        match self.keys.read() {
            Ok(k) => k.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn replace(&self, next: (KeySet, i64)) {
        let mut slot = match self.keys.write() {
            Ok(k) => k,
            Err(poisoned) => poisoned.into_inner(),
        };
        if next.1 > slot.1 {
            *slot = Arc::new(next);
        }
    }

    /// Signs a token for `sub` lasting `ttl` (at most the configured maximum).
    pub fn issue(&self, sub: &str, tenant: &str, uid: &str, ttl: Duration) -> Issued {
        let ttl = ttl.min(self.config.max_ttl);
        let now = now_secs();
        let expires = now.saturating_add(secs(ttl));
        let claims = Claims {
            iss: self.config.issuer.clone(),
            aud: self.config.audience.clone(),
            sub: sub.to_string(),
            exp: expires,
            nbf: now,
            iat: now,
            jti: stratus_auth::random_id(),
            tenant: tenant.to_string(),
            uid: uid.to_string(),
        };
        let token = stratus_auth::sign(&self.current().0, &claims);
        Issued { token, expires, ttl }
    }

    /// Checks a token's signature and claims. A key this server does not know may be one
    /// another API server just made: the set is read again once before the token is refused.
    pub async fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        match self.verify_now(token) {
            Err(TokenError::UnknownKey(kid)) => {
                let due = match self.refreshed.lock() {
                    Ok(mut last) if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) => {
                        *last = Some(std::time::Instant::now());
                        true
                    }
                    _ => false,
                };
                if !due {
                    return Err(TokenError::UnknownKey(kid));
                }
                if let Err(e) = self.refresh().await {
                    tracing::warn!(error = %e, "re-reading the signing keys failed");
                }
                match self.verify_now(token) {
                    Err(TokenError::UnknownKey(_)) => Err(TokenError::UnknownKey(kid)),
                    other => other,
                }
            }
            other => other,
        }
    }

    fn verify_now(&self, token: &str) -> Result<Claims, TokenError> {
        let now = now_secs();
        let keys = self.current();
        let mut verified = self.verified.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if verified.keys_revision != keys.1 {
            *verified = Verified { keys_revision: keys.1, ..Default::default() };
        }
        if let Some(claims) = verified.claims.get(token) {
            // The signature, issuer and audience were checked; the times are checked again,
            // as `stratus_auth::verify` checks them.
            if now >= claims.exp.saturating_add(LEEWAY_SECS) {
                verified.claims.remove(token);
                return Err(TokenError::Expired);
            }
            if claims.nbf > now.saturating_add(LEEWAY_SECS) {
                return Err(TokenError::NotYetValid);
            }
            return Ok(claims.clone());
        }
        drop(verified);
        let expect = Expect { issuer: &self.config.issuer, audience: &self.config.audience, now, leeway: LEEWAY_SECS };
        let claims = stratus_auth::verify(token, &keys.0, &expect)?;
        let mut verified = self.verified.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if verified.keys_revision == keys.1 {
            if verified.claims.len() >= VERIFIED_MAX {
                verified.claims.clear();
            }
            verified.claims.insert(token.to_owned(), claims.clone());
        }
        Ok(claims)
    }

    /// The public keys, as `/.well-known/jwks.json` serves them.
    pub fn jwks(&self) -> serde_json::Value {
        self.current().0.jwks()
    }

    /// Re-reads the key set from the store.
    pub async fn refresh(&self) -> ApiResult<()> {
        if let Some(found) = read(&self.store).await? {
            self.replace(found);
        }
        Ok(())
    }

    /// Makes a new signing key now; the previous one keeps verifying for the longest a token
    /// lasts.
    pub async fn rotate(&self) -> ApiResult<()> {
        self.change(|set, now| set.rotate(now, secs(self.config.max_ttl)).map(|()| true).map_err(key_error)).await
    }

    /// Rotates when the signing key is older than the rotation period, and drops retired keys
    /// past their time; writes only when something changed.
    pub async fn rotate_if_due(&self) -> ApiResult<()> {
        let period = secs(self.config.rotation);
        self.change(|set, now| {
            if now.saturating_sub(set.active_since()) >= period {
                set.rotate(now, secs(self.config.max_ttl)).map_err(key_error)?;
                return Ok(true);
            }
            Ok(set.prune(now))
        })
        .await
    }

    /// Applies `f` to the stored set and writes it back if it says it changed, retrying when
    /// another server wrote meanwhile.
    async fn change(&self, f: impl Fn(&mut KeySet, i64) -> ApiResult<bool>) -> ApiResult<()> {
        for _ in 0..8 {
            let (mut set, rev) = read(&self.store).await?.ok_or_else(|| key_error("missing from the store"))?;
            if !f(&mut set, now_secs())? {
                self.replace((set, rev));
                return Ok(());
            }
            match self.store.update(KEYS_KEY, set.to_json().into(), rev).await {
                Ok(new_rev) => {
                    self.replace((set, new_rev));
                    return Ok(());
                }
                Err(stratus_store::Error::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(key_error("kept changing under this server; try again"))
    }

    /// Rotates on schedule and picks up other servers' rotations, until `stop`.
    pub async fn run_rotation(self: Arc<Tokens>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let every = (self.config.rotation / 10).clamp(Duration::from_secs(1), Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => return,
            }
            if let Err(e) = self.rotate_if_due().await {
                tracing::warn!(error = %e, "rotating the signing keys failed");
            }
        }
    }
}

async fn read(store: &Arc<dyn Store>) -> ApiResult<Option<(KeySet, i64)>> {
    let Some(kv) = store.get(KEYS_KEY).await? else { return Ok(None) };
    let set = KeySet::from_json(&kv.value).map_err(key_error)?;
    Ok(Some((set, kv.mod_revision)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// A verified token is remembered, but never past its key: a key set without the key that
    /// signed it refuses it, as if it had never been seen.
    #[tokio::test]
    async fn remembered_tokens_go_with_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            stratus_store::embedded::EmbeddedStore::open(dir.path().join("data")).await.unwrap();
        let tokens = Tokens::load(store, TokenConfig::default()).await.unwrap();
        let issued = tokens.issue("alice", "acme", "u1", Duration::from_secs(600));
        assert_eq!(tokens.verify(&issued.token).await.unwrap().sub, "alice");
        assert_eq!(tokens.verify(&issued.token).await.unwrap().sub, "alice", "from memory");
        assert_eq!(tokens.verified.lock().unwrap().claims.len(), 1);
        // A forged variant is not the remembered token: its signature is checked, and fails.
        let mut forged = issued.token.clone();
        forged.pop();
        forged.push(if issued.token.ends_with('A') { 'B' } else { 'A' });
        assert!(tokens.verify(&forged).await.is_err());

        let revision = tokens.current().1;
        tokens.replace((KeySet::generate(now_secs()).unwrap(), revision + 1));
        assert!(matches!(tokens.verify_now(&issued.token), Err(TokenError::UnknownKey(_))));
        assert!(tokens.verified.lock().unwrap().claims.is_empty());
    }
}
