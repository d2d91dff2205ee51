//! Bounds on what one service and one tenant may hold, checked when an object is written.
//!
//! - **Cluster-wide bounds** on a revision's `minInstances`, `maxInstances` and `initialScale`
//!   (the server's flags): a Service or Revision over them is refused with 422 naming the field.
//! - **Tenant quotas** (`Tenant.spec.quota`): the Services, Instances, vCPU and memory (instance
//!   limits) of all the tenant's namespaces together. A create that would pass one is refused
//!   with 403 naming the quota and the use; so is a revision whose `minInstances` alone would.
//!   The controllers stop there: what admission refuses is never made.
//!
//! Use is counted from the store at each checked write, so two creates racing for the last
//! unit may both pass; the overshoot is at most the writes in flight.

use stratus_api::capacity::{self, Amounts};
use stratus_api::quantity::Quantity;
use stratus_api::v1::{Instance, Namespace, RevisionSpec, Service, Tenant, TenantQuota};
use stratus_api::{AnyObject, Resource};
use stratus_store::ListOptions;

use super::Registry;
use super::objects::prefix_of;
use crate::error::{ApiError, ApiResult, Reason};
use stratus_api::validation::FieldError;

/// The cluster-wide bounds on scaling settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScalingBounds {
    pub max_min_instances: i32,
    pub max_max_instances: i32,
    pub max_initial_scale: i32,
}

impl Default for ScalingBounds {
    fn default() -> ScalingBounds {
        ScalingBounds { max_min_instances: 100, max_max_instances: 1000, max_initial_scale: 100 }
    }
}

/// What a tenant holds.
#[derive(Debug, Default, Clone, Copy)]
struct Usage {
    services: i64,
    instances: i64,
    limits: Amounts,
}

/// A revision spec and the field path it sits at.
fn revision_spec(obj: &AnyObject) -> Option<(&RevisionSpec, &'static str)> {
    match obj {
        AnyObject::Service(s) => s
            .spec
            .as_ref()
            .and_then(|s| s.template.as_ref())
            .and_then(|t| t.spec.as_ref())
            .map(|r| (r, "spec.template.spec")),
        AnyObject::Revision(r) => r.spec.as_ref().map(|r| (r, "spec")),
        _ => None,
    }
}

/// The limits one instance of `spec` holds (every container's).
fn instance_limits(containers: &[stratus_api::v1::Container]) -> Amounts {
    containers
        .iter()
        .filter_map(|c| capacity::limits(c.resources.as_ref()).ok())
        .fold(Amounts::default(), Amounts::plus)
}

fn exceeded(tenant: &str, what: String) -> ApiError {
    ApiError::new(Reason::Forbidden, format!("exceeded quota of tenant {tenant:?}: {what}"))
}

fn amount(q: &str, resource: &str) -> Option<i128> {
    let q = q.parse::<Quantity>().ok()?;
    Some(if resource == capacity::CPU { q.ceil_millis() } else { q.ceil_units() })
}

impl Registry {
    /// Refuses a Service or Revision whose scaling settings pass the cluster's bounds.
    pub(super) fn check_bounds(&self, obj: &AnyObject) -> ApiResult<()> {
        let Some((spec, path)) = revision_spec(obj) else { return Ok(()) };
        let scaling = spec.scaling.clone().unwrap_or_default();
        let b = self.bounds;
        let checks = [
            ("minInstances", scaling.min_instances, b.max_min_instances),
            ("maxInstances", scaling.max_instances, b.max_max_instances),
            ("initialScale", scaling.initial_scale, b.max_initial_scale),
        ];
        let mut causes = Vec::new();
        for (field, value, bound) in checks {
            if let Some(v) = value.filter(|v| *v > bound) {
                causes.push(FieldError::new(
                    format!("{path}.scaling.{field}"),
                    format!("{v} is over this cluster's bound of {bound}"),
                ));
            }
        }
        if causes.is_empty() {
            return Ok(());
        }
        let message = causes.iter().map(|c| format!("{}: {}", c.path, c.message)).collect::<Vec<_>>().join("; ");
        Err(ApiError { reason: Reason::Unprocessable, message, causes })
    }

    /// Refuses writing `obj` when it would take its tenant past the tenant's quota: its minimum
    /// always, and when `creating`, the one more Service or Instance.
    pub(super) async fn check_quota(&self, obj: &AnyObject, creating: bool) -> ApiResult<()> {
        if !matches!(obj, AnyObject::Service(_) | AnyObject::Revision(_) | AnyObject::Instance(_)) {
            return Ok(());
        }
        let Some((tenant, quota)) = self.quota_of(&obj.meta().namespace).await? else { return Ok(()) };
        // A revision that cannot even hold its minimum is refused outright.
        if let Some((spec, path)) = revision_spec(obj) {
            let min = i64::from(spec.scaling.as_ref().and_then(|s| s.min_instances).unwrap_or(0));
            if min > 0 {
                let per = instance_limits(&spec.containers);
                let floor = Amounts {
                    cpu_millis: per.cpu_millis * i128::from(min),
                    memory_bytes: per.memory_bytes * i128::from(min),
                };
                if let Some(max) = quota.max_instances.filter(|m| min > i64::from(*m)) {
                    return Err(exceeded(
                        &tenant,
                        format!("{path}.scaling.minInstances {min} is over the {max} instances allowed"),
                    ));
                }
                self.check_amounts(&tenant, &quota, floor, &format!("{path}.scaling.minInstances {min} needs"))?;
            }
        }
        if !creating {
            return Ok(());
        }
        match obj {
            AnyObject::Service(_) => {
                if let Some(max) = quota.max_services {
                    let usage = self.usage(&tenant).await?;
                    if usage.services + 1 > i64::from(max) {
                        return Err(exceeded(&tenant, format!("at most {max} services, and {} exist", usage.services)));
                    }
                }
            }
            AnyObject::Instance(inst) => {
                let usage = self.usage(&tenant).await?;
                if let Some(max) = quota.max_instances
                    && usage.instances + 1 > i64::from(max)
                {
                    return Err(exceeded(&tenant, format!("at most {max} instances, and {} run", usage.instances)));
                }
                let containers = inst.spec.as_ref().map(|s| s.containers.as_slice()).unwrap_or_default();
                let after = usage.limits.plus(instance_limits(containers));
                self.check_amounts(&tenant, &quota, after, "instances would hold")?;
            }
            _ => {}
        }
        Ok(())
    }

    fn check_amounts(&self, tenant: &str, quota: &TenantQuota, want: Amounts, what: &str) -> ApiResult<()> {
        if let Some(max) = amount(&quota.max_cpu, capacity::CPU).filter(|m| want.cpu_millis > *m) {
            return Err(exceeded(tenant, format!("{what} {}m of CPU, over the {}m allowed", want.cpu_millis, max)));
        }
        if let Some(max) = amount(&quota.max_memory, capacity::MEMORY).filter(|m| want.memory_bytes > *m) {
            return Err(exceeded(
                tenant,
                format!("{what} {} bytes of memory, over the {max} allowed", want.memory_bytes),
            ));
        }
        Ok(())
    }

    /// The tenant owning `namespace` and its quota, when it has one that limits anything.
    async fn quota_of(&self, namespace: &str) -> ApiResult<Option<(String, TenantQuota)>> {
        let tenant = match self.read_cached(&Namespace::INFO, namespace).await? {
            Some(AnyObject::Namespace(ns)) => ns.spec.map(|s| s.tenant).unwrap_or_default(),
            _ => return Ok(None),
        };
        if tenant.is_empty() {
            return Ok(None);
        }
        let quota = match self.read_cached(&Tenant::INFO, &tenant).await? {
            Some(AnyObject::Tenant(t)) => t.spec.and_then(|s| s.quota).unwrap_or_default(),
            _ => return Ok(None),
        };
        let limits = !quota.max_cpu.is_empty()
            || !quota.max_memory.is_empty()
            || quota.max_instances.is_some()
            || quota.max_services.is_some();
        Ok(limits.then_some((tenant, quota)))
    }

    /// What the tenant's namespaces hold now.
    async fn usage(&self, tenant: &str) -> ApiResult<Usage> {
        let mut usage = Usage::default();
        for ns in self.scan(&prefix_of(&Namespace::INFO, "")).await? {
            let AnyObject::Namespace(ns) = self.decode(&Namespace::INFO, &ns)? else { continue };
            if ns.spec.as_ref().map(|s| s.tenant.as_str()) != Some(tenant) {
                continue;
            }
            let name = ns.meta().name.clone();
            usage.services +=
                i64::try_from(self.scan(&prefix_of(&Service::INFO, &name)).await?.len()).unwrap_or(i64::MAX);
            for kv in self.scan(&prefix_of(&Instance::INFO, &name)).await? {
                if let AnyObject::Instance(inst) = self.decode(&Instance::INFO, &kv)? {
                    usage.instances += 1;
                    let containers = inst.spec.as_ref().map(|s| s.containers.as_slice()).unwrap_or_default();
                    usage.limits = usage.limits.plus(instance_limits(containers));
                }
            }
        }
        Ok(usage)
    }

    /// Every key under `prefix`, page by page.
    async fn scan(&self, prefix: &str) -> ApiResult<Vec<stratus_store::KeyValue>> {
        let mut all = Vec::new();
        let mut start_after = None;
        loop {
            let page = self.store.list(prefix, ListOptions { start_after, limit: 1000, revision: None }).await?;
            let more = page.more;
            start_after = page.items.last().map(|kv| kv.key.clone());
            all.extend(page.items);
            if !more {
                return Ok(all);
            }
        }
    }
}
