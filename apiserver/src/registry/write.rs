//! Writes: create, update, update of the status, delete (or, while finalizers remain, the
//! mark of deletion) and apply, each checked against the resourceVersion the writer read.
//!
//! The rules of a namespace's life that a single write keeps are here too: nothing is created
//! in a namespace that does not exist or is terminating, and deleting a namespace only marks it
//! Terminating and wakes the sweeper (see `namespaces`), which empties it and then removes it.

use std::time::SystemTime;

use stratus_api::v1::{Namespace, NamespaceStatus};
use stratus_api::{AnyObject, KindInfo, Resource, Timestamp};

use super::objects::{conflict, key_of, kind_info, not_found, parse_rv, scoped_namespace};
use super::redact;
use super::{Applied, Registry};
use crate::auth::{Caller, Verb};
use crate::error::{ApiError, ApiResult, Reason};

impl Registry {
    pub async fn create(&self, caller: &Caller, obj: AnyObject) -> ApiResult<AnyObject> {
        let target = Target::of(&obj);
        let report = matches!(obj, AnyObject::UsageReport(_));
        let res = self.create_prepared(caller, obj).await.map(redact);
        if report
            && let Err(e) = &res
            && matches!(e.reason, Reason::Invalid | Reason::Unprocessable)
        {
            self.metrics.usage_report_refused(e.causes.iter().map(|c| c.path.as_str()));
        }
        self.audited(caller, Verb::Create, &target, 201, res)
    }

    /// Records a write's outcome in the audit log and hands it back.
    fn audited<T>(&self, caller: &Caller, verb: Verb, t: &Target, ok: u16, res: ApiResult<T>) -> ApiResult<T> {
        let code = match &res {
            Ok(_) => ok,
            Err(e) => e.reason.http_status(),
        };
        self.audit_request(caller, verb.as_str(), t.kind, &t.namespace, &t.name, code);
        res
    }

    async fn create_prepared(&self, caller: &Caller, mut obj: AnyObject) -> ApiResult<AnyObject> {
        default_tenant(&mut obj, caller);
        // Authorised before it is validated: a caller who may not create here learns nothing of
        // the rules.
        let info = obj.info();
        let (namespace, name) = (scoped_namespace(info, &obj.meta().namespace), obj.meta().name.clone());
        self.authorize(caller, Verb::Create, info, &namespace, &name, Some(&obj)).await?;
        prepare(&mut obj)?;
        self.stamp_report_tenant(&mut obj).await?;
        self.check_bounds(&obj)?;
        self.check_budget_webhook(&obj).await?;
        self.check_quota(&obj, true).await?;
        secure_password(&mut obj, None).await?;
        let (namespace, name) = (obj.meta().namespace.clone(), obj.meta().name.clone());
        if info.namespaced {
            self.check_namespace_open(&namespace).await?;
        }
        let meta = obj.meta_mut();
        meta.uid = uuid::Uuid::new_v4().to_string();
        meta.creation_timestamp = Some(now());
        meta.deletion_timestamp = None;
        meta.generation = 1;
        meta.resource_version.clear();
        // Status is written by controllers through UpdateStatus, never by a create;
        // a namespace starts Active.
        obj.clear_status();
        if let AnyObject::Namespace(ns) = &mut obj {
            ns.status = Some(NamespaceStatus { phase: "Active".into() });
        }
        let key = key_of(info, &namespace, &name);
        let bytes = self.encode(&key, &obj)?;
        let rev = self.store.create(&key, bytes.into(), 0).await.map_err(|e| match e {
            stratus_store::Error::AlreadyExists { .. } => {
                ApiError::new(Reason::AlreadyExists, format!("{} {name:?} already exists", info.plural))
            }
            other => other.into(),
        })?;
        obj.meta_mut().resource_version = rev.to_string();
        self.subjects.forget(&key);
        if info.namespaced {
            // The namespace may have started terminating, and its sweeper may have found it
            // empty, between the check above and this write: undo rather than orphan.
            if let Err(e) = self.check_namespace_open(&namespace).await {
                let _ = self.store.delete(&key, Some(rev)).await;
                return Err(e);
            }
        }
        Ok(obj)
    }

    /// Replaces labels, annotations, finalizers, owner references and spec. The object must
    /// carry the resourceVersion it was read at.
    pub async fn update(&self, caller: &Caller, obj: AnyObject) -> ApiResult<AnyObject> {
        let target = Target::of(&obj);
        let res = self.update_checked(caller, obj).await;
        self.audited(caller, Verb::Update, &target, 200, res)
    }

    async fn update_checked(&self, caller: &Caller, mut obj: AnyObject) -> ApiResult<AnyObject> {
        let info = obj.info();
        let namespace = scoped_namespace(info, &obj.meta().namespace);
        let name = obj.meta().name.clone();
        let stored = self.read(info, &namespace, &name).await?;
        // Left out, the tenant stays what it was (or, for nothing stored, the caller's).
        match &stored {
            Some((current, _)) => {
                default_tenant_to(&mut obj, tenant_of(current));
                keep_report_tenant(&mut obj, current);
            }
            None => default_tenant(&mut obj, caller),
        }
        if let Some((current, _)) = &stored {
            self.authorize(caller, Verb::Update, info, &namespace, &name, Some(current)).await?;
            stratus_api::knative::release_changed_annotations(&mut obj, current);
        }
        // Authorised before it is validated: a caller learns nothing of what it may not see.
        self.authorize(caller, Verb::Update, info, &namespace, &name, Some(&obj)).await?;
        match &stored {
            Some((current, _)) => {
                Registry::check_node_update(caller, current, &obj)?;
                prepare_replacing(&mut obj, current)?;
                validate_update(&obj, current)?;
            }
            None => prepare(&mut obj)?,
        }
        self.check_bounds(&obj)?;
        self.check_budget_webhook(&obj).await?;
        self.check_quota(&obj, false).await?;
        secure_password(&mut obj, stored.as_ref().map(|(c, _)| c)).await?;
        let expected = required_rv(&obj)?;
        let (current, rev) = stored.ok_or_else(|| not_found(info, &namespace, &name))?;
        if rev != expected {
            return Err(conflict(info, &name));
        }
        let next = merge_update(&current, &obj)?;
        self.write_merged(info, &current, next, rev).await.map(redact)
    }

    /// Replaces the status only. The object must carry the resourceVersion it was read at.
    pub async fn update_status(&self, caller: &Caller, obj: AnyObject) -> ApiResult<AnyObject> {
        let target = Target::of(&obj);
        let res = self.update_status_checked(caller, obj).await;
        self.audited(caller, Verb::UpdateStatus, &target, 200, res)
    }

    async fn update_status_checked(&self, caller: &Caller, mut obj: AnyObject) -> ApiResult<AnyObject> {
        obj.set_type_meta();
        let info = obj.info();
        let namespace = scoped_namespace(info, &obj.meta().namespace);
        let name = obj.meta().name.clone();
        let stored = self.read(info, &namespace, &name).await?;
        self.authorize(caller, Verb::UpdateStatus, info, &namespace, &name, stored.as_ref().map(|(c, _)| c)).await?;
        let expected = required_rv(&obj)?;
        let (current, rev) = stored.ok_or_else(|| not_found(info, &namespace, &name))?;
        if rev != expected {
            return Err(conflict(info, &name));
        }
        let mut next = current.clone();
        next.copy_status_from(&obj);
        // The spec is the stored one: rules made after it was stored must not hold its status.
        stratus_api::validation::validate_replacing(&next, &current)
            .map_err(|e| ApiError::invalid(info.kind, &name, e))?;
        if next.status_eq(&current) {
            return Ok(redact(current));
        }
        self.put(info, next, rev).await.map(redact)
    }

    /// Deletes an object, or, while it has finalizers, marks it with a deletionTimestamp.
    /// Deleting a namespace terminates it: everything in it is deleted, then the namespace.
    pub async fn delete(
        &self,
        caller: &Caller,
        kind: &str,
        namespace: &str,
        name: &str,
        precondition: Option<&str>,
    ) -> ApiResult<AnyObject> {
        let res = self.delete_checked(caller, kind, namespace, name, precondition).await;
        let kind = kind_info(kind).map(|i| i.plural).unwrap_or("unknown");
        let target = Target { kind, namespace: namespace.to_string(), name: name.to_string() };
        self.audited(caller, Verb::Delete, &target, 200, res)
    }

    async fn delete_checked(
        &self,
        caller: &Caller,
        kind: &str,
        namespace: &str,
        name: &str,
        precondition: Option<&str>,
    ) -> ApiResult<AnyObject> {
        let info = kind_info(kind)?;
        let namespace = scoped_namespace(info, namespace);
        let stored = match name.is_empty() {
            true => None,
            false => self.read(info, &namespace, name).await?.map(|(o, _)| o),
        };
        self.authorize(caller, Verb::Delete, info, &namespace, name, stored.as_ref()).await?;
        let precondition = precondition.filter(|p| !p.is_empty());
        // Without a precondition a delete means "whatever it is now": a concurrent write
        // (a status update, a lease renewal) is no reason to fail, so read again and retry.
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.delete_once(info, &namespace, name, precondition).await {
                Err(e) if e.reason == Reason::Conflict && precondition.is_none() && attempts < 8 => continue,
                other => return other.map(redact),
            }
        }
    }

    async fn delete_once(
        &self,
        info: &'static KindInfo,
        namespace: &str,
        name: &str,
        precondition: Option<&str>,
    ) -> ApiResult<AnyObject> {
        let namespace = namespace.to_string();
        let (current, rev) =
            self.read(info, &namespace, name).await?.ok_or_else(|| not_found(info, &namespace, name))?;
        if let Some(want) = precondition
            && parse_rv(want)? != rev
        {
            return Err(conflict(info, name));
        }
        if let AnyObject::Namespace(_) = &current {
            if name == stratus_api::DEFAULT_NAMESPACE {
                return Err(ApiError::new(Reason::Forbidden, "namespace \"default\" cannot be deleted"));
            }
            let mut next = current.clone();
            if next.meta().deletion_timestamp.is_none() {
                next.meta_mut().deletion_timestamp = Some(now());
                if let AnyObject::Namespace(ns) = &mut next {
                    ns.status = Some(NamespaceStatus { phase: "Terminating".into() });
                }
                next = self.put(info, next, rev).await?;
            }
            self.namespace_sweep.notify_one();
            return Ok(next);
        }
        if !current.meta().finalizers.is_empty() {
            if current.meta().deletion_timestamp.is_some() {
                return Ok(current);
            }
            let mut next = current.clone();
            next.meta_mut().deletion_timestamp = Some(now());
            return self.put(info, next, rev).await;
        }
        let key = key_of(info, &namespace, name);
        self.subjects.forget(&key);
        let deleted = self.store.delete(&key, Some(rev)).await;
        self.subjects.forget(&key);
        let (_, deleted_at) = deleted.map_err(|e| match e {
            stratus_store::Error::Conflict { .. } => conflict(info, name),
            stratus_store::Error::NotFound { .. } => not_found(info, &namespace, name),
            other => other.into(),
        })?;
        let mut gone = current;
        gone.meta_mut().resource_version = deleted_at.to_string();
        Ok(gone)
    }

    /// Creates the object, or brings an existing one's labels, annotations and spec to what is
    /// given (keeping status, and finalizers and owners unless given). Retries on conflicts
    /// with concurrent writers, since apply carries no resourceVersion of its own.
    pub async fn apply(&self, caller: &Caller, obj: AnyObject) -> ApiResult<(AnyObject, Applied)> {
        let target = Target::of(&obj);
        let res = self.apply_prepared(caller, obj).await.map(|(obj, applied)| (redact(obj), applied));
        self.audited(caller, Verb::Apply, &target, 200, res)
    }

    async fn apply_prepared(&self, caller: &Caller, mut obj: AnyObject) -> ApiResult<(AnyObject, Applied)> {
        let raw = obj.clone();
        default_tenant(&mut obj, caller);
        let info = obj.info();
        let (namespace, name) = (scoped_namespace(info, &obj.meta().namespace), obj.meta().name.clone());
        self.authorize(caller, Verb::Apply, info, &namespace, &name, Some(&obj)).await?;
        if let Err(e) = prepare(&mut obj) {
            // A stored object may excuse what it already had (a securityContext from before the
            // Pod Security rules): the loop validates against it.
            if name.is_empty() || self.read(info, &namespace, &name).await?.is_none() {
                return Err(e);
            }
        }
        for _ in 0..8 {
            let Some((current, rev)) = self.read(info, &namespace, &name).await? else {
                match self.create_prepared(caller, raw.clone()).await {
                    Ok(created) => return Ok((created, Applied::Created)),
                    Err(e) if e.reason == Reason::AlreadyExists => continue,
                    Err(e) => return Err(e),
                }
            };
            if current.meta().deletion_timestamp.is_some() {
                return Err(ApiError::new(
                    Reason::Conflict,
                    format!("{} {name:?} is being deleted; apply again once it is gone", info.singular),
                ));
            }
            self.authorize(caller, Verb::Apply, info, &namespace, &name, Some(&current)).await?;
            let mut desired = raw.clone();
            default_tenant_to(&mut desired, tenant_of(&current));
            keep_report_tenant(&mut desired, &current);
            stratus_api::knative::release_changed_annotations(&mut desired, &current);
            prepare_replacing(&mut desired, &current)?;
            validate_update(&desired, &current)?;
            self.check_bounds(&desired)?;
            self.check_budget_webhook(&desired).await?;
            self.check_quota(&desired, false).await?;
            secure_password(&mut desired, Some(&current)).await?;
            let (given, have) = (desired.meta_mut(), current.meta());
            if given.finalizers.is_empty() {
                given.finalizers = have.finalizers.clone();
            }
            if given.owner_references.is_empty() {
                given.owner_references = have.owner_references.clone();
            }
            let next = merge_update(&current, &desired)?;
            if next == current {
                return Ok((current, Applied::Unchanged));
            }
            match self.write_merged(info, &current, next, rev).await {
                Ok(o) => return Ok((o, Applied::Configured)),
                Err(e) if e.reason == Reason::Conflict => continue,
                Err(e) => return Err(e),
            }
        }
        Err(ApiError::new(
            Reason::Conflict,
            format!("{} {name:?} keeps changing concurrently; try again", info.singular),
        ))
    }

    /// A UsageReport belongs to the tenant of the namespace it reports on, whatever its sender
    /// wrote: `spec.tenant` is set here from the Namespace. Usage reported after its namespace
    /// was deleted (or of an earlier namespace of the same name: one created after the report's
    /// window ended) goes to the tenant recorded when that namespace was removed; a report on a
    /// namespace never seen is refused (422, naming `spec.namespace`).
    async fn stamp_report_tenant(&self, obj: &mut AnyObject) -> ApiResult<()> {
        let AnyObject::UsageReport(report) = obj else { return Ok(()) };
        let name = report.meta().name.clone();
        let spec = report.spec.get_or_insert_default();
        let window_end = stratus_api::billing::millis(spec.window_end.as_ref());
        let (current, earlier) = match self.read_cached(&<Namespace as Resource>::INFO, &spec.namespace).await? {
            Some(AnyObject::Namespace(ns)) => {
                let created = stratus_api::billing::millis(ns.meta().creation_timestamp.as_ref());
                let earlier = matches!((created, window_end), (Some(c), Some(w)) if c >= w);
                (Some(ns.spec.map(|s| s.tenant).unwrap_or_default()), earlier)
            }
            _ => (None, true),
        };
        let tenant = match (current, earlier) {
            (Some(tenant), false) => Some(tenant),
            (current, _) => self.retained_tenant(&spec.namespace).await?.or(current),
        };
        match tenant {
            Some(tenant) => {
                spec.tenant = tenant;
                Ok(())
            }
            None => Err(ApiError::invalid(
                "UsageReport",
                &name,
                stratus_api::validation::FieldError::new(
                    "spec.namespace",
                    format!("namespace {:?} does not exist", spec.namespace),
                )
                .into(),
            )),
        }
    }

    /// A Budget's webhook is signed with a key from a Secret of the Budget's own tenant: the
    /// namespace of `spec.webhookSecretRef` must belong to `spec.tenant` (else a tenant could
    /// have another tenant's key sign a body of its choosing). A missing namespace and another
    /// tenant's answer alike (422), so nothing is learnt of which namespaces exist.
    async fn check_budget_webhook(&self, obj: &AnyObject) -> ApiResult<()> {
        let AnyObject::Budget(budget) = obj else { return Ok(()) };
        let Some(spec) = &budget.spec else { return Ok(()) };
        let Some(secret) = &spec.webhook_secret_ref else { return Ok(()) };
        let owner = match self.read_cached(&<Namespace as Resource>::INFO, &secret.namespace).await? {
            Some(AnyObject::Namespace(ns)) => ns.spec.map(|s| s.tenant).unwrap_or_default(),
            _ => String::new(),
        };
        if !owner.is_empty() && owner == spec.tenant {
            return Ok(());
        }
        Err(ApiError::invalid(
            "Budget",
            &budget.meta().name,
            stratus_api::validation::FieldError::new(
                "spec.webhookSecretRef.namespace",
                format!(
                    "namespace {:?} is not tenant {:?}'s: a budget's webhook is signed with a key of its own tenant",
                    secret.namespace, spec.tenant
                ),
            )
            .into(),
        ))
    }

    async fn check_namespace_open(&self, namespace: &str) -> ApiResult<()> {
        let info = &<Namespace as Resource>::INFO;
        match self.read(info, "", namespace).await? {
            None => Err(ApiError::new(Reason::NotFound, format!("namespace {namespace:?} not found"))),
            Some((ns, _)) if ns.meta().deletion_timestamp.is_some() => Err(ApiError::new(
                Reason::Forbidden,
                format!("namespace {namespace:?} is being terminated: nothing new can be created in it"),
            )),
            Some(_) => Ok(()),
        }
    }

    /// Writes `next` in place of `current` (read at `rev`): unchanged is a no-op, and a deleted
    /// object whose last finalizer went away is removed.
    async fn write_merged(
        &self,
        info: &'static KindInfo,
        current: &AnyObject,
        next: AnyObject,
        rev: i64,
    ) -> ApiResult<AnyObject> {
        if next == *current {
            return Ok(next);
        }
        // A terminating namespace is removed only by the sweeper, once it is empty.
        let is_namespace = matches!(next, AnyObject::Namespace(_));
        if next.meta().deletion_timestamp.is_some() && next.meta().finalizers.is_empty() && !is_namespace {
            let (namespace, name) = (next.meta().namespace.clone(), next.meta().name.clone());
            let key = key_of(info, &namespace, &name);
            self.subjects.forget(&key);
            let deleted = self.store.delete(&key, Some(rev)).await;
            self.subjects.forget(&key);
            let (_, deleted_at) = deleted.map_err(|e| match e {
                stratus_store::Error::Conflict { .. } => conflict(info, &name),
                stratus_store::Error::NotFound { .. } => not_found(info, &namespace, &name),
                other => other.into(),
            })?;
            let mut gone = next;
            gone.meta_mut().resource_version = deleted_at.to_string();
            return Ok(gone);
        }
        self.put(info, next, rev).await
    }

    async fn put(&self, info: &'static KindInfo, mut obj: AnyObject, rev: i64) -> ApiResult<AnyObject> {
        let (namespace, name) = (obj.meta().namespace.clone(), obj.meta().name.clone());
        obj.meta_mut().resource_version.clear();
        let key = key_of(info, &namespace, &name);
        self.subjects.forget(&key);
        let bytes = self.encode(&key, &obj)?;
        let updated = self.store.update(&key, bytes.into(), rev).await;
        self.subjects.forget(&key);
        let new_rev = updated.map_err(|e| match e {
            stratus_store::Error::Conflict { .. } => conflict(info, &name),
            stratus_store::Error::NotFound { .. } => not_found(info, &namespace, &name),
            other => other.into(),
        })?;
        obj.meta_mut().resource_version = new_rev.to_string();
        Ok(obj)
    }
}

/// Defaults and validates a client's object, with errors naming the fields.
/// The rules of a change to what is stored: breaking one is 422, as for any change that cannot
/// be made to this object (the fields named).
fn validate_update(obj: &AnyObject, stored: &AnyObject) -> ApiResult<()> {
    stratus_api::validation::validate_update(obj, stored).map_err(|e| {
        let invalid = ApiError::invalid(obj.info().kind, &obj.meta().name, e);
        ApiError { reason: Reason::Unprocessable, ..invalid }
    })
}

fn prepare(obj: &mut AnyObject) -> ApiResult<()> {
    stratus_api::prepare(obj).map_err(|e| ApiError::invalid(obj.info().kind, &obj.meta().name, e))
}

/// [`prepare`] for an object replacing `stored` (see [`stratus_api::prepare_replacing`]).
fn prepare_replacing(obj: &mut AnyObject, stored: &AnyObject) -> ApiResult<()> {
    stratus_api::prepare_replacing(obj, stored).map_err(|e| ApiError::invalid(obj.info().kind, &obj.meta().name, e))
}

/// The stored object after an update of `current` to `given`: what a client may change
/// (labels, annotations, finalizers, owners, spec) from `given`, the rest from `current`.
fn merge_update(current: &AnyObject, given: &AnyObject) -> ApiResult<AnyObject> {
    let info = current.info();
    let (have, want) = (current.meta(), given.meta());
    if !want.uid.is_empty() && want.uid != have.uid {
        return Err(ApiError::new(
            Reason::Conflict,
            format!(
                "metadata.uid: {:?} does not match the stored object's {:?}; it may have been deleted and recreated",
                want.uid, have.uid
            ),
        ));
    }
    if let AnyObject::Revision(_) = current
        && !current.spec_eq(given)
    {
        return Err(ApiError::new(
            Reason::Unprocessable,
            "spec: a Revision is immutable; change the Service's template to make a new one",
        ));
    }
    if let AnyObject::UsageReport(_) = current
        && !current.spec_eq(given)
    {
        return Err(ApiError::new(
            Reason::Unprocessable,
            "spec: a UsageReport is immutable: usage once reported is corrected by a new report, not an edit",
        ));
    }
    let mut next = current.clone();
    next.meta_mut().resource_version.clear();
    let meta = next.meta_mut();
    meta.labels = want.labels.clone();
    meta.annotations = want.annotations.clone();
    meta.finalizers = want.finalizers.clone();
    meta.owner_references = want.owner_references.clone();
    if !current.spec_eq(given) {
        next.copy_spec_from(given);
        next.meta_mut().generation += 1;
    }
    stratus_api::validation::validate_replacing(&next, current)
        .map_err(|e| ApiError::invalid(info.kind, &next.meta().name, e))?;
    let mut current_plain = current.clone();
    current_plain.meta_mut().resource_version.clear();
    if next == current_plain {
        return Ok(current.clone());
    }
    Ok(next)
}

/// What a write names, for the audit log.
struct Target {
    kind: &'static str,
    namespace: String,
    name: String,
}

impl Target {
    fn of(obj: &AnyObject) -> Target {
        let info = obj.info();
        Target {
            kind: info.plural,
            namespace: scoped_namespace(info, &obj.meta().namespace),
            name: obj.meta().name.clone(),
        }
    }
}

/// A Namespace, User or Budget created without a tenant belongs to its creator's tenant.
fn default_tenant(obj: &mut AnyObject, caller: &Caller) {
    default_tenant_to(obj, &caller.tenant);
}

/// A Namespace, User or Budget written without a tenant keeps `tenant`.
fn default_tenant_to(obj: &mut AnyObject, default: &str) {
    if default.is_empty() {
        return;
    }
    let tenant = match obj {
        AnyObject::Namespace(ns) => &mut ns.spec.get_or_insert_default().tenant,
        AnyObject::User(u) => &mut u.spec.get_or_insert_default().tenant,
        AnyObject::Budget(b) => &mut b.spec.get_or_insert_default().tenant,
        _ => return,
    };
    if tenant.is_empty() {
        *tenant = default.to_string();
    }
}

/// The tenant of a stored Namespace, User or Budget.
fn tenant_of(obj: &AnyObject) -> &str {
    match obj {
        AnyObject::Namespace(ns) => ns.spec.as_ref().map(|s| s.tenant.as_str()).unwrap_or(""),
        AnyObject::User(u) => u.spec.as_ref().map(|s| s.tenant.as_str()).unwrap_or(""),
        AnyObject::Budget(b) => b.spec.as_ref().map(|s| s.tenant.as_str()).unwrap_or(""),
        _ => "",
    }
}

/// A UsageReport written again keeps the tenant the API server stamped on it: what a writer
/// sends there is not a change of the (immutable) spec.
fn keep_report_tenant(obj: &mut AnyObject, stored: &AnyObject) {
    if let (AnyObject::UsageReport(new), AnyObject::UsageReport(old)) = (obj, stored)
        && let Some(spec) = new.spec.as_mut()
    {
        spec.tenant = old.spec.as_ref().map(|s| s.tenant.clone()).unwrap_or_default();
    }
}

/// A User's password becomes an argon2id hash before anything is stored; without a new
/// password the stored hash stays. The hash is the server's to write: a client that sends one
/// is refused.
async fn secure_password(obj: &mut AnyObject, current: Option<&AnyObject>) -> ApiResult<()> {
    let AnyObject::User(user) = obj else { return Ok(()) };
    let name = user.meta().name.clone();
    let spec = user.spec.get_or_insert_default();
    if !spec.password_hash.is_empty() {
        let err = stratus_api::validation::FieldError::new(
            "spec.passwordHash",
            "is set by the server from spec.password and cannot be given",
        );
        return Err(ApiError::invalid("User", &name, err.into()));
    }
    if spec.password.is_empty() {
        if let Some(AnyObject::User(stored)) = current {
            spec.password_hash = stored.spec.as_ref().map(|s| s.password_hash.clone()).unwrap_or_default();
        }
        return Ok(());
    }
    let password = std::mem::take(&mut spec.password);
    let hashed = tokio::task::spawn_blocking(move || stratus_auth::password::hash(&password))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    spec.password_hash = hashed;
    Ok(())
}

fn required_rv(obj: &AnyObject) -> ApiResult<i64> {
    let rv = &obj.meta().resource_version;
    if rv.is_empty() {
        return Err(ApiError::invalid(
            obj.info().kind,
            &obj.meta().name,
            stratus_api::validation::FieldError::new(
                "metadata.resourceVersion",
                "is required for an update: send back the version you read",
            )
            .into(),
        ));
    }
    parse_rv(rv)
}

fn now() -> Timestamp {
    let secs = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    Timestamp { seconds: i64::try_from(secs).unwrap_or(i64::MAX), nanos: 0 }
}
