//! Digest resolution and its recording: a revision's serving image is pinned to the digest the
//! registry names, `status.imageDigest` and condition [`IMAGE_RESOLVED`] say how that went, and
//! failed resolutions are retried with backoff. See "Revisions are pinned" in the
//! [services controller's documentation](super).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use stratus_api::Resource;
use stratus_api::v1::{Container, Revision};
use stratus_client::runtime::ObjectRef;
use stratus_client::{Error as ClientError, ErrorChain};
use tokio::time::Instant;
use tracing::{debug, warn};

use super::error::{Error, Result};
use crate::context::Context;
use crate::digest::{self, Resolver};
use crate::status::{self, Cond, FALSE, TRUE};

/// The Revision condition this controller owns: whether the image was resolved to a digest.
pub const IMAGE_RESOLVED: &str = "ImageResolved";
/// The reason of a revision whose image cannot be found or pulled.
pub const CONTAINER_MISSING: &str = "ContainerMissing";
/// The reason of [`IMAGE_RESOLVED`] when the registry answered that the image does not exist:
/// the revision is failed at once (it would only pull in vain), and starts should a later
/// retry find the image.
pub const IMAGE_NOT_FOUND: &str = "ImageNotFound";

/// Retries of a failed digest resolution: the first after this, doubling up to the cap.
const DIGEST_RETRY_BASE: Duration = Duration::from_secs(5);
const DIGEST_RETRY_MAX: Duration = Duration::from_secs(300);
/// Attempts at recording a digest while other writers change the revision's status.
const STATUS_ATTEMPTS: usize = 3;

/// What the reconciles share besides the [`Context`]: the resolver and the retries of the
/// resolutions that failed.
pub(super) struct Shared {
    pub(super) ctx: Arc<Context>,
    resolver: Resolver,
    /// Backoff of failed digest resolutions, by revision uid. Lost on restart, which only
    /// means one early retry.
    retries: Mutex<HashMap<String, Retry>>,
}

#[derive(Clone, Copy, Debug)]
struct Retry {
    failures: u32,
    next: Instant,
}

impl Shared {
    pub(super) fn new(ctx: Arc<Context>) -> Shared {
        let resolver = Resolver::new(ctx.config.insecure_registries.clone(), digest::DEFAULT_TIMEOUT)
            .with_auth_hosts(ctx.config.registry_auth_hosts.clone());
        Shared { ctx, resolver, retries: Mutex::new(HashMap::new()) }
    }

    /// When the digest of revision `uid` may be resolved again (now when never tried).
    fn retry_at(&self, uid: &str) -> Option<Instant> {
        self.retries.lock().unwrap_or_else(PoisonError::into_inner).get(uid).map(|r| r.next)
    }

    /// Records the outcome of a resolution of revision `uid`'s image.
    fn resolved(&self, uid: &str, ok: bool) {
        let mut retries = self.retries.lock().unwrap_or_else(PoisonError::into_inner);
        if ok {
            retries.remove(uid);
            return;
        }
        let failures = retries.get(uid).map_or(0, |r| r.failures);
        let delay = DIGEST_RETRY_BASE.saturating_mul(1 << failures.min(16)).min(DIGEST_RETRY_MAX);
        retries.insert(uid.to_string(), Retry { failures: failures + 1, next: Instant::now() + delay });
    }

    /// Forgets the retries of revisions that no longer exist.
    pub(super) fn prune_retries(&self) {
        let mut retries = self.retries.lock().unwrap_or_else(PoisonError::into_inner);
        if retries.is_empty() {
            return;
        }
        let live: BTreeSet<String> = self.ctx.revisions.store().list().iter().map(|r| r.meta().uid.clone()).collect();
        retries.retain(|uid, _| live.contains(uid));
    }
}

/// How a revision's image was pinned.
pub(super) enum Resolution {
    /// To this reference (`repo@sha256:…`).
    Pinned(String),
    /// Not at all: the image is pulled never, so it is local to the nodes and no registry need
    /// know it.
    Local,
    Failed(digest::Error),
}

/// Pins the serving image of `containers`; `None` when there is no container.
pub(super) async fn resolve(shared: &Shared, containers: &[Container]) -> Option<Resolution> {
    let container = &containers[digest::serving_container(containers)?];
    if container.image_pull_policy == "Never" {
        return Some(Resolution::Local);
    }
    Some(match shared.resolver.resolve(&container.image).await {
        Ok(pinned) => Resolution::Pinned(pinned),
        Err(e) => Resolution::Failed(e),
    })
}

/// Resolves, again, the images of the revisions whose digest is not known yet and whose retry
/// is due; updates `revisions` with what was recorded. Returns when the next retry is due.
pub(super) async fn resolve_pending_digests(
    shared: &Shared,
    revisions: &mut [Arc<Revision>],
) -> Result<Option<Duration>> {
    let now = Instant::now();
    let mut next_retry: Option<Instant> = None;
    for rev in revisions.iter_mut() {
        let status = rev.status.clone().unwrap_or_default();
        if !status.image_digest.is_empty() || status::is_true(&status.conditions, IMAGE_RESOLVED) {
            continue;
        }
        if let Some(at) = shared.retry_at(&rev.meta().uid)
            && at > now
        {
            next_retry = Some(next_retry.map_or(at, |n| n.min(at)));
            continue;
        }
        let containers = rev.spec.as_ref().map(|s| s.containers.as_slice()).unwrap_or_default();
        let Some(resolution) = resolve(shared, containers).await else { continue };
        let recorded = record_resolution(shared, rev, resolution).await?;
        if let Some(at) = shared.retry_at(&recorded.meta().uid) {
            next_retry = Some(next_retry.map_or(at, |n| n.min(at)));
        }
        *rev = Arc::new(recorded);
    }
    Ok(next_retry.map(|at| at.saturating_duration_since(now)))
}

/// Records how resolving `rev`'s image went: `status.imageDigest` and condition
/// [`IMAGE_RESOLVED`]. Status is shared with the revisions controller, so a conflict is met by
/// reading the revision again and reapplying only these two fields.
pub(super) async fn record_resolution(shared: &Shared, rev: &Revision, resolution: Resolution) -> Result<Revision> {
    let ctx = &shared.ctx;
    let revision = ObjectRef::from_obj(rev);
    shared.resolved(&rev.meta().uid, !matches!(resolution, Resolution::Failed(_)));
    let cond = match &resolution {
        Resolution::Pinned(pinned) => {
            debug!(%revision, %pinned, "pinned the revision's image");
            Cond::true_(IMAGE_RESOLVED)
        }
        Resolution::Local => Cond::new(
            IMAGE_RESOLVED,
            TRUE,
            "PullPolicyNever",
            "imagePullPolicy is Never: instances run the nodes' own image, as written",
        ),
        Resolution::Failed(e) => {
            let message = ErrorChain(e).to_string();
            warn!(%revision, %message, "cannot resolve the revision's image to a digest");
            let reason = if matches!(e, digest::Error::NotFound { .. }) { IMAGE_NOT_FOUND } else { CONTAINER_MISSING };
            Cond::new(IMAGE_RESOLVED, FALSE, reason, message)
        }
    };
    let mut current = rev.clone();
    for attempt in 1..=STATUS_ATTEMPTS {
        let mut status = current.status.clone().unwrap_or_default();
        if let Resolution::Pinned(pinned) = &resolution {
            status.image_digest.clone_from(pinned);
        }
        status::set(&mut status.conditions, &cond);
        if current.status.as_ref() == Some(&status) {
            return Ok(current);
        }
        let mut next = current.clone();
        next.status = Some(status);
        match ctx.client.update_status(next).await {
            Ok(written) => return Ok(written),
            Err(ClientError::Conflict(_)) if attempt < STATUS_ATTEMPTS => {
                current = ctx
                    .client
                    .get::<Revision>(&revision.namespace, &revision.name)
                    .await
                    .map_err(|source| Error::RecordDigest { revision: revision.clone(), source })?;
                if current.meta().uid != rev.meta().uid {
                    // Deleted and made again meanwhile: this resolution was for another object.
                    return Ok(current);
                }
            }
            Err(source) => return Err(Error::RecordDigest { revision, source }),
        }
    }
    Ok(current)
}
