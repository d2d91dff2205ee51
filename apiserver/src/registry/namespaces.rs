//! The life of namespaces beyond single writes: the `default` namespace exists from the start,
//! and a terminating namespace is emptied (its contents deleted like any other object, their
//! finalizers respected) and then removed, by a sweeper that runs beside the server.

use std::time::Duration;

use stratus_api::Resource;
use stratus_api::identity::DEFAULT_TENANT;
use stratus_api::resource::KINDS;
use stratus_api::v1::{Namespace, NamespaceSpec, PriceList, Tenant};
use stratus_api::{AnyObject, wellknown};
use stratus_store::ListOptions;

use super::Registry;
use super::objects::prefix_of;
use crate::auth::Caller;
use crate::error::{ApiResult, Reason};

/// How long a namespace's contents wait between sweeps while it terminates.
const NAMESPACE_SWEEP: Duration = Duration::from_secs(2);

/// Where the tenant of a deleted namespace is kept (outside the API's objects, which no list or
/// watch of a kind reaches), so that usage reported after the namespace is gone (an agent's
/// last window, a spool that waited out an outage) is still billed to whom it belongs. One
/// small record per namespace name ever deleted; a later deletion of the same name replaces it.
pub(crate) fn retained_tenant_key(namespace: &str) -> String {
    format!("/stratus-retained/namespace-tenants/{namespace}")
}

impl Registry {
    /// Makes sure what the platform starts with exists: the tenant `default`, its namespace
    /// `default`, the namespaces of the platform's own objects (owned by no tenant, so that
    /// only the components and cluster admins reach them), and the PriceList `default`.
    pub async fn bootstrap(&self) -> ApiResult<()> {
        let mut tenant = Tenant::default();
        tenant.meta_mut().name = DEFAULT_TENANT.to_string();
        self.create_missing(tenant.into_any()).await?;
        let namespaces = [
            (stratus_api::DEFAULT_NAMESPACE, DEFAULT_TENANT),
            (wellknown::namespaces::SYSTEM, ""),
            (wellknown::namespaces::NODE_LEASE, ""),
        ];
        for (name, tenant) in namespaces {
            let mut ns = Namespace::default();
            ns.meta_mut().name = name.to_string();
            ns.spec = Some(NamespaceSpec { tenant: tenant.to_string() });
            self.create_missing(ns.into_any()).await?;
        }
        // The prices billing starts with; an existing PriceList (an operator's) is kept.
        let mut prices = PriceList { spec: Some(stratus_api::billing::default_prices()), ..Default::default() };
        prices.meta_mut().name = stratus_api::billing::DEFAULT_PRICE_LIST.to_string();
        self.create_missing(prices.into_any()).await?;
        Ok(())
    }

    /// Creates `obj` as the API server unless an object of its name exists.
    pub(crate) async fn create_missing(&self, obj: AnyObject) -> ApiResult<()> {
        match self.create(&Caller::system(), obj).await {
            Ok(_) => Ok(()),
            Err(e) if e.reason == Reason::AlreadyExists => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Deletes the contents of terminating namespaces, and the namespaces once empty. Runs
    /// until `shutdown`; woken at once by a namespace delete, and every few seconds for
    /// contents whose finalizers were removed meanwhile.
    pub async fn run_namespace_finalizer(self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            if let Err(e) = self.sweep_namespaces().await {
                tracing::warn!(error = %e, "sweeping terminating namespaces failed");
            }
            tokio::select! {
                _ = self.namespace_sweep.notified() => {}
                _ = tokio::time::sleep(NAMESPACE_SWEEP) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    async fn sweep_namespaces(&self) -> ApiResult<()> {
        let system = Caller::system();
        let ns_info = &<Namespace as Resource>::INFO;
        let namespaces = self.store.list(&prefix_of(ns_info, ""), ListOptions::default()).await?;
        for kv in namespaces.items {
            let ns = self.decode(ns_info, &kv)?;
            if ns.meta().deletion_timestamp.is_none() {
                continue;
            }
            let name = ns.meta().name.clone();
            let mut empty = true;
            for info in KINDS.iter().filter(|k| k.namespaced) {
                let contents = self.store.list(&prefix_of(info, &name), ListOptions::default()).await?;
                for item in contents.items {
                    empty = false;
                    let obj = self.decode(info, &item)?;
                    if obj.meta().deletion_timestamp.is_none() {
                        match self.delete(&system, info.kind, &name, &obj.meta().name, None).await {
                            Ok(_) => {}
                            Err(e) if matches!(e.reason, Reason::NotFound | Reason::Conflict) => {}
                            Err(e) => return Err(e),
                        }
                    }
                }
            }
            if empty && ns.meta().finalizers.is_empty() {
                let tenant = match &ns {
                    AnyObject::Namespace(n) => n.spec.as_ref().map(|s| s.tenant.clone()).unwrap_or_default(),
                    _ => String::new(),
                };
                self.retain_tenant(&name, &tenant).await?;
                match self.store.delete(&kv.key, Some(kv.mod_revision)).await {
                    Ok(_) => tracing::info!(namespace = %name, "namespace deleted"),
                    Err(stratus_store::Error::Conflict { .. } | stratus_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }

    /// Records that namespace `name` belonged to `tenant`, before it is removed.
    async fn retain_tenant(&self, name: &str, tenant: &str) -> ApiResult<()> {
        let key = retained_tenant_key(name);
        let value = bytes::Bytes::from(tenant.to_string());
        match self.store.get(&key).await? {
            Some(kv) if kv.value == value => Ok(()),
            Some(kv) => self.store.update(&key, value, kv.mod_revision).await.map(drop).map_err(Into::into),
            None => match self.store.create(&key, value, 0).await {
                Ok(_) | Err(stratus_store::Error::AlreadyExists { .. }) => Ok(()),
                Err(e) => Err(e.into()),
            },
        }
    }

    /// The tenant a deleted namespace `name` last belonged to, if one was recorded.
    pub(crate) async fn retained_tenant(&self, name: &str) -> ApiResult<Option<String>> {
        let kv = self.store.get(&retained_tenant_key(name)).await?;
        Ok(kv.map(|kv| String::from_utf8_lossy(&kv.value).into_owned()))
    }
}
