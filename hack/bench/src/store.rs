//! `stratus-bench store`: the API server on the embedded store and on etcd, side by side in one run.
//!
//! For each backend it measures creates/s and updates/s with 1, 16 and 64 concurrent clients,
//! both through the API server (gRPC, typed client) and straight against the store (so the API
//! server's overhead shows as a ratio), and the latency from a write to its watch event.
//! Prints a table and writes the numbers as JSON.
//!
//! `cargo run -p stratus-bench --release -- store --seconds 3 --out docs/benchmarks.json`

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use clap::Args as ClapArgs;
use futures::StreamExt;
use serde_json::json;
use stratus_api::Resource;
use stratus_api::v1::Service;
use stratus_client::{Client, ListParams, WatchEvent};
use stratus_store::Store;

/// Writes/s and watch latency through the API server, on the embedded store and on etcd.
#[derive(ClapArgs)]
pub struct Args {
    /// Seconds each throughput measurement runs.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Concurrent clients to measure with.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    clients: Vec<usize>,
    /// Writes whose watch latency is measured.
    #[arg(long, default_value_t = 2000)]
    watch_writes: usize,
    /// Where to write the results as JSON.
    #[arg(long, default_value = "docs/benchmarks.json")]
    out: String,
}

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Create,
    Update,
}

pub async fn run(args: Args) -> Result<()> {
    let window = Duration::from_secs_f64(args.seconds);
    let etcd = stratus_testkit::EtcdServer::start().await;
    let dir = tempfile::tempdir()?;
    let backends: Vec<(&str, Arc<dyn Store>)> = vec![
        ("embedded", stratus_store::embedded::EmbeddedStore::open(dir.path().join("embedded")).await?),
        ("etcd", stratus_store::etcd::EtcdStore::connect(std::slice::from_ref(&etcd.endpoint)).await?),
    ];

    let mut rows = Vec::new();
    let mut watch_rows = Vec::new();
    for (name, store) in backends {
        let server = stratus_apiserver::ApiServer::new(store.clone()).await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let (client, developer) = clients(&server, &endpoint).await?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(server.serve(listener, async move {
            let _ = stopped.await;
        }));
        // Warm the connections up so the first measurement does not pay for them.
        client.list::<Service>(&ListParams::default()).await.context("API server answers")?;
        developer.list::<Service>(&ListParams::default()).await.context("API server answers the developer")?;

        for op in [Op::Create, Op::Update] {
            for &n in &args.clients {
                let tag = format!("{name}-{}-{n}", if op == Op::Create { "c" } else { "u" });
                let api = through_api(&client, op, n, window, &format!("{tag}-a")).await?;
                let as_developer = through_api(&developer, op, n, window, &format!("{tag}-d")).await?;
                let direct = direct(&store, op, n, window, &tag).await?;
                let row = json!({
                    "backend": name, "op": if op == Op::Create { "create" } else { "update" }, "clients": n,
                    "api_per_sec": api, "api_developer_per_sec": as_developer, "store_per_sec": direct,
                    "api_over_store": api / direct,
                });
                eprintln!("{row}");
                rows.push(row);
            }
        }
        let (p50, p99, max) = watch_latency(&client, args.watch_writes, name).await?;
        watch_rows
            .push(json!({"backend": name, "writes": args.watch_writes, "p50_ms": p50, "p99_ms": p99, "max_ms": max}));
        let _ = stop.send(());
        serving.await??;
    }

    println!(
        "\nWrites per second ({}s each; API = gRPC through stratus-apiserver, store = the Store trait directly)\n",
        args.seconds
    );
    println!(
        "| backend | op | clients | API writes/s (cluster admin) | API writes/s (developer) | store writes/s | API / store |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.2} |",
            r["backend"].as_str().unwrap_or_default(),
            r["op"].as_str().unwrap_or_default(),
            r["clients"],
            r["api_per_sec"].as_f64().unwrap_or_default(),
            r["api_developer_per_sec"].as_f64().unwrap_or_default(),
            r["store_per_sec"].as_f64().unwrap_or_default(),
            r["api_over_store"].as_f64().unwrap_or_default()
        );
    }
    println!("\nWatch delivery latency, create request sent → ADDED event received by a gRPC watcher\n");
    println!("| backend | writes | p50 ms | p99 ms | max ms |");
    println!("|---|---:|---:|---:|---:|");
    for r in &watch_rows {
        println!(
            "| {} | {} | {:.2} | {:.2} | {:.2} |",
            r["backend"].as_str().unwrap_or_default(),
            r["writes"],
            r["p50_ms"].as_f64().unwrap_or_default(),
            r["p99_ms"].as_f64().unwrap_or_default(),
            r["max_ms"].as_f64().unwrap_or_default()
        );
    }
    let doc = json!({"seconds_per_measurement": args.seconds, "throughput": rows, "watch_latency": watch_rows});
    std::fs::write(&args.out, serde_json::to_string_pretty(&doc)?).with_context(|| format!("writing {}", args.out))?;
    println!("\nwritten to {}", args.out);
    Ok(())
}

/// A cluster admin, and a developer of the `default` namespace (a service account bound there):
/// every write of the developer's also reads the namespace's tenant and its role bindings.
async fn clients(server: &stratus_apiserver::ApiServer, endpoint: &str) -> Result<(Client, Client)> {
    let admin = crate::admin_client(server, endpoint).await?;
    let registry = server.registry();
    let system = stratus_apiserver::auth::Caller::system();
    let mut sa = stratus_api::v1::ServiceAccount::default();
    sa.meta_mut().name = "bench-dev".into();
    sa.meta_mut().namespace = "default".into();
    registry.create(&system, sa.into_any()).await?;
    let mut rb = stratus_api::v1::RoleBinding {
        spec: Some(stratus_api::v1::RoleBindingSpec {
            role: stratus_api::identity::roles::DEVELOPER.into(),
            subjects: vec![stratus_api::v1::Subject {
                kind: "ServiceAccount".into(),
                name: "bench-dev".into(),
                namespace: String::new(),
            }],
        }),
        ..Default::default()
    };
    rb.meta_mut().name = "bench-dev".into();
    rb.meta_mut().namespace = "default".into();
    registry.create(&system, rb.into_any()).await?;
    let token = server.identity().issue_for_service_account("default", "bench-dev", Duration::from_secs(3600)).await?;
    Ok((admin, Client::new(endpoint)?.with_token(&token.token)))
}

fn service(name: &str) -> Service {
    Service::with_image(name, "127.0.0.1:5000/stratus/hello:v1")
}

/// Runs `clients` tasks writing for `window`; returns writes per second.
/// Creates/s through `client` with `clients` concurrent writers for `window`.
pub(crate) async fn creates(client: &Client, clients: usize, window: Duration, tag: &str) -> Result<f64> {
    through_api(client, Op::Create, clients, window, tag).await
}

async fn through_api(client: &Client, op: Op, clients: usize, window: Duration, tag: &str) -> Result<f64> {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (client, done, stop, tag) = (client.clone(), done.clone(), stop.clone(), tag.to_string());
        tasks.push(tokio::spawn(async move {
            let mut current =
                if op == Op::Update { Some(client.create(service(&format!("{tag}-{c}"))).await?) } else { None };
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                match op {
                    Op::Create => {
                        client.create(service(&format!("{tag}-{c}-{i}"))).await?;
                    }
                    Op::Update => {
                        let mut svc = current.take().context("object to update")?;
                        svc.meta_mut().annotations.insert("n".into(), i.to_string());
                        current = Some(client.update(svc).await?);
                    }
                }
                i += 1;
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    measure(done, stop, tasks, window).await
}

async fn direct(store: &Arc<dyn Store>, op: Op, clients: usize, window: Duration, tag: &str) -> Result<f64> {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let value: Bytes = service("x").into_any().encode_to_vec().into();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (store, done, stop, value) = (store.clone(), done.clone(), stop.clone(), value.clone());
        let key = format!("/bench/{tag}/{c}");
        tasks.push(tokio::spawn(async move {
            let mut rev = if op == Op::Update { store.create(&key, value.clone(), 0).await? } else { 0 };
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                match op {
                    Op::Create => {
                        store.create(&format!("{key}/{i}"), value.clone(), 0).await?;
                    }
                    Op::Update => rev = store.update(&key, value.clone(), rev).await?,
                }
                i += 1;
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    measure(done, stop, tasks, window).await
}

async fn measure(
    done: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Result<()>>>,
    window: Duration,
) -> Result<f64> {
    // Let every client get going (the update clients create their object first).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (start, before) = (Instant::now(), done.load(Ordering::Relaxed));
    tokio::time::sleep(window).await;
    let (elapsed, after) = (start.elapsed(), done.load(Ordering::Relaxed));
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await??;
    }
    Ok((after - before) as f64 / elapsed.as_secs_f64())
}

/// Creates `writes` objects one after another and measures how long each takes to arrive at
/// a watcher, from the moment its create request was sent.
async fn watch_latency(client: &Client, writes: usize, tag: &str) -> Result<(f64, f64, f64)> {
    let list = client.list::<Service>(&ListParams::default()).await?;
    let mut watch = client.watch::<Service>(&ListParams::default(), &list.resource_version, false).await?;
    let sent: Arc<tokio::sync::Mutex<HashMap<String, Instant>>> = Arc::default();
    let writer = {
        let (client, sent, tag) = (client.clone(), sent.clone(), tag.to_string());
        tokio::spawn(async move {
            for i in 0..writes {
                let name = format!("watch-{tag}-{i}");
                sent.lock().await.insert(name.clone(), Instant::now());
                client.create(service(&name)).await?;
                // A modest pace: this measures delivery latency, not throughput.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            anyhow::Ok(())
        })
    };
    let mut hist = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut seen = 0;
    while seen < writes {
        let ev = tokio::time::timeout(Duration::from_secs(30), watch.next()).await.context("watch event in time")?;
        let Some(ev) = ev else { anyhow::bail!("watch ended") };
        if let WatchEvent::Added(svc) = ev? {
            let received = Instant::now();
            let name = svc.meta().name.clone();
            if !name.starts_with("watch-") {
                continue;
            }
            let at = sent.lock().await.get(&name).copied().context("an event for a write never sent")?;
            hist.record(received.saturating_duration_since(at).as_micros().max(1) as u64)?;
            seen += 1;
        }
    }
    writer.await??;
    let ms = |v: u64| v as f64 / 1000.0;
    Ok((ms(hist.value_at_quantile(0.5)), ms(hist.value_at_quantile(0.99)), ms(hist.max())))
}
