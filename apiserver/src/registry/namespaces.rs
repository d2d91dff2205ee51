//! The life of namespaces beyond single writes: the `default` namespace exists from the start,
//! and a terminating namespace is emptied (its contents deleted like any other object, their
//! finalizers respected) and then removed, by a sweeper that runs beside the server.

use std::time::Duration;

use stratus_api::Resource;
use stratus_api::identity::DEFAULT_TENANT;
use stratus_api::resource::KINDS;
use stratus_api::v1::{Namespace, NamespaceSpec, Tenant};
use stratus_api::{AnyObject, wellknown};
use stratus_store::ListOptions;

use super::Registry;
use super::objects::{decode, prefix_of};
use crate::auth::Caller;
use crate::error::{ApiResult, Reason};

/// How long a namespace's contents wait between sweeps while it terminates.
const NAMESPACE_SWEEP: Duration = Duration::from_secs(2);

impl Registry {
    /// Makes sure what the platform starts with exists: the tenant `default`, its namespace
    /// `default`, and the namespaces of the platform's own objects (owned by no tenant, so that
    /// only the components and cluster admins reach them).
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
            let ns = decode(ns_info, &kv)?;
            if ns.meta().deletion_timestamp.is_none() {
                continue;
            }
            let name = ns.meta().name.clone();
            let mut empty = true;
            for info in KINDS.iter().filter(|k| k.namespaced) {
                let contents = self.store.list(&prefix_of(info, &name), ListOptions::default()).await?;
                for item in contents.items {
                    empty = false;
                    let obj = decode(info, &item)?;
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
                match self.store.delete(&kv.key, Some(kv.mod_revision)).await {
                    Ok(_) => tracing::info!(namespace = %name, "namespace deleted"),
                    Err(stratus_store::Error::Conflict { .. } | stratus_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }
}
