//! The controller runtime against a real in-process API server: informers converge under
//! concurrent writes and across lost watches, the controller loop reconciles and requeues, the
//! work queue keeps one key with one worker, and leader election never has two leaders.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use rand::Rng;
use stratus_api::Resource;
use stratus_api::v1::{Container, Endpoints, Instance, InstanceSpec, Lease, LeaseSpec, ObjectMeta, OwnerReference};
use stratus_apiserver::testing::TestServer;
use stratus_client::runtime::{
    Action, ChangeKind, Controller, ControllerMetrics, Informer, InformerConfig, LeaderElectionConfig, LeaderElector,
    RateLimit, ReconcileOutcome, Subscription, WorkQueue,
};
use stratus_client::{Client, ListParams};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::{Instant, timeout};

const WAIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------- informer

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn informer_converges_under_concurrent_writes() -> Result<()> {
    let server = TestServer::start().await;
    let client = Client::new(&server.endpoint)?.with_token(&server.token);
    for i in 0..20 {
        client.create(lease(&format!("pre-{i}"), "x")).await?;
    }
    // Small pages, so that the initial list takes several.
    let config = InformerConfig { page_size: 7, ..InformerConfig::default() };
    let informer = Informer::<Lease>::spawn_with(client.clone(), in_default(), config);
    let mirror = Mirror::follow(informer.subscribe());
    timeout(WAIT, informer.wait_synced()).await.context("initial sync")?;
    ensure!(informer.store().len() == 20, "the list read every page");

    let writers: Vec<_> = (0..4).map(|w| tokio::spawn(random_writes(client.clone(), w, 60))).collect();
    for w in writers {
        w.await??;
    }

    let want = versions(client.list_all::<Lease>(&in_default()).await?.items.iter());
    mirror.wait_for(|view| view.live == want).await.context("subscribers converge")?;
    ensure!(versions(informer.store().list().iter().map(|o| o.as_ref())) == want, "the cache equals the server");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn informer_relists_after_gone_and_sees_deletions_made_meanwhile() -> Result<()> {
    let server = TestServer::start().await;
    let client = Client::new(&server.endpoint)?.with_token(&server.token);
    let proxy = Proxy::start(server.addr).await?;
    for i in 0..10 {
        client.create(lease(&format!("l-{i}"), "x")).await?;
    }
    let informer = Informer::<Lease>::spawn_with(
        Client::new(&proxy.endpoint())?.with_token(&server.token),
        in_default(),
        fast_informer(),
    );
    let mirror = Mirror::follow(informer.subscribe());
    mirror.wait_for(|view| view.live.len() == 10).await.context("initial sync")?;
    let stale_rv = client.list::<Lease>(&in_default()).await?.resource_version;

    // While the informer is cut off: delete, change and create, then compact the history
    // it would need to catch up by watching.
    proxy.cut();
    for i in 0..5 {
        client.delete::<Lease>("default", &format!("l-{i}")).await?;
    }
    let mut changed = client.get::<Lease>("default", "l-5").await?;
    changed.spec.get_or_insert_with(LeaseSpec::default).holder_identity = "y".into();
    client.update(changed).await?;
    client.create(lease("new", "x")).await?;
    server.store.compact(server.store.current_revision().await?).await?;
    ensure!(watch_is_gone(&client, &stale_rv).await?, "the server answers Gone from before the compaction");
    proxy.restore();

    let want = versions(client.list_all::<Lease>(&in_default()).await?.items.iter());
    let view = mirror.wait_for(|view| view.live == want).await.context("converges after the relist")?;
    let deleted: BTreeSet<String> = (0..5).map(|i| format!("l-{i}")).collect();
    ensure!(deleted.is_subset(&view.deleted), "deletions while disconnected were notified: {:?}", view.deleted);
    ensure!(versions(informer.store().list().iter().map(|o| o.as_ref())) == want, "the cache equals the server");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn informer_honours_field_selectors() -> Result<()> {
    let server = TestServer::start().await;
    let client = Client::new(&server.endpoint)?.with_token(&server.token);
    client.create(instance("a", "node-1", "web")).await?;
    client.create(instance("b", "node-2", "web")).await?;
    let unbound = client.create(instance("c", "", "db")).await?;
    let params = ListParams { field_selector: "spec.nodeName=node-1".into(), ..in_default() };
    let informer = Informer::<Instance>::spawn_with(client.clone(), params, fast_informer());
    let mirror = Mirror::follow(informer.subscribe());
    timeout(WAIT, informer.wait_synced()).await.context("initial sync")?;

    // Binding c to node-1 brings it into the selection; deleting a takes it out.
    let mut bound = unbound;
    bound.spec.get_or_insert_with(InstanceSpec::default).node_name = "node-1".into();
    client.update(bound).await?;
    client.delete::<Instance>("default", "a").await?;
    let view = mirror.wait_for(|view| view.live.keys().eq(["c"])).await.context("selection follows the binding")?;
    ensure!(view.deleted.contains("a") && !view.seen.contains("b"), "node-2's instance never appears");
    let store = informer.store();
    ensure!(names(store.list_by_label("app", "db")) == ["c"] && store.list_by_label("app", "web").is_empty());
    ensure!(names(store.list_by_namespace("default")) == ["c"] && store.get("default", "c").is_some());
    Ok(())
}

// ---------------------------------------------------------------- controller

#[derive(Debug, thiserror::Error)]
#[error("injected failure")]
struct Injected;

/// What the test reconciler saw: every call as (name, resourceVersion), in order.
struct Ctx {
    calls: watch::Sender<Vec<(String, String)>>,
    failures_left: Mutex<u32>,
}

async fn reconcile(lease: Arc<Lease>, ctx: Arc<Ctx>) -> Result<Action, Injected> {
    let meta = lease.meta();
    ctx.calls.send_modify(|calls| calls.push((meta.name.clone(), meta.resource_version.clone())));
    match meta.name.as_str() {
        "flaky" => {
            let mut left = ctx.failures_left.lock().map_err(|_| Injected)?;
            if *left > 0 {
                *left -= 1;
                return Err(Injected);
            }
            Ok(Action::await_change())
        }
        "periodic" => Ok(Action::requeue(Duration::from_millis(20))),
        _ => Ok(Action::await_change()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_reconciles_changes_owned_objects_and_retries_failures() -> Result<()> {
    let server = TestServer::start().await;
    let client = Client::new(&server.endpoint)?.with_token(&server.token);
    client.create(lease("parent", "x")).await?;
    let leases = Informer::<Lease>::spawn_with(client.clone(), in_default(), fast_informer());
    let endpoints = Informer::<Endpoints>::spawn_with(client.clone(), in_default(), fast_informer());
    let ctx = Arc::new(Ctx { calls: watch::Sender::new(Vec::new()), failures_left: Mutex::new(3) });
    let mut calls = ctx.calls.subscribe();
    let (stop, stopped) = oneshot::channel::<()>();
    let controller = Controller::new(&leases, ctx).owns(&endpoints).rate_limit(RateLimit {
        base: Duration::from_millis(1),
        max: Duration::from_millis(50),
        jitter: 0.0,
    });
    let run = tokio::spawn(controller.run(reconcile, |_, _, _| Action::backoff(), 3, async move {
        let _ = stopped.await;
    }));

    let count = |calls: &[(String, String)], name: &str| calls.iter().filter(|(n, _)| n == name).count();
    wait_calls(&mut calls, |c| count(c, "parent") == 1).await.context("existing objects are reconciled")?;

    // A change is reconciled with the new state.
    let mut parent = client.get::<Lease>("default", "parent").await?;
    parent.spec.get_or_insert_with(LeaseSpec::default).holder_identity = "y".into();
    let parent = client.update(parent).await?;
    let rv = parent.meta().resource_version.clone();
    wait_calls(&mut calls, |c| c.iter().any(|(n, v)| n == "parent" && *v == rv)).await.context("update")?;

    // A change of an owned object reconciles its owner.
    let before = count(&calls.borrow(), "parent");
    client.create(owned_endpoints("child", &parent)).await?;
    wait_calls(&mut calls, |c| count(c, "parent") > before).await.context("owned object triggers its owner")?;

    // Failures are retried with backoff until success, then not again; requeue repeats.
    client.create(lease("flaky", "x")).await?;
    client.create(lease("periodic", "x")).await?;
    wait_calls(&mut calls, |c| count(c, "flaky") == 4 && count(c, "periodic") >= 3).await.context("retries")?;

    stop.send(()).ok();
    timeout(WAIT, run).await.context("run returns on shutdown")??;
    ensure!(count(&calls.borrow(), "flaky") == 4, "a success is not retried");
    Ok(())
}

async fn wait_calls(
    calls: &mut watch::Receiver<Vec<(String, String)>>,
    cond: impl Fn(&[(String, String)]) -> bool,
) -> Result<()> {
    timeout(WAIT, calls.wait_for(|c| cond(c))).await?.context("controller context dropped")?;
    Ok(())
}

/// What a controller reported to its metrics, in order: each reconcile and the queue's depth
/// after each change (the running sum of the deltas).
#[derive(Default)]
struct Reported {
    reconciles: Vec<(String, Duration, ReconcileOutcome)>,
    depths: Vec<i64>,
    adds: u64,
    retries: u64,
    started: Vec<String>,
}

struct Recorder(watch::Sender<Reported>);

impl ControllerMetrics for Recorder {
    fn started(&self, controller: &str) {
        self.0.send_modify(|r| r.started.push(controller.into()));
    }
    fn reconciled(&self, controller: &str, duration: Duration, outcome: ReconcileOutcome) {
        self.0.send_modify(|r| r.reconciles.push((controller.into(), duration, outcome)));
    }
    fn queue_depth(&self, _: &str, delta: i64) {
        self.0.send_modify(|r| {
            let depth = r.depths.last().copied().unwrap_or(0) + delta;
            r.depths.push(depth);
        });
    }
    fn queue_added(&self, _: &str) {
        self.0.send_modify(|r| r.adds += 1);
    }
    fn queue_retried(&self, _: &str) {
        self.0.send_modify(|r| r.retries += 1);
    }
}

/// Fails `flaky` once; every reconcile waits until the gate opens.
async fn gated_reconcile(lease: Arc<Lease>, ctx: Arc<(Mutex<u32>, watch::Receiver<bool>)>) -> Result<Action, Injected> {
    let mut gate = ctx.1.clone();
    gate.wait_for(|open| *open).await.map_err(|_| Injected)?;
    if lease.meta().name == "flaky" {
        let mut left = ctx.0.lock().map_err(|_| Injected)?;
        if *left > 0 {
            *left -= 1;
            return Err(Injected);
        }
    }
    Ok(Action::await_change())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_reports_each_reconcile_and_its_queue_rising_and_falling() -> Result<()> {
    let server = TestServer::start().await;
    let client = Client::new(&server.endpoint)?.with_token(&server.token);
    for name in ["a", "b", "c", "flaky"] {
        client.create(lease(name, "x")).await?;
    }
    let leases = Informer::<Lease>::spawn_with(client.clone(), in_default(), fast_informer());
    let (open, gate) = watch::channel(false);
    let ctx = Arc::new((Mutex::new(1), gate));
    let (reported, mut seen) = watch::channel(Reported::default());
    let (stop, stopped) = oneshot::channel::<()>();
    let controller = Controller::new(&leases, ctx)
        .rate_limit(RateLimit { base: Duration::from_millis(1), max: Duration::from_millis(50), jitter: 0.0 })
        .metrics("leases", Arc::new(Recorder(reported)));
    // One worker: while the gate is shut, it holds one key and the other three wait.
    let run = tokio::spawn(controller.run(gated_reconcile, |_, _, _| Action::backoff(), 1, async move {
        let _ = stopped.await;
    }));

    timeout(WAIT, seen.wait_for(|r| r.depths.last() == Some(&3))).await?.context("the queue fills")?;
    ensure!(seen.borrow().reconciles.is_empty(), "nothing reconciled while the gate is shut");
    let held = Duration::from_millis(50);
    tokio::time::sleep(held).await;
    open.send(true)?;

    // Four objects, one of them failing once: five reconciles, and the queue empties again.
    let done = |r: &Reported| r.reconciles.len() >= 5 && r.depths.last() == Some(&0);
    timeout(WAIT, seen.wait_for(done)).await?.context("every key reconciled")?;
    stop.send(()).ok();
    timeout(WAIT, run).await.context("run returns on shutdown")??;

    let r = seen.borrow();
    ensure!(r.started == ["leases"], "started once: {:?}", r.started);
    ensure!(r.reconciles.iter().all(|(name, _, _)| name == "leases"), "named as the controller was");
    let errors = r.reconciles.iter().filter(|(_, _, outcome)| *outcome == ReconcileOutcome::Error).count();
    ensure!(errors == 1, "flaky failed once: {:?}", r.reconciles);
    ensure!(r.reconciles[0].1 >= held, "the first reconcile is timed across the gate: {:?}", r.reconciles[0].1);
    ensure!(r.retries == 1 && r.adds == 5, "4 adds and the retry's: adds {}, retries {}", r.adds, r.retries);
    let peak = r.depths.iter().copied().max().unwrap_or(0);
    ensure!(peak >= 3 && r.depths.iter().all(|d| *d >= 0), "depths {:?}", r.depths);
    ensure!(r.depths.windows(2).any(|w| w[1] < w[0]), "the depth falls as workers take keys: {:?}", r.depths);
    Ok(())
}

// ---------------------------------------------------------------- work queue

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn work_queue_never_hands_one_key_to_two_workers() -> Result<()> {
    const KEYS: usize = 10;
    let queue = WorkQueue::<usize>::new(RateLimit { base: Duration::from_micros(100), ..RateLimit::default() });
    // Per key: workers inside it now, adds so far, and the adds seen by its latest processing.
    let in_flight: Arc<Vec<AtomicUsize>> = Arc::new((0..KEYS).map(|_| AtomicUsize::new(0)).collect());
    let added: Arc<Vec<AtomicU64>> = Arc::new((0..KEYS).map(|_| AtomicU64::new(0)).collect());
    let (seen_tx, mut seen) = watch::channel(vec![0u64; KEYS]);
    let seen_tx = Arc::new(seen_tx);
    let overlaps = Arc::new(AtomicUsize::new(0));

    let workers: Vec<JoinHandle<usize>> = (0..16)
        .map(|_| {
            let (queue, in_flight, added, seen_tx, overlaps) =
                (queue.clone(), in_flight.clone(), added.clone(), seen_tx.clone(), overlaps.clone());
            tokio::spawn(async move {
                let mut processed = 0;
                while let Some(key) = queue.get().await {
                    if in_flight[key].fetch_add(1, Ordering::SeqCst) != 0 {
                        overlaps.fetch_add(1, Ordering::SeqCst);
                    }
                    let generation = added[key].load(Ordering::SeqCst);
                    let pause = rand::rng().random_range(0..4);
                    for _ in 0..pause {
                        tokio::task::yield_now().await;
                    }
                    if rand::rng().random_bool(0.1) {
                        queue.requeue_rate_limited(key);
                    } else {
                        queue.forget(&key);
                    }
                    in_flight[key].fetch_sub(1, Ordering::SeqCst);
                    seen_tx.send_modify(|seen| seen[key] = seen[key].max(generation));
                    queue.done(&key);
                    processed += 1;
                }
                processed
            })
        })
        .collect();

    let producers: Vec<_> = (0..4)
        .map(|_| {
            let (queue, added) = (queue.clone(), added.clone());
            tokio::spawn(async move {
                for _ in 0..2000 {
                    let key = rand::rng().random_range(0..KEYS);
                    added[key].fetch_add(1, Ordering::SeqCst);
                    if rand::rng().random_bool(0.2) {
                        queue.add_after(key, Duration::from_micros(200));
                    } else {
                        queue.add(key);
                    }
                    if rand::rng().random_bool(0.1) {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    for p in producers {
        p.await?;
    }

    // No add is lost: each key is processed after its last add.
    let want: Vec<u64> = added.iter().map(|a| a.load(Ordering::SeqCst)).collect();
    timeout(WAIT, seen.wait_for(|seen| *seen == want)).await.context("every add is processed")??;
    timeout(WAIT, queue.shut_down_with_drain()).await.context("drain")?;
    let mut processed = 0;
    for w in workers {
        processed += timeout(WAIT, w).await.context("workers end after shutdown")??;
    }
    ensure!(overlaps.load(Ordering::SeqCst) == 0, "a key was processed by two workers at once");
    ensure!(processed >= KEYS, "work was done");
    Ok(())
}

// ---------------------------------------------------------------- leader election

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_candidates_never_both_lead_and_hand_over_on_release() -> Result<()> {
    let server = TestServer::start().await;
    let candidates: Vec<_> =
        (0..4).map(|i| Candidate::start(&server.endpoint, &server.token, &format!("c-{i}"))).collect::<Result<_>>()?;
    let leaders = Leaders::watch(candidates.iter().map(|c| c.leading.clone()).collect());
    let mut stopped = BTreeSet::new();
    for round in 0..3 {
        let leader = leaders.wait_for_leader_except(&stopped).await.with_context(|| format!("round {round}"))?;
        let started = Instant::now();
        candidates[leader].stop();
        stopped.insert(leader);
        let next = leaders.wait_for_leader_except(&stopped).await.with_context(|| format!("takeover {round}"))?;
        // A released lease is taken within a few retry periods, not after it expires.
        ensure!(started.elapsed() < lease_config("").lease_duration, "takeover by {next} took {:?}", started.elapsed());
    }
    ensure!(leaders.max_together() <= 1, "two candidates led at once");
    let lease = Client::new(&server.endpoint)?.with_token(&server.token).get::<Lease>("default", "test-lease").await?;
    ensure!(lease.spec.map(|s| s.lease_transitions) == Some(3), "three hand-overs are recorded");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_leader_steps_down_before_another_takes_over() -> Result<()> {
    let server = TestServer::start().await;
    let proxy = Proxy::start(server.addr).await?;
    let first = Candidate::start(&proxy.endpoint(), &server.token, "first")?;
    let leaders = Leaders::watch(vec![first.leading.clone()]);
    leaders.wait_for_leader_except(&BTreeSet::new()).await.context("first leads")?;
    let second = Candidate::start(&server.endpoint, &server.token, "second")?;
    let leaders = Leaders::watch(vec![first.leading.clone(), second.leading.clone()]);

    let cut = Instant::now();
    proxy.cut();
    let mut first_leading = first.leading.clone();
    timeout(WAIT, first_leading.wait_for(|leading| !leading)).await??;
    let stepped_down = cut.elapsed();
    let config = lease_config("");
    ensure!(stepped_down <= config.renew_deadline + Duration::from_millis(500), "stepped down after {stepped_down:?}");
    leaders.wait_for_leader_except(&BTreeSet::from([0])).await.context("second takes over")?;
    // The takeover waits for the lease to expire; it was renewed less than a renew deadline
    // before the cut, so it cannot expire within lease_duration − renew_deadline of it.
    ensure!(cut.elapsed() >= config.lease_duration - config.renew_deadline, "taken over after {:?}", cut.elapsed());
    ensure!(leaders.max_together() <= 1, "two candidates led at once");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_leaders_writes_are_refused_before_it_notices() -> Result<()> {
    let server = TestServer::start().await;
    let client = Client::new(&server.endpoint)?.with_token(&server.token);
    // A leader that renews rarely, so that it is still sure it leads when its lease is taken.
    let config = LeaderElectionConfig {
        lease_duration: Duration::from_secs(60),
        renew_deadline: Duration::from_secs(50),
        retry_period: Duration::from_secs(40),
        ..LeaderElectionConfig::new("default", "fenced", "old")
    };
    let elector = LeaderElector::new(client.clone(), config)?;
    let (mut leading, fence) = (elector.subscribe(), elector.fence());
    let (_stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(elector.run(async move {
        let _ = stopped.await;
    }));
    timeout(WAIT, leading.wait_for(|l| *l)).await??;
    let term = client.with_fence(fence.borrow().as_ref().context("a leader has a fence")?);
    term.create(lease("work-1", "old")).await.context("a write of the term")?;

    // Another candidate takes the lease, as it would once the old leader's expired (the old one
    // partitioned, paused, slow): a new holder, a new transition.
    let mut taken: Lease = client.get("default", "fenced").await?;
    let spec = taken.spec.get_or_insert_with(Default::default);
    spec.holder_identity = "new".into();
    spec.lease_transitions += 1;
    client.update(taken).await?;

    ensure!(*leading.borrow(), "the old leader has not noticed yet");
    let refused = term.create(lease("work-2", "old")).await;
    let Err(stratus_client::Error::FailedPrecondition(message)) = refused else {
        bail!("the deposed leader's write was not refused: {refused:?}");
    };
    ensure!(
        message
            == "old no longer leads: lease default/fenced is held by new (transition 1, this write is of transition 0)",
        "{message}"
    );
    ensure!(client.get::<Lease>("default", "work-2").await.is_err(), "nothing was written");
    // Its reads still work, and writes outside a term are not fenced.
    term.get::<Lease>("default", "work-1").await?;
    client.create(lease("work-3", "anyone")).await?;
    Ok(())
}

fn lease_config(identity: &str) -> LeaderElectionConfig {
    LeaderElectionConfig {
        lease_duration: Duration::from_secs(2),
        renew_deadline: Duration::from_secs(1),
        retry_period: Duration::from_millis(100),
        ..LeaderElectionConfig::new("default", "test-lease", identity)
    }
}

/// A running [`LeaderElector`].
struct Candidate {
    leading: watch::Receiver<bool>,
    stop: Mutex<Option<oneshot::Sender<()>>>,
}

impl Candidate {
    fn start(endpoint: &str, token: &str, identity: &str) -> Result<Candidate> {
        let elector = LeaderElector::new(Client::new(endpoint)?.with_token(token), lease_config(identity))?;
        let leading = elector.subscribe();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(elector.run(async move {
            let _ = stopped.await;
        }));
        Ok(Candidate { leading, stop: Mutex::new(Some(stop)) })
    }

    fn stop(&self) {
        if let Some(stop) = self.stop.lock().ok().and_then(|mut s| s.take()) {
            let _ = stop.send(());
        }
    }
}

/// Who leads, updated at every change of any candidate's signal, and the most that ever led at
/// once.
struct Leaders {
    now: watch::Sender<Vec<bool>>,
    max_together: Arc<AtomicUsize>,
}

impl Leaders {
    fn watch(signals: Vec<watch::Receiver<bool>>) -> Leaders {
        let now = watch::Sender::new(vec![false; signals.len()]);
        let max_together = Arc::new(AtomicUsize::new(0));
        for (i, mut rx) in signals.into_iter().enumerate() {
            let (now, max_together) = (now.clone(), max_together.clone());
            tokio::spawn(async move {
                loop {
                    let leading = *rx.borrow_and_update();
                    now.send_modify(|v| {
                        v[i] = leading;
                        max_together.fetch_max(v.iter().filter(|l| **l).count(), Ordering::SeqCst);
                    });
                    // A candidate whose elector ended leads no more.
                    if rx.changed().await.is_err() {
                        now.send_modify(|v| v[i] = false);
                        return;
                    }
                }
            });
        }
        Leaders { now, max_together }
    }

    /// Waits until one candidate not in `except` leads; returns its index.
    async fn wait_for_leader_except(&self, except: &BTreeSet<usize>) -> Result<usize> {
        let mut rx = self.now.subscribe();
        let leading = |v: &Vec<bool>| (0..v.len()).find(|i| v[*i] && !except.contains(i));
        let v = timeout(WAIT, rx.wait_for(|v| leading(v).is_some())).await??;
        leading(&v).context("a leader")
    }

    fn max_together(&self) -> usize {
        self.max_together.load(Ordering::SeqCst)
    }
}

// ---------------------------------------------------------------- helpers

fn in_default() -> ListParams {
    ListParams { namespace: "default".into(), ..ListParams::default() }
}

fn fast_informer() -> InformerConfig {
    InformerConfig {
        backoff_base: Duration::from_millis(10),
        backoff_max: Duration::from_millis(200),
        ..InformerConfig::default()
    }
}

fn meta(name: &str) -> Option<ObjectMeta> {
    Some(ObjectMeta { namespace: "default".into(), name: name.into(), ..Default::default() })
}

fn lease(name: &str, holder: &str) -> Lease {
    let spec = LeaseSpec { holder_identity: holder.into(), lease_duration_seconds: 10, ..Default::default() };
    Lease { metadata: meta(name), spec: Some(spec), ..Default::default() }
}

fn instance(name: &str, node: &str, app: &str) -> Instance {
    let mut metadata = meta(name);
    if let Some(m) = metadata.as_mut() {
        m.labels.insert("app".into(), app.into());
    }
    let container = Container { name: "app".into(), image: "registry.local/app:1".into(), ..Default::default() };
    let spec = InstanceSpec { node_name: node.into(), containers: vec![container], ..Default::default() };
    Instance { metadata, spec: Some(spec), ..Default::default() }
}

fn owned_endpoints(name: &str, owner: &Lease) -> Endpoints {
    let mut metadata = meta(name);
    if let Some(m) = metadata.as_mut() {
        m.owner_references.push(OwnerReference {
            api_version: stratus_api::API_VERSION.into(),
            kind: "Lease".into(),
            name: owner.meta().name.clone(),
            uid: owner.meta().uid.clone(),
            controller: true,
            ..Default::default()
        });
    }
    Endpoints { metadata, ..Default::default() }
}

fn versions<'a, K: Resource>(objs: impl Iterator<Item = &'a K>) -> BTreeMap<String, String> {
    objs.map(|o| (o.meta().name.clone(), o.meta().resource_version.clone())).collect()
}

fn names<K: Resource>(objs: Vec<Arc<K>>) -> Vec<String> {
    objs.iter().map(|o| o.meta().name.clone()).collect()
}

/// Creates, updates and deletes leases named `w{writer}-{n}`, `ops` times at random.
async fn random_writes(client: Client, writer: usize, ops: usize) -> Result<()> {
    let mut mine: HashMap<String, Lease> = HashMap::new();
    for op in 0..ops {
        let name = format!("w{writer}-{}", rand::rng().random_range(0..8));
        match mine.remove(&name) {
            None => {
                mine.insert(name.clone(), client.create(lease(&name, "x")).await?);
            }
            Some(current) if rand::rng().random_bool(0.5) => {
                let mut next = current;
                next.spec.get_or_insert_with(LeaseSpec::default).holder_identity = format!("op-{op}");
                mine.insert(name, client.update(next).await?);
            }
            Some(_) => {
                client.delete::<Lease>("default", &name).await?;
            }
        }
    }
    Ok(())
}

/// Whether a watch from `rv` is answered with Gone (at once or as its first item).
async fn watch_is_gone(client: &Client, rv: &str) -> Result<bool> {
    use futures::StreamExt;
    match client.watch::<Lease>(&in_default(), rv, false).await {
        Err(stratus_client::Error::Gone(_)) => Ok(true),
        Err(e) => Err(e.into()),
        Ok(mut stream) => match timeout(WAIT, stream.next()).await? {
            Some(Err(stratus_client::Error::Gone(_))) => Ok(true),
            _ => Ok(false),
        },
    }
}

/// What a subscriber learned from the notifications alone.
#[derive(Clone, Default, Debug)]
struct View {
    /// name → resourceVersion of the objects it believes exist.
    live: BTreeMap<String, String>,
    /// Every name it was told was deleted, and every name it ever saw.
    deleted: BTreeSet<String>,
    seen: BTreeSet<String>,
}

/// A subscriber that rebuilds the cache from notifications, to check that they tell everything.
struct Mirror {
    view: watch::Receiver<View>,
}

impl Mirror {
    fn follow<K: Resource>(mut sub: Subscription<K>) -> Mirror {
        let (tx, view) = watch::channel(View::default());
        tokio::spawn(async move {
            while let Some(change) = sub.recv().await {
                let meta = change.object.meta();
                tx.send_modify(|view| {
                    view.seen.insert(meta.name.clone());
                    match change.kind {
                        ChangeKind::Added | ChangeKind::Modified => {
                            view.live.insert(meta.name.clone(), meta.resource_version.clone());
                        }
                        ChangeKind::Deleted => {
                            view.live.remove(&meta.name);
                            view.deleted.insert(meta.name.clone());
                        }
                    }
                });
            }
        });
        Mirror { view }
    }

    async fn wait_for(&self, cond: impl Fn(&View) -> bool) -> Result<View> {
        let mut rx = self.view.clone();
        let view = match timeout(WAIT, rx.wait_for(|v| cond(v))).await {
            Ok(Ok(view)) => view.clone(),
            Ok(Err(_)) => bail!("the subscription ended"),
            Err(_) => bail!("timed out; the view is {:?}", *self.view.borrow()),
        };
        Ok(view)
    }
}

/// A TCP forwarder to the server that the test can cut (dropping every connection and refusing
/// new ones) and restore, to break an informer's or elector's connection at will.
struct Proxy {
    addr: SocketAddr,
    state: Arc<Mutex<ProxyState>>,
    accept: AbortHandle,
}

struct ProxyState {
    up: bool,
    connections: Vec<AbortHandle>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(ProxyState { up: true, connections: Vec::new() }));
        let accept = tokio::spawn(accept_loop(listener, target, state.clone())).abort_handle();
        Ok(Proxy { addr, state, accept })
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn cut(&self) {
        if let Ok(mut state) = self.state.lock() {
            state.up = false;
            state.connections.drain(..).for_each(|c| c.abort());
        }
    }

    fn restore(&self) {
        if let Ok(mut state) = self.state.lock() {
            state.up = true;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, target: SocketAddr, state: Arc<Mutex<ProxyState>>) {
    while let Ok((mut inbound, _)) = listener.accept().await {
        let Ok(mut state) = state.lock() else { return };
        // Checked and recorded under the lock, so that a cut cannot miss a new connection; while
        // cut, the connection is dropped at once, which the client sees as a refusal.
        if state.up {
            let forward = tokio::spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
            state.connections.push(forward.abort_handle());
        }
    }
}
