//! The controller loop: informer changes → work queue → reconcile, kube-runtime style.
//!
//! A reconcile function is a function of the current state: it receives the object as the
//! cache holds it now (never a stale event), moves the world one step toward its spec, and
//! returns what should happen next as an [`Action`]. Keys are de-duplicated and never reconciled
//! twice at once (see [`WorkQueue`]), so a burst of changes to one object costs one reconcile.
//!
//! **A missing object means done.** When a key's object is no longer in the cache, reconcile is
//! not called and the key is forgotten: the object is gone and so is the work. A controller that
//! must clean up after an object puts a finalizer on it and does the cleanup when it sees
//! `metadata.deletionTimestamp` set (the object stays in the cache until the finalizer is
//! removed); one that only needs to notice deletions of secondary objects maps them to their
//! owner with [`Controller::owns`] or [`Controller::watches`].
//!
//! **The runtime measures.** A controller given a [`ControllerMetrics`] with
//! [`Controller::metrics`] reports every reconcile (its duration and outcome) and every change
//! of its work queue there; reconcile functions do not time themselves.

use std::fmt;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::future::{BoxFuture, join_all};
use futures::stream::{self, BoxStream, select_all};
use futures::{FutureExt, Stream, StreamExt};
use stratus_api::Resource;
use stratus_support::otel::{self, FutureExt as _, TraceContextExt as _, Tracer as _};
use tokio::time::Instant;
use tracing::{Instrument, debug, info_span, warn};

use super::informer::Informer;
use super::metrics::{ControllerMetrics, Observer, ReconcileOutcome};
use super::workqueue::{RateLimit, WorkQueue};
use super::{ErrorChain, ObjectRef};

/// What to do with an object after a reconcile (or, from the error policy, after a failure).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Action(Next);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Next {
    After(Duration),
    AwaitChange,
    Backoff,
}

impl Action {
    /// Reconcile again after `delay` even if nothing changes (a periodic check), or earlier if
    /// the object changes.
    pub fn requeue(delay: Duration) -> Action {
        Action(Next::After(delay))
    }

    /// Reconcile again only when the object (or a watched related object) changes.
    pub fn await_change() -> Action {
        Action(Next::AwaitChange)
    }

    /// Reconcile again after the key's exponential backoff (see [`RateLimit`]), which grows with
    /// each consecutive backoff and resets once a reconcile succeeds with another action. The
    /// usual answer of an error policy.
    pub fn backoff() -> Action {
        Action(Next::Backoff)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Next::After(d) => write!(f, "requeue in {d:?}"),
            Next::AwaitChange => f.write_str("await change"),
            Next::Backoff => f.write_str("requeue with backoff"),
        }
    }
}

/// Reconciles the objects of kind `K` of one informer, triggered by their changes and by those
/// of related objects. `Ctx` is whatever the reconcile function needs (a [`crate::Client`],
/// other caches, configuration), shared by every call.
pub struct Controller<K, Ctx> {
    informer: Informer<K>,
    ctx: Arc<Ctx>,
    triggers: Vec<BoxStream<'static, ObjectRef>>,
    /// The caches that must have synced before the first reconcile.
    synced: Vec<BoxFuture<'static, ()>>,
    rate_limit: RateLimit,
    observer: Option<Observer>,
}

impl<K: Resource, Ctx: Send + Sync + 'static> Controller<K, Ctx> {
    /// A controller of `informer`'s objects: every change of one queues its key.
    pub fn new(informer: &Informer<K>, ctx: Arc<Ctx>) -> Controller<K, Ctx> {
        let store = informer.store();
        Controller {
            informer: informer.clone(),
            ctx,
            triggers: vec![informer.subscribe().map(|change| change.key()).boxed()],
            synced: vec![async move { store.wait_synced().await }.boxed()],
            rate_limit: RateLimit::default(),
            observer: None,
        }
    }

    /// Also reconciles the objects `map` names whenever an object of `informer` changes
    /// (including its deletion, with its last state). The controller keeps `informer` running.
    pub fn watches<O, F>(mut self, informer: &Informer<O>, map: F) -> Self
    where
        O: Resource,
        F: Fn(&O) -> Vec<ObjectRef> + Send + 'static,
    {
        let keep_running = informer.clone();
        let trigger = informer.subscribe().flat_map(move |change| {
            let _ = &keep_running;
            stream::iter(map(&change.object))
        });
        self.triggers.push(trigger.boxed());
        let store = informer.store();
        self.synced.push(async move { store.wait_synced().await }.boxed());
        self
    }

    /// Also reconciles an object whenever one of the objects it controls changes: those of
    /// `informer` whose controller ownerReference names an object of kind `K`. The owner is in
    /// the object's namespace (ownerReferences do not cross namespaces), or cluster-scoped.
    pub fn owns<O: Resource>(self, informer: &Informer<O>) -> Self {
        self.watches(informer, |obj: &O| {
            let meta = obj.meta();
            let namespace = if K::INFO.namespaced { meta.namespace.as_str() } else { "" };
            meta.owner_references
                .iter()
                .filter(|owner| owner.controller && owner.kind == K::INFO.kind)
                .map(|owner| ObjectRef::new(namespace, owner.name.clone()))
                .collect()
        })
    }

    /// Also reconciles every object `keys` names, as it names them: for triggers outside the
    /// API (a probe result, a container that exited). The stream should not end while the
    /// controller runs; if it does, the other triggers go on.
    pub fn triggers(mut self, keys: impl Stream<Item = ObjectRef> + Send + 'static) -> Self {
        self.triggers.push(keys.boxed());
        self
    }

    /// Reports to `metrics`, as the controller `name`: every reconcile with its duration and
    /// outcome, and every change of the work queue (see [`ControllerMetrics`] for what is
    /// reported when). Several controllers may share one name; their queue depths add up.
    pub fn metrics(mut self, name: &str, metrics: Arc<dyn ControllerMetrics>) -> Self {
        self.observer = Some(Observer::new(name, metrics));
        self
    }

    /// Replaces the default backoff of failed keys (client-go's: 5 ms doubling to 1000 s).
    pub fn rate_limit(mut self, rate_limit: RateLimit) -> Self {
        self.rate_limit = rate_limit;
        self
    }

    /// Runs `workers` concurrent reconciles (at least one) until `shutdown` resolves.
    ///
    /// Nothing is reconciled before every watched cache has synced. On shutdown, reconciles in
    /// progress finish, nothing new starts, and `run` returns; queued keys are dropped, as the
    /// next run (or the next leader) reconciles everything anyway. Workers are futures of the
    /// task that runs `run`: a reconcile that computes for long should use
    /// `tokio::task::spawn_blocking`.
    ///
    /// `reconcile` is called with the object as cached at the time its key is processed. On
    /// `Ok`, its [`Action`] is followed. On `Err`, the error is logged and `error_policy` decides
    /// the action (typically [`Action::backoff`]).
    pub async fn run<R, RFut, E, P>(
        self,
        reconcile: R,
        error_policy: P,
        workers: usize,
        shutdown: impl Future<Output = ()>,
    ) where
        R: Fn(Arc<K>, Arc<Ctx>) -> RFut,
        RFut: Future<Output = Result<Action, E>>,
        E: std::error::Error,
        P: Fn(Arc<K>, &E, Arc<Ctx>) -> Action,
    {
        let Controller { informer, ctx, triggers, synced, rate_limit, observer } = self;
        let mut shutdown = pin!(shutdown);
        tokio::select! {
            () = &mut shutdown => return,
            _ = join_all(synced) => {}
        }
        debug!(kind = K::INFO.kind, workers, "caches synced; starting workers");

        if let Some(observer) = &observer {
            observer.started();
        }
        let queue = WorkQueue::with_observer(rate_limit, observer.clone());
        let stopped = AtomicBool::new(false);
        let feed = async {
            let mut triggers = select_all(triggers);
            while let Some(key) = triggers.next().await {
                queue.add(key);
            }
            // Every trigger ended (cannot happen while `informer` is held): keep working on
            // what is queued until shutdown.
            std::future::pending::<()>().await
        };
        let worker = || async {
            while let Some(key) = queue.get().await {
                if stopped.load(Ordering::Acquire) {
                    queue.done(&key);
                    break;
                }
                let span = info_span!("reconcile", kind = K::INFO.kind, object = %key);
                process(&informer, &queue, &key, &ctx, &reconcile, &error_policy, observer.as_ref())
                    .instrument(span)
                    .await;
                queue.done(&key);
            }
        };
        let mut workers = pin!(join_all((0..workers.max(1)).map(|_| worker())));
        tokio::select! {
            () = &mut shutdown => {}
            () = feed => {}
            _ = &mut workers => {}
        }
        stopped.store(true, Ordering::Release);
        queue.shut_down();
        workers.await;
        debug!(kind = K::INFO.kind, "controller stopped");
    }
}

/// The span of one reconcile of `key`, when traces are on: a trace of its own.
fn reconcile_span<K: Resource>(key: &ObjectRef, observer: Option<&Observer>) -> Option<otel::Context> {
    if !otel::enabled() {
        return None;
    }
    let controller = observer.map_or(K::INFO.kind, Observer::name).to_string();
    let tracer = otel::tracer("stratus-controllers");
    let span = tracer
        .span_builder(format!("reconcile {controller}"))
        .with_attributes([
            otel::KeyValue::new("stratus.controller", controller),
            otel::KeyValue::new("stratus.kind", K::INFO.kind),
            otel::KeyValue::new("stratus.namespace", key.namespace.clone()),
            otel::KeyValue::new("stratus.name", key.name.clone()),
        ])
        .start_with_context(&tracer, &otel::Context::new());
    Some(otel::Context::new().with_span(span))
}

/// One reconcile of `key` and what follows from its outcome.
async fn process<K, Ctx, R, RFut, E, P>(
    informer: &Informer<K>,
    queue: &WorkQueue<ObjectRef>,
    key: &ObjectRef,
    ctx: &Arc<Ctx>,
    reconcile: &R,
    error_policy: &P,
    observer: Option<&Observer>,
) where
    K: Resource,
    R: Fn(Arc<K>, Arc<Ctx>) -> RFut,
    RFut: Future<Output = Result<Action, E>>,
    E: std::error::Error,
    P: Fn(Arc<K>, &E, Arc<Ctx>) -> Action,
{
    let Some(obj) = informer.store().get_ref(key) else {
        debug!("object gone; nothing to do");
        queue.forget(key);
        return;
    };
    let start = Instant::now();
    // Traced, the reconcile is a span of its own, and the API calls it makes carry it.
    let traced = reconcile_span::<K>(key, observer);
    let result = match &traced {
        Some(cx) => reconcile(Arc::clone(&obj), Arc::clone(ctx)).with_context(cx.clone()).await,
        None => reconcile(Arc::clone(&obj), Arc::clone(ctx)).await,
    };
    if let Some(cx) = traced {
        let span = cx.span();
        if let Err(e) = &result {
            span.set_status(otel::Status::error(ErrorChain(e).to_string()));
        }
        span.end();
    }
    if let Some(observer) = observer {
        let outcome = if result.is_ok() { ReconcileOutcome::Ok } else { ReconcileOutcome::Error };
        observer.reconciled(start.elapsed(), outcome);
    }
    let (action, succeeded) = match result {
        Ok(action) => (action, true),
        Err(e) => {
            let action = error_policy(obj, &e, Arc::clone(ctx));
            // A failure that a retry fixes (most often a write that lost an optimistic
            // concurrency race) is routine; one that keeps failing is worth a warning.
            let failures = queue.num_requeues(key);
            if failures >= 3 {
                warn!(error = %ErrorChain(&e), next = %action, failures = failures + 1, "reconcile keeps failing");
            } else {
                debug!(error = %ErrorChain(&e), next = %action, "reconcile failed");
            }
            (action, false)
        }
    };
    match action.0 {
        // A failure keeps its backoff count; success resets it.
        Next::After(delay) => {
            if succeeded {
                queue.forget(key);
            }
            queue.add_after(key.clone(), delay);
        }
        Next::AwaitChange => queue.forget(key),
        Next::Backoff => queue.requeue_rate_limited(key.clone()),
    }
}
