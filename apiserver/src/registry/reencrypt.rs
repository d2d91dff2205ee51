//! Re-encryption: every Secret sealed with a key other than the primary is sealed again with
//! the primary, so that older keys can leave the key file. An API server does this when it
//! starts (see [`crate::ApiServer::with_config`]); it is safe beside other servers, since each
//! rewrite is guarded by the revision it read.

use stratus_api::Resource;
use stratus_api::v1::Secret;
use stratus_store::{KeyValue, ListOptions};

use super::Registry;
use super::objects::prefix_of;
use crate::error::{ApiError, ApiResult};

/// How many times one Secret is read again when a concurrent write changed it.
const ATTEMPTS: usize = 8;

impl Registry {
    /// Seals every Secret that another key sealed with the primary key and returns how many
    /// were rewritten. A Secret no key of the file opens is an error naming it; the others are
    /// rewritten first.
    pub async fn reencrypt_secrets(&self) -> ApiResult<usize> {
        let keys = self.keys()?;
        let primary = keys.primary().to_string();
        let prefix = prefix_of(&Secret::INFO, "");
        let (mut rewritten, mut failed) = (0, Vec::new());
        let mut start_after = None;
        loop {
            let page = self.store.list(&prefix, ListOptions { start_after, limit: 500, revision: None }).await?;
            for kv in &page.items {
                match self.reencrypt_one(kv.clone(), &primary).await {
                    Ok(true) => rewritten += 1,
                    Ok(false) => {}
                    Err(e) => failed.push(format!("{}: {}", kv.key.trim_start_matches(&prefix), e.message)),
                }
            }
            if !page.more {
                break;
            }
            start_after = page.items.last().map(|kv| kv.key.clone());
        }
        if failed.is_empty() {
            Ok(rewritten)
        } else {
            Err(ApiError::internal(format!(
                "re-encrypted {rewritten} secrets; {} could not be: {}",
                failed.len(),
                failed.join("; ")
            )))
        }
    }

    /// Seals one stored Secret with `primary` unless it is already; whether it was rewritten.
    async fn reencrypt_one(&self, mut kv: KeyValue, primary: &str) -> ApiResult<bool> {
        for _ in 0..ATTEMPTS {
            if crate::encryption::key_name(&kv.value) == Some(primary) {
                return Ok(false);
            }
            let keys = self.keys()?;
            let plain = keys.open(kv.key.as_bytes(), &kv.value).map_err(ApiError::internal)?;
            let sealed = keys.seal(kv.key.as_bytes(), &plain).map_err(ApiError::internal)?;
            match self.store.update(&kv.key, sealed.into(), kv.mod_revision).await {
                Ok(_) => return Ok(true),
                Err(stratus_store::Error::Conflict { .. }) => match self.store.get(&kv.key).await? {
                    Some(now) => kv = now,
                    None => return Ok(false),
                },
                Err(stratus_store::Error::NotFound { .. }) => return Ok(false),
                Err(e) => return Err(e.into()),
            }
        }
        Err(ApiError::internal("it keeps changing concurrently"))
    }
}
