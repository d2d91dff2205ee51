//! `stratus-bench scale`: the control plane at Kubernetes' scale limits (5,000 nodes, 150,000
//! instances by default), on this machine.
//!
//! `stratus-apiserver` (embedded store) and `stratus-controllers` run as processes of their own,
//! so that their memory is theirs; the nodes are hollow ([`stratus_agent::hollow`]): registered,
//! renewing their Leases every 10 s and reporting their Instances Running, in this process.
//! The run:
//!
//! 1. registers the hollow nodes, then creates the pending Instances (no controller runs yet);
//! 2. starts the controllers and times the scheduler from its first bind to its last
//!    (placements per second) while a prober measures API latency: get of one object, list of
//!    every Node (cluster-wide), a write, and the time from a write to its watch event;
//! 3. waits for every Instance to be reported Running, then checks: every Node Ready (leases
//!    kept up under the load), none holding more instances than it allows;
//! 4. reports the processes' resident memory idle, after the objects, and at the end.
//!
//! Fails (exit 1) when a check fails, so that a small run in CI proves the whole path.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use clap::Args as ClapArgs;
use futures::{FutureExt, StreamExt, TryStreamExt};
use hdrhistogram::Histogram;
use serde_json::json;
use stratus_agent::hollow::{self, HollowConfig};
use stratus_api::Resource;
use stratus_api::v1::{Instance, Node, Secret, ServiceAccount, ServiceAccountSpec};
use stratus_client::runtime::{ChangeKind, Informer, ObjectRef, Subscription};
use stratus_client::{Client, ListParams, WatchEvent};
use tokio::sync::watch;

use crate::procs::{Proc, Rss, admin_client, path, spawn};

#[derive(ClapArgs)]
pub struct Args {
    #[arg(long, default_value_t = 5000)]
    nodes: usize,
    #[arg(long, default_value_t = 150_000)]
    instances: usize,
    /// Where to write the result as JSON.
    #[arg(long, default_value = "docs/benchmarks-scale.json")]
    out: String,
    /// Keep the run's directory (the processes' logs, the store) and print where it is.
    #[arg(long)]
    keep: bool,
}

pub async fn run(args: Args) -> Result<()> {
    ensure!(args.nodes > 0 && args.instances > 0, "--nodes and --instances must be at least 1");
    let capacity = args.nodes * 110;
    ensure!(args.instances <= capacity, "{} instances do not fit on {} nodes of 110", args.instances, args.nodes);
    let dir = tempfile::tempdir()?;
    if args.keep {
        eprintln!("the run's directory: {}", dir.path().display());
    }
    let addr = format!("127.0.0.1:{}", stratus_testkit::free_port());
    let endpoint = format!("https://{addr}");
    let data = dir.path().join("data");
    let password_file = dir.path().join("admin-password");
    let apiserver = spawn(
        "stratus-apiserver",
        &[
            "--store",
            "embedded",
            "--listen",
            &addr,
            "--data-dir",
            &path(&data),
            "--bootstrap-admin",
            &path(&password_file),
        ],
        &dir.path().join("apiserver.log"),
    )?;
    let ca_file = data.join("pki").join("ca.crt");
    let (admin, _) = admin_client(&endpoint, &ca_file, &password_file).await?;
    let idle = settled_rss(&apiserver).await;

    eprintln!("registering {} hollow nodes…", args.nodes);
    let (stop, stopped) = watch::channel(false);
    let started = Instant::now();
    let config = HollowConfig { nodes: args.nodes, concurrency: 64, ..Default::default() };
    let hollow = hollow::start(admin.clone(), config, stopped).await?;
    let registering = started.elapsed();
    let with_nodes = settled_rss(&apiserver).await;

    eprintln!("creating {} pending instances…", args.instances);
    let started = Instant::now();
    futures::stream::iter(0..args.instances)
        .map(|i| {
            let client = admin.clone();
            async move {
                client.create(crate::scheduler::instance(&format!("inst-{i:06}"), &format!("rev-{:03}", i % 100))).await
            }
        })
        .buffer_unordered(64)
        .try_collect::<Vec<_>>()
        .await?;
    let creating = started.elapsed();
    let with_instances = settled_rss(&apiserver).await;

    // What the bench sees: every Instance, as the controllers will.
    let instances = Informer::<Instance>::spawn(admin.clone(), ListParams::default());
    instances.wait_synced().await;

    let prober = tokio::spawn(probe(admin.clone(), stop.subscribe()));
    let controllers = start_controllers(&endpoint, &ca_file, &admin, dir.path()).await?;
    eprintln!("scheduling…");
    let started = Instant::now();
    let mut first_bind = None;
    let deadline = started + Duration::from_secs(3600);
    let mut progress = Progress::new(&instances);
    let last_bind = loop {
        let (bound, running) = progress.counts();
        if bound > 0 && first_bind.is_none() {
            first_bind = Some(started.elapsed());
        }
        if bound == args.instances {
            break started.elapsed();
        }
        ensure!(
            Instant::now() < deadline,
            "only {bound} of {} instances bound after an hour ({running} running)",
            args.instances
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let first_bind = first_bind.unwrap_or(last_bind);
    eprintln!("waiting for every instance to be reported running…");
    let all_running = loop {
        let (_, running) = progress.counts();
        if running == args.instances {
            break started.elapsed();
        }
        ensure!(Instant::now() < deadline, "only {running} of {} instances running", args.instances);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = stop.send(true);
    let latencies = prober.await??;
    let end_api = Rss::of(&apiserver);
    let end_controllers = Rss::of(&controllers);

    // Checks.
    let nodes = admin.list_all::<Node>(&ListParams::default()).await?.items;
    let not_ready: Vec<_> = nodes
        .iter()
        .filter(|n| {
            !n.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.r#type == "Ready" && c.status == "True"))
        })
        .map(|n| n.meta().name.clone())
        .collect();
    ensure!(
        not_ready.is_empty(),
        "{} nodes are not Ready at the end (leases lost?): {:?}",
        not_ready.len(),
        &not_ready[..not_ready.len().min(10)]
    );
    let mut per_node = std::collections::HashMap::<String, usize>::new();
    for i in instances.store().list() {
        *per_node.entry(i.spec.clone().unwrap_or_default().node_name).or_default() += 1;
    }
    let (min, max) = (per_node.values().min().copied().unwrap_or(0), per_node.values().max().copied().unwrap_or(0));
    ensure!(max <= 110, "a node holds {max} instances, more than its 110");
    let placing = last_bind.saturating_sub(first_bind).max(Duration::from_millis(1));
    let rate = args.instances as f64 / placing.as_secs_f64();

    let objects = args.instances.max(1) as f64;
    let per_instance = with_instances.rss.saturating_sub(with_nodes.rss) as f64 / objects;
    println!("\nScale: {} hollow nodes, {} instances\n", args.nodes, args.instances);
    println!("| step | seconds |");
    println!("|---|---:|");
    println!("| register the nodes | {:.1} |", registering.as_secs_f64());
    println!("| create the instances ({:.0}/s) | {:.1} |", objects / creating.as_secs_f64(), creating.as_secs_f64());
    println!("| controllers start → first bind (lists, caches) | {:.1} |", first_bind.as_secs_f64());
    println!("| first bind → last bind | {:.1} |", placing.as_secs_f64());
    println!("| controllers start → every instance Running | {:.1} |", all_running.as_secs_f64());
    println!("\nScheduler: {rate:.0} placements/s; instances per node {min}–{max}\n");
    println!("| API call during the run | calls | p50 ms | p99 ms | max ms |");
    println!("|---|---:|---:|---:|---:|");
    for (name, h) in &latencies {
        println!(
            "| {name} | {} | {:.1} | {:.1} | {:.1} |",
            h.len(),
            h.value_at_quantile(0.5) as f64 / 1000.0,
            h.value_at_quantile(0.99) as f64 / 1000.0,
            h.max() as f64 / 1000.0
        );
    }
    println!("\n| process | resident MB | peak MB |");
    println!("|---|---:|---:|");
    println!("| apiserver idle | {:.1} | {:.1} |", idle.mb(), idle.peak_mb());
    println!("| apiserver with {} nodes | {:.1} | {:.1} |", args.nodes, with_nodes.mb(), with_nodes.peak_mb());
    println!("| apiserver with the instances | {:.1} | {:.1} |", with_instances.mb(), with_instances.peak_mb());
    println!("| apiserver at the end | {:.1} | {:.1} |", end_api.mb(), end_api.peak_mb());
    println!("| controllers at the end | {:.1} | {:.1} |", end_controllers.mb(), end_controllers.peak_mb());
    println!("\nAPI server memory per instance: {per_instance:.0} bytes");
    let latency_doc: serde_json::Map<String, serde_json::Value> = latencies
        .iter()
        .map(|(name, h)| {
            let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
            (
                name.to_string(),
                json!({"calls": h.len(), "p50_ms": ms(0.5), "p99_ms": ms(0.99), "max_ms": h.max() as f64 / 1000.0}),
            )
        })
        .collect();
    let doc = json!({
        "nodes": args.nodes, "instances": args.instances,
        "register_seconds": registering.as_secs_f64(), "create_seconds": creating.as_secs_f64(),
        "first_bind_seconds": first_bind.as_secs_f64(), "placing_seconds": placing.as_secs_f64(),
        "all_running_seconds": all_running.as_secs_f64(), "placements_per_sec": rate,
        "per_node_min": min, "per_node_max": max, "api_latency": latency_doc,
        "apiserver_rss_mb": {"idle": idle.mb(), "nodes": with_nodes.mb(), "instances": with_instances.mb(), "end": end_api.mb(), "peak": end_api.peak_mb()},
        "controllers_rss_mb": {"end": end_controllers.mb(), "peak": end_controllers.peak_mb()},
        "apiserver_bytes_per_instance": per_instance,
    });
    std::fs::write(&args.out, serde_json::to_string_pretty(&doc)?).with_context(|| format!("writing {}", args.out))?;
    drop(controllers);
    hollow.abort();
    drop(apiserver);
    if args.keep {
        let _ = dir.keep();
    }
    Ok(())
}

/// How long the API server is left before its memory is read for the per-instance figure:
/// its allocator (mimalloc) gives freed memory back a second after the free, so a reading
/// taken at once still holds what the last step freed (argon2's working memory after the
/// login, request buffers after the creates), and a difference of two readings could even
/// come out below zero.
const SETTLE: Duration = Duration::from_secs(2);

/// The resident memory of `proc` once what it freed has been given back ([`SETTLE`]).
async fn settled_rss(proc: &Proc) -> Rss {
    tokio::time::sleep(SETTLE).await;
    Rss::of(proc)
}

/// Bound and running Instances, counted from the cache's changes as they come (a count over
/// the whole cache every few milliseconds would cost the machine what is being measured).
struct Progress {
    changes: Subscription<Instance>,
    seen: HashMap<ObjectRef, (bool, bool)>,
    bound: usize,
    running: usize,
}

impl Progress {
    fn new(instances: &Informer<Instance>) -> Progress {
        Progress { changes: instances.subscribe(), seen: HashMap::new(), bound: 0, running: 0 }
    }

    /// The counts after every change delivered so far.
    fn counts(&mut self) -> (usize, usize) {
        while let Some(Some(change)) = self.changes.next().now_or_never() {
            let inst = &change.object;
            let now = match change.kind {
                ChangeKind::Deleted => (false, false),
                ChangeKind::Added | ChangeKind::Modified => (
                    inst.spec.as_ref().is_some_and(|s| !s.node_name.is_empty()),
                    inst.status.as_ref().is_some_and(|s| s.ready && s.phase == "Running"),
                ),
            };
            let before = self.seen.insert(change.key(), now).unwrap_or((false, false));
            self.bound = self.bound + usize::from(now.0) - usize::from(before.0);
            self.running = self.running + usize::from(now.1) - usize::from(before.1);
        }
        (self.bound, self.running)
    }
}

/// The API latency probes, every 100 ms until `stop`: a get of one Node, a write (a Secret's
/// update), the time from that write to its watch event and, every 2 s, a list of every Node.
async fn probe(client: Client, mut stop: watch::Receiver<bool>) -> Result<Vec<(&'static str, Histogram<u64>)>> {
    let new = || Histogram::<u64>::new_with_bounds(1, 600_000_000, 3);
    let (mut get, mut list, mut write, mut watched) = (new()?, new()?, new()?, new()?);
    let mut secret = Secret::default();
    secret.meta_mut().name = "bench-probe".into();
    secret.meta_mut().namespace = "default".into();
    let mut secret = client.create(secret).await?;
    let params = ListParams {
        namespace: "default".into(),
        field_selector: "metadata.name=bench-probe".into(),
        ..Default::default()
    };
    let mut events = client.watch::<Secret>(&params, &secret.meta().resource_version, false).await?;
    let node = client.list::<Node>(&ListParams { limit: 1, ..Default::default() }).await?.items.into_iter().next();
    let node = node.map(|n| n.meta().name.clone()).context("no node to get")?;
    let mut round = 0u64;
    while !*stop.borrow() {
        let t = Instant::now();
        client.get::<Node>("", &node).await?;
        get.record(micros(t))?;
        if round.is_multiple_of(20) {
            let t = Instant::now();
            client.list_all::<Node>(&ListParams::default()).await?;
            list.record(micros(t))?;
        }
        secret.data.insert("round".into(), round.to_string());
        let t = Instant::now();
        secret = client.update(secret).await?;
        write.record(micros(t))?;
        let want = secret.meta().resource_version.clone();
        loop {
            match tokio::time::timeout(Duration::from_secs(60), events.next()).await {
                Ok(Some(Ok(WatchEvent::Modified(s)))) if s.meta().resource_version == want => break,
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(e))) => bail!("the probe's watch failed: {e}"),
                Ok(None) => bail!("the probe's watch ended"),
                Err(_) => bail!("no watch event of the probe's write within 60 s"),
            }
        }
        watched.record(micros(t))?;
        round += 1;
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = stop.changed() => {}
        }
    }
    Ok(vec![
        ("get (one Node)", get),
        ("list (every Node)", list),
        ("write (update a Secret)", write),
        ("watch (write to its event)", watched),
    ])
}

fn micros(t: Instant) -> u64 {
    u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX).max(1)
}

/// `stratus-controllers` as the service account stratus-system/bench-controllers.
async fn start_controllers(endpoint: &str, ca_file: &Path, admin: &Client, dir: &Path) -> Result<Proc> {
    let mut account = ServiceAccount::default();
    account.meta_mut().name = "bench-controllers".into();
    account.meta_mut().namespace = "stratus-system".into();
    let cluster_role = stratus_api::identity::roles::SYSTEM_CONTROLLERS.to_string();
    account.spec = Some(ServiceAccountSpec { cluster_role, ..Default::default() });
    admin.create(account).await?;
    let token = admin.create_token("stratus-system", "bench-controllers", Some(Duration::from_secs(24 * 3600))).await?;
    let token_file = dir.join("controllers.token");
    std::fs::write(&token_file, token.access_token)?;
    spawn(
        "stratus-controllers",
        &[
            "--apiserver",
            endpoint,
            "--certificate-authority",
            &path(ca_file),
            "--token-file",
            &path(&token_file),
            "--identity",
            "bench",
            "--metrics-listen",
            "127.0.0.1:0",
            "--autoscaler-listen",
            "127.0.0.1:0",
        ],
        &dir.join("controllers.log"),
    )
}
