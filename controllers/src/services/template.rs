//! A Service's template and the revisions made from it: which revision is the current
//! template's, what a new one is named, and making it (marked, owned and pinned). See "One
//! Revision per template" and "Revisions are marked" in the
//! [services controller's documentation](super).

use std::collections::BTreeMap;
use std::sync::Arc;

use stratus_api::v1::{ObjectMeta, OwnerReference, Revision, RevisionTemplate, Service};
use stratus_api::{API_VERSION, Resource};
use stratus_client::runtime::ObjectRef;
use tracing::info;

use super::digests::{Shared, record_resolution, resolve};
use super::error::{Error, Result};
use crate::events::EventType;

/// The annotation with the Service generation a Revision was made for.
pub use stratus_api::wellknown::annotations::SERVICE_GENERATION as GENERATION_ANNOTATION;
/// The label every Revision (and Instance) carries: the name of its Service.
pub use stratus_api::wellknown::labels::SERVICE as SERVICE_LABEL;

/// Which revision the current template has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Plan {
    /// This revision was made from the current template.
    Current(String),
    /// None was: make one of this name.
    Create(String),
    /// The template names a revision that exists and was made from something else.
    NameTaken { name: String, message: String },
}

/// Decides which revision the current template has, from the Service's revisions (`owned`)
/// and every revision of its namespace (whose names a new revision must not take).
pub(super) fn plan(svc: &Service, owned: &[Arc<Revision>], namespace: &[Arc<Revision>]) -> Plan {
    let template = template_of(svc);
    let service = &svc.meta().name;
    let given = template.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default();
    if !given.is_empty() {
        if let Some(rev) = owned.iter().find(|r| r.meta().name == given) {
            if made_from(rev, &template) {
                return Plan::Current(given);
            }
            let message = format!(
                "revision {given} exists with a different template and revisions cannot change: name the changed \
                 template anew in spec.template.metadata.name, or remove the name to have one generated"
            );
            return Plan::NameTaken { name: given, message };
        }
        if let Some(other) = namespace.iter().find(|r| r.meta().name == given) {
            let owner = other
                .meta()
                .labels
                .get(SERVICE_LABEL)
                .map_or_else(|| "is not a revision of this service".to_string(), |s| format!("belongs to service {s}"));
            let message = format!(
                "revision {given} already exists and {owner}: choose another name in spec.template.metadata.name"
            );
            return Plan::NameTaken { name: given, message };
        }
        return Plan::Create(given);
    }
    // The latest created revision, as the status says and as the revisions themselves say (the
    // status may not have been written after the last creation).
    let recorded = svc.status.as_ref().map(|s| s.latest_created_revision_name.as_str()).unwrap_or_default();
    let newest = owned.iter().max_by(|a, b| order_key(a).cmp(&order_key(b)));
    let current = owned.iter().filter(|r| r.meta().name == recorded).chain(newest).find(|r| made_from(r, &template));
    if let Some(rev) = current {
        return Plan::Current(rev.meta().name.clone());
    }
    // A template change always moves the generation; a revision made for this generation is
    // this template's, whatever the comparison says. This bounds the damage of a comparison
    // that goes wrong (say, a new default): one revision, not one per reconcile.
    if let Some(rev) = newest.filter(|r| order_key(r).0 == svc.meta().generation) {
        return Plan::Current(rev.meta().name.clone());
    }
    let highest = owned.iter().chain(namespace).filter_map(|r| revision_number(service, &r.meta().name)).max();
    Plan::Create(format!("{service}-{:05}", highest.unwrap_or(0) + 1))
}

/// The template of a Service, as stored (defaulted by the API server).
pub(super) fn template_of(svc: &Service) -> RevisionTemplate {
    svc.spec.as_ref().and_then(|s| s.template.clone()).unwrap_or_default()
}

/// Whether `rev` was made from `template`: the same spec, and the same labels and annotations
/// apart from those the platform adds.
fn made_from(rev: &Revision, template: &RevisionTemplate) -> bool {
    let meta = template.metadata.clone().unwrap_or_default();
    let own_labels = |m: &BTreeMap<String, String>| strip(m, &[SERVICE_LABEL]);
    let own_annotations = |m: &BTreeMap<String, String>| strip(m, &[GENERATION_ANNOTATION]);
    rev.spec == template.spec
        && own_labels(&rev.meta().labels) == own_labels(&meta.labels)
        && own_annotations(&rev.meta().annotations) == own_annotations(&meta.annotations)
}

fn strip(map: &BTreeMap<String, String>, keys: &[&str]) -> BTreeMap<String, String> {
    map.iter().filter(|(k, _)| !keys.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// N of a revision named `{service}-N` (digits only).
fn revision_number(service: &str, name: &str) -> Option<u64> {
    let digits = name.strip_prefix(service)?.strip_prefix('-')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Orders revisions by when they were made: the Service generation they were made for, then
/// creation time, then name.
fn order_key(rev: &Revision) -> (i64, i64, String) {
    let meta = rev.meta();
    let generation = meta.annotations.get(GENERATION_ANNOTATION).and_then(|g| g.parse().ok()).unwrap_or(0);
    let created = meta.creation_timestamp.map_or(0, |t| t.seconds);
    (generation, created, meta.name.clone())
}

pub(super) fn sort_newest_first(revisions: &mut [Arc<Revision>]) {
    revisions.sort_by_key(|r| std::cmp::Reverse(order_key(r)));
}

/// Makes revision `name` from the Service's template, pinned to its image's digest when the
/// registry can say it.
pub(super) async fn create_revision(shared: &Shared, svc: &Service, name: &str) -> Result<Revision> {
    let ctx = &shared.ctx;
    let template = template_of(svc);
    let spec = template.spec.clone().unwrap_or_default();
    // Resolved before the revision exists, so that the revision is pinned moments after it
    // appears: the revisions controller holds its instances back until then.
    let resolution = resolve(shared, &spec.containers).await;
    let template_meta = template.metadata.unwrap_or_default();
    let mut labels = template_meta.labels;
    labels.insert(SERVICE_LABEL.into(), svc.meta().name.clone());
    let mut annotations = template_meta.annotations;
    annotations.insert(GENERATION_ANNOTATION.into(), svc.meta().generation.to_string());
    let rev = Revision {
        metadata: Some(ObjectMeta {
            name: name.to_string(),
            namespace: svc.meta().namespace.clone(),
            labels,
            annotations,
            owner_references: vec![controller_ref(svc)],
            ..Default::default()
        }),
        spec: Some(spec),
        ..Default::default()
    };
    let revision = ObjectRef::new(svc.meta().namespace.clone(), name);
    let created = ctx.client.create(rev).await.map_err(|source| Error::CreateRevision { revision, source })?;
    info!(revision = name, "created a revision");
    ctx.events.record(svc, EventType::Normal, "RevisionCreated", &format!("created revision {name}")).await;
    match resolution {
        Some(resolution) => record_resolution(shared, &created, resolution).await,
        None => Ok(created),
    }
}

/// The controller ownerReference of a Service's revisions.
pub(super) fn controller_ref(svc: &Service) -> OwnerReference {
    OwnerReference {
        api_version: API_VERSION.into(),
        kind: Service::INFO.kind.into(),
        name: svc.meta().name.clone(),
        uid: svc.meta().uid.clone(),
        controller: true,
        block_owner_deletion: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::fixtures::{latest, revision_of, service};

    #[test]
    fn a_template_gets_one_revision_and_changes_get_the_next_number() {
        let v1 = service(vec![latest(100)], "", "one");
        assert_eq!(plan(&v1, &[], &[]), Plan::Create("hello-00001".into()));
        let r1 = Arc::new(revision_of(&v1, "hello-00001", 1));
        assert_eq!(
            plan(&v1, std::slice::from_ref(&r1), std::slice::from_ref(&r1)),
            Plan::Current("hello-00001".into())
        );

        let v2 = service(vec![latest(100)], "", "two");
        // Numbers in use by anyone in the namespace are skipped.
        let foreign = Arc::new(Revision {
            metadata: Some(ObjectMeta { name: "hello-00007".into(), ..Default::default() }),
            ..Default::default()
        });
        assert_eq!(plan(&v2, std::slice::from_ref(&r1), &[r1.clone(), foreign]), Plan::Create("hello-00008".into()));
        // A template changed back to an older one makes a new revision, as Knative does.
        let r2 = Arc::new(revision_of(&v2, "hello-00002", 2));
        assert_eq!(plan(&v1, &[r1.clone(), r2.clone()], &[]), Plan::Create("hello-00003".into()));
        // Never two revisions for one generation (the fixture's is 3).
        let r3 = Arc::new(revision_of(&v2, "hello-00003", 3));
        assert_eq!(plan(&v1, &[r1.clone(), r3], &[]), Plan::Current("hello-00003".into()));
        // Labels of the template count; the platform's own do not.
        let mut labelled = v2.clone();
        let meta = labelled.spec.as_mut().and_then(|s| s.template.as_mut()).and_then(|t| t.metadata.as_mut());
        meta.map(|m| m.labels.insert("team".into(), "a".into()));
        assert_eq!(plan(&labelled, &[r1, r2.clone()], &[]), Plan::Create("hello-00003".into()));
        assert!(made_from(&r2, &template_of(&v2)));
    }

    #[test]
    fn a_given_name_is_used_once_per_template() {
        let named = service(vec![latest(100)], "hello-blue", "one");
        assert_eq!(plan(&named, &[], &[]), Plan::Create("hello-blue".into()));
        let blue = Arc::new(revision_of(&named, "hello-blue", 1));
        assert_eq!(plan(&named, std::slice::from_ref(&blue), &[]), Plan::Current("hello-blue".into()));
        let changed = service(vec![latest(100)], "hello-blue", "two");
        let Plan::NameTaken { name, message } =
            plan(&changed, std::slice::from_ref(&blue), std::slice::from_ref(&blue))
        else {
            panic!("a changed template under a used name must be refused");
        };
        assert_eq!(name, "hello-blue");
        assert!(message.contains("hello-blue") && message.contains("spec.template.metadata.name"), "{message}");
        // A name used by another service's revision is refused too.
        let mut theirs = revision_of(&named, "hello-blue", 1);
        theirs.meta_mut().labels.insert(SERVICE_LABEL.into(), "other".into());
        let Plan::NameTaken { message, .. } = plan(&named, &[], &[Arc::new(theirs)]) else { panic!("taken") };
        assert!(message.contains("service other"), "{message}");
    }

    #[test]
    fn revision_numbers_are_read_from_names() {
        assert_eq!(revision_number("hello", "hello-00042"), Some(42));
        assert_eq!(revision_number("hello", "hello-blue"), None);
        assert_eq!(revision_number("hello", "hello-world-00001"), None);
        assert_eq!(revision_number("hello", "hello-"), None);
    }
}
