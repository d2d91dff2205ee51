//! Where objects live in the store, and how they are written and read back: each object under
//! `/registry/{plural}/[{namespace}/]{name}`, encoded as protobuf (a Secret's encoding sealed
//! with the encryption keys, see [`crate::encryption`]), its resourceVersion the store's
//! modification revision. Also the errors that name an object, shared by reads and writes.

use stratus_api::resource::lookup_kind;
use stratus_api::{AnyObject, KindInfo};
use stratus_store::KeyValue;

use super::Registry;
use crate::error::{ApiError, ApiResult, Reason};

/// The key prefix under which every object is stored.
const ROOT: &str = "/registry/";

pub(super) fn kind_info(kind: &str) -> ApiResult<&'static KindInfo> {
    lookup_kind(kind)
        .ok_or_else(|| ApiError::new(Reason::NotFound, format!("the server doesn't have a resource type {kind:?}")))
}

pub(super) fn scoped_namespace(info: &KindInfo, namespace: &str) -> String {
    match (info.namespaced, namespace.is_empty()) {
        (false, _) => String::new(),
        (true, true) => stratus_api::DEFAULT_NAMESPACE.to_string(),
        (true, false) => namespace.to_string(),
    }
}

pub(super) fn key_of(info: &KindInfo, namespace: &str, name: &str) -> String {
    if info.namespaced {
        format!("{ROOT}{}/{namespace}/{name}", info.plural)
    } else {
        format!("{ROOT}{}/{name}", info.plural)
    }
}

pub(super) fn prefix_of(info: &KindInfo, namespace: &str) -> String {
    if info.namespaced && !namespace.is_empty() {
        format!("{ROOT}{}/{namespace}/", info.plural)
    } else {
        format!("{ROOT}{}/", info.plural)
    }
}

impl Registry {
    /// The object stored in `kv`, with its resourceVersion; a Secret is opened first.
    pub(super) fn decode(&self, info: &KindInfo, kv: &KeyValue) -> ApiResult<AnyObject> {
        // Every read of the kind that meets such an object fails until it is repaired or
        // deleted in the store: the log names its key for the operator. The client's error
        // names only the kind, as the read may be one whose caller may not see the object (a
        // quota's count of every namespace, a watch of other nodes' instances).
        let unreadable = |what: &str, e: String| {
            tracing::error!(key = %kv.key, revision = kv.mod_revision, error = %e, "a stored object cannot be {what}");
            ApiError::internal(format!(
                "a stored {} cannot be {what} ({e}); the API server's log names its key",
                info.kind
            ))
        };
        let mut obj = match info.kind {
            SECRET => {
                let plain = self
                    .keys()?
                    .open(kv.key.as_bytes(), &kv.value)
                    .map_err(|e| unreadable("decrypted", e.to_string()))?;
                AnyObject::decode(info, &plain)
            }
            _ => AnyObject::decode(info, &kv.value),
        }
        .map_err(|e| unreadable("decoded", e.to_string()))?;
        obj.meta_mut().resource_version = kv.mod_revision.to_string();
        Ok(obj)
    }

    /// What is stored for `obj` under `key`: its protobuf encoding, sealed for a Secret.
    pub(super) fn encode(&self, key: &str, obj: &AnyObject) -> ApiResult<Vec<u8>> {
        let bytes = obj.encode_to_vec();
        match obj {
            AnyObject::Secret(_) => self
                .keys()?
                .seal(key.as_bytes(), &bytes)
                .map_err(|e| ApiError::internal(format!("encrypting secret {}: {e}", obj.meta().name))),
            _ => Ok(bytes),
        }
    }

    pub(super) fn keys(&self) -> ApiResult<&crate::encryption::Keys> {
        self.encryption.as_deref().ok_or_else(|| {
            ApiError::new(
                Reason::ServiceUnavailable,
                "this API server has no encryption key for secrets: start it with --encryption-key-file",
            )
        })
    }
}

/// The kind whose objects are encrypted at rest.
const SECRET: &str = "Secret";

pub(super) fn parse_rv(rv: &str) -> ApiResult<i64> {
    let digits = stratus_api::patterns::is_resource_version(rv);
    rv.parse::<i64>().ok().filter(|_| digits).ok_or_else(|| {
        ApiError::new(Reason::BadRequest, format!("metadata.resourceVersion: {rv:?} is not a resource version"))
    })
}

pub(super) fn not_found(info: &KindInfo, namespace: &str, name: &str) -> ApiError {
    let msg = if info.namespaced {
        format!("{} {name:?} not found in namespace {namespace:?}", info.plural)
    } else {
        format!("{} {name:?} not found", info.plural)
    };
    ApiError::new(Reason::NotFound, msg)
}

pub(super) fn conflict(info: &KindInfo, name: &str) -> ApiError {
    ApiError::new(
        Reason::Conflict,
        format!(
            "operation cannot be fulfilled on {} {name:?}: the object has been modified; read it again and retry",
            info.plural
        ),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use bytes::Bytes;
    use stratus_api::Resource;
    use stratus_api::v1::Namespace;

    use super::*;
    use crate::auth::Caller;

    /// An object whose stored bytes do not decode fails the reads that meet it with an error
    /// that names its kind (the log names its key), and the objects beside it are still there
    /// to read one by one.
    #[tokio::test]
    async fn an_undecodable_object_fails_reads_with_an_error_naming_its_kind() {
        let (_dir, _closing, registry) = Registry::for_test().await;
        let caller = Caller::system();
        let mut good = Namespace::default();
        good.meta_mut().name = "good".into();
        registry.create(&caller, good.into_any()).await.unwrap();
        let info = kind_info(Namespace::INFO.kind).unwrap();
        let key = key_of(info, "", "broken");
        registry.store.create(&key, Bytes::from_static(b"\xff\xff not protobuf"), 0).await.unwrap();

        let got = registry.get(&caller, Namespace::INFO.kind, "", "broken").await.unwrap_err();
        assert!(got.to_string().contains("a stored Namespace cannot be decoded"), "{got}");
        let Err(listed) = registry.list(&caller, Namespace::INFO.kind, &Default::default(), 0, "").await else {
            panic!("a list that meets the object fails");
        };
        assert!(listed.to_string().contains("a stored Namespace cannot be decoded"), "{listed}");
        registry.get(&caller, Namespace::INFO.kind, "", "good").await.unwrap();
    }
}
