//! What a [`Controller`](super::Controller) reports about itself: every reconcile with its
//! duration and outcome, and every change of its work queue, as client-go's workqueue
//! `MetricsProvider` and controller-runtime's reconcile metrics do.
//!
//! The runtime measures; the [`ControllerMetrics`] implementation decides where the numbers go
//! (Prometheus, a test's log). A controller only names itself with
//! [`Controller::metrics`](super::Controller::metrics), so no reconcile function times itself.

use std::sync::Arc;
use std::time::Duration;

/// How one reconcile ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReconcileOutcome {
    /// The reconcile function returned `Ok`.
    Ok,
    /// It returned `Err`; the error policy decided what follows.
    Error,
}

impl ReconcileOutcome {
    /// `"ok"` or `"error"`, the usual metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ReconcileOutcome::Ok => "ok",
            ReconcileOutcome::Error => "error",
        }
    }
}

/// Receives the measurements of the controllers it is given to; one implementation usually
/// serves every controller of a process, told apart by `controller`, the name the controller was
/// given.
///
/// The queue callbacks are made while the queue is locked, so that a gauge built from the
/// depth deltas never shows a level the queue did not have: they must be quick and must not
/// block (updating an atomic counter is the intended use). Every method does nothing unless
/// implemented.
pub trait ControllerMetrics: Send + Sync {
    /// The controller's workers start (its caches have synced). Called once per run, before
    /// any other callback of that run, so that an implementation can show the controller's
    /// series at zero rather than absent.
    fn started(&self, controller: &str) {
        let _ = controller;
    }

    /// One reconcile ran for `duration` (the reconcile function alone, not the error policy)
    /// and ended with `outcome`. A key whose object is gone is not reconciled and not reported.
    fn reconciled(&self, controller: &str, duration: Duration, outcome: ReconcileOutcome) {
        let _ = (controller, duration, outcome);
    }

    /// The number of keys waiting for a worker changed by `delta` (+1: a key was queued, −1: a
    /// worker took one or the queue was dropped with it). Deltas rather than levels, because a
    /// controller may run several queues under one name (the garbage collector runs one per
    /// kind) whose depths add up. Delayed keys (a requeue after a delay, a backoff) are not
    /// waiting until they are due. Over a run the deltas sum to zero: when the controller
    /// stops, the keys still queued are reported as leaving.
    fn queue_depth(&self, controller: &str, delta: i64) {
        let _ = (controller, delta);
    }

    /// A key was added that was not already waiting: it is queued now, or after the worker
    /// processing it is done (client-go's `adds`). De-duplicated adds are not counted.
    fn queue_added(&self, controller: &str) {
        let _ = controller;
    }

    /// A key was requeued after its backoff (client-go's `retries`), usually after a failure.
    fn queue_retried(&self, controller: &str) {
        let _ = controller;
    }
}

/// A controller's name with the metrics it reports to, as the controller and its queue hold it.
#[derive(Clone)]
pub(crate) struct Observer {
    name: Arc<str>,
    metrics: Arc<dyn ControllerMetrics>,
}

impl Observer {
    pub(crate) fn new(name: &str, metrics: Arc<dyn ControllerMetrics>) -> Observer {
        Observer { name: name.into(), metrics }
    }

    /// The controller's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn started(&self) {
        self.metrics.started(&self.name);
    }

    pub(crate) fn reconciled(&self, duration: Duration, outcome: ReconcileOutcome) {
        self.metrics.reconciled(&self.name, duration, outcome);
    }

    pub(crate) fn depth(&self, delta: i64) {
        if delta != 0 {
            self.metrics.queue_depth(&self.name, delta);
        }
    }

    pub(crate) fn added(&self) {
        self.metrics.queue_added(&self.name);
    }

    pub(crate) fn retried(&self) {
        self.metrics.queue_retried(&self.name);
    }
}
