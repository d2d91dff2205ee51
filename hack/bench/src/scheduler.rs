//! `stratus-bench scheduler`: how fast the scheduler places instances. Registers `--nodes` Nodes
//! (no agent behind them) and `--instances` pending Instances through an in-process API server
//! on the embedded store, then runs the scheduler alone and times how long until every
//! Instance is bound (each bind is a real optimistic-concurrency write through the API).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use clap::Args as ClapArgs;
use futures::{StreamExt, TryStreamExt};
use serde_json::json;
use stratus_api::Resource;
use stratus_api::v1::{Condition, Container, Instance, InstanceSpec, Node, NodeStatus, ResourceRequirements};
use stratus_client::{Client, ListParams};

#[derive(ClapArgs)]
pub struct Args {
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    #[arg(long, default_value_t = 10_000)]
    instances: usize,
    /// Where to write the result as JSON.
    #[arg(long, default_value = "docs/benchmarks-scheduler.json")]
    out: String,
}

pub async fn run(args: Args) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = stratus_store::embedded::EmbeddedStore::open(dir.path().join("data")).await?;
    let server = stratus_apiserver::ApiServer::new(store).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let client = crate::admin_client(&server, &format!("http://{}", listener.local_addr()?)).await?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(listener, async move {
        let _ = stopped.await;
    }));

    eprintln!("registering {} nodes and {} pending instances…", args.nodes, args.instances);
    futures::stream::iter(0..args.nodes)
        .map(|i| register_node(client.clone(), format!("node-{i:04}")))
        .buffer_unordered(32)
        .try_collect::<Vec<()>>()
        .await?;
    futures::stream::iter(0..args.instances)
        .map(|i| {
            let client = client.clone();
            async move { client.create(instance(&format!("inst-{i:05}"), &format!("rev-{:03}", i % 100))).await }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await?;

    let metrics = Arc::new(stratus_controllers::Metrics::default());
    let ctx = stratus_controllers::Context::new(client.clone(), stratus_controllers::Config::default(), metrics);
    ctx.wait_synced().await;
    let (sched_stop, sched_stopped) = tokio::sync::oneshot::channel::<()>();
    let start = Instant::now();
    let scheduler = tokio::spawn(stratus_controllers::scheduler::run(ctx.clone(), async move {
        let _ = sched_stopped.await;
    }));
    // Count binds as the cache sees them.
    let deadline = start + Duration::from_secs(600);
    let elapsed = loop {
        let bound = ctx
            .instances
            .store()
            .list()
            .iter()
            .filter(|i| i.spec.as_ref().is_some_and(|s| !s.node_name.is_empty()))
            .count();
        if bound == args.instances {
            break start.elapsed();
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {bound} of {} instances bound after 10 minutes",
            args.instances
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let _ = sched_stop.send(());
    scheduler.await?;

    // Check the placement: nothing over capacity, spread over every node.
    let bound = client.list_all::<Instance>(&ListParams::default()).await?.items;
    let mut per_node = std::collections::HashMap::<String, usize>::new();
    for i in &bound {
        *per_node.entry(i.spec.clone().unwrap_or_default().node_name).or_default() += 1;
    }
    let (min, max) = (per_node.values().min().copied().unwrap_or(0), per_node.values().max().copied().unwrap_or(0));
    let rate = args.instances as f64 / elapsed.as_secs_f64();
    println!("\nScheduler: {} instances over {} nodes\n", args.instances, args.nodes);
    println!("| instances | nodes | seconds | placements/s | instances per node (min–max) |");
    println!("|---:|---:|---:|---:|---|");
    println!("| {} | {} | {:.2} | {:.0} | {min}–{max} |", args.instances, args.nodes, elapsed.as_secs_f64(), rate);
    let doc = json!({"instances": args.instances, "nodes": args.nodes, "seconds": elapsed.as_secs_f64(),
                     "placements_per_sec": rate, "per_node_min": min, "per_node_max": max});
    std::fs::write(&args.out, serde_json::to_string_pretty(&doc)?).with_context(|| format!("writing {}", args.out))?;
    let _ = stop.send(());
    serving.await??;
    Ok(())
}

async fn register_node(client: Client, name: String) -> Result<()> {
    let mut node = Node::default();
    node.meta_mut().name = name;
    let mut node = client.create(node).await?;
    let quantities = |cpu: &str| -> std::collections::BTreeMap<String, String> {
        [("cpu".into(), cpu.into()), ("memory".into(), "64Gi".into()), ("instances".into(), "110".into())].into()
    };
    node.status = Some(NodeStatus {
        capacity: quantities("16"),
        allocatable: quantities("16"),
        conditions: vec![Condition { r#type: "Ready".into(), status: "True".into(), ..Default::default() }],
        ..Default::default()
    });
    client.update_status(node).await?;
    Ok(())
}

/// A pending Instance of `revision` asking for 100m CPU and 128Mi (its limits).
pub(crate) fn instance(name: &str, revision: &str) -> Instance {
    let mut inst = Instance::default();
    inst.meta_mut().name = name.into();
    inst.meta_mut().labels.insert(stratus_api::wellknown::labels::REVISION.into(), revision.into());
    inst.spec = Some(InstanceSpec {
        service_name: "bench".into(),
        revision_name: revision.into(),
        containers: vec![Container {
            image: "127.0.0.1:5000/hello:v1".into(),
            resources: Some(ResourceRequirements {
                limits: [("cpu".to_string(), "100m".to_string()), ("memory".to_string(), "128Mi".to_string())].into(),
                requests: Default::default(),
            }),
            ..Default::default()
        }],
        ..Default::default()
    });
    inst
}
