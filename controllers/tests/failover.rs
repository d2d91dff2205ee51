//! Two controller replicas, leader-elected, each serving the autoscaler's demand service, with
//! a "gateway" reporting to both (as `stratus-gateway --autoscaler A,B` does): when the leader
//! stops, the standby takes over with the demand already in hand and keeps the instance count,
//! instead of starting from nothing and scaling down.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster;

use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use cluster::{eventually, reconciles};
use stratus_api::Resource;
use stratus_api::v1::autoscaler_client::AutoscalerClient;
use stratus_api::v1::{DemandReport, Revision, RevisionDemand, Service};
use stratus_apiserver::testing::TestServer;
use stratus_client::review::TokenReview;
use stratus_client::{Bearer, Client, Credentials};
use stratus_controllers::{Config, DemandStore, Metrics, autoscaler, run_with_demand, serve_autoscaler};
use tokio::sync::watch;

const NS: &str = "default";

/// One controller replica: its metrics, the address of its demand service, and its stop.
struct Replica {
    metrics: Arc<Metrics>,
    endpoint: String,
    stop: watch::Sender<bool>,
}

impl Replica {
    async fn start(client: &Client, identity: &str) -> Replica {
        let config = Config {
            identity: identity.into(),
            autoscale_tick: Duration::from_millis(200),
            stable_window: Duration::from_secs(2),
            scale_to_zero_grace: Duration::from_secs(1),
            ..Config::default()
        };
        let demand = DemandStore::new();
        let metrics = Arc::new(Metrics::default());
        let (stop, stopped) = watch::channel(false);
        let until = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let review = Arc::new(TokenReview::new(client.clone(), autoscaler::REPORTERS));
        tokio::spawn(serve_autoscaler(listener, demand.clone(), review, until(stopped.clone())));
        tokio::spawn(run_with_demand(client.clone(), config, metrics.clone(), demand, until(stopped)));
        Replica { metrics, endpoint, stop }
    }

    fn leads(&self) -> bool {
        self.metrics.leader.get() == 1
    }
}

/// Streams, as a gateway, `concurrency` requests in flight for `revision` to the demand service
/// at `endpoint` every 100 ms, until the returned sender is dropped.
fn report(endpoint: &str, token: &str, revision: &str, concurrency: f64) -> watch::Sender<bool> {
    let (done, stopped) = watch::channel(false);
    let report = DemandReport {
        gateway: "gw".into(),
        revisions: vec![RevisionDemand {
            namespace: NS.into(),
            revision: revision.into(),
            concurrency,
            requests: 10,
            queued: 0,
            period_ms: 100,
            latency_buckets: Vec::new(),
        }],
    };
    let reports = futures::stream::unfold(stopped, move |mut stopped| {
        let report = report.clone();
        async move {
            let ended = tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => false,
                _ = stopped.wait_for(|s| *s) => true,
            };
            if ended { None } else { Some((report, stopped)) }
        }
    });
    let channel = tonic::transport::Endpoint::from_shared(endpoint.to_string()).unwrap().connect_lazy();
    let mut client = AutoscalerClient::with_interceptor(channel, Bearer::new(Credentials::Token(token.into())));
    tokio::spawn(async move {
        let _ = client.report_demand(reports).await;
    });
    done
}

async fn desired(client: &Client, revision: &str) -> Result<(i32, String), String> {
    let rev = client.get::<Revision>(NS, revision).await.map_err(|e| e.to_string())?;
    let status = rev.status.unwrap_or_default();
    Ok((status.desired_instances, status.scale_reason))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_that_takes_over_keeps_the_instance_count() {
    let server = TestServer::start().await;
    let client = Client::new(&server.endpoint).unwrap().with_token(&server.token);
    let first = Replica::start(&client, "replica-1").await;
    eventually("replica-1 to lead", || std::future::ready(if first.leads() { Ok(()) } else { Err("no".into()) })).await;
    let second = Replica::start(&client, "replica-2").await;

    // 50 in flight, reported to both replicas; at 10 per instance and 70 %, ceil(50 / 7) = 8.
    let role = stratus_api::identity::roles::SYSTEM_GATEWAY;
    let token = server.identity.component_token("gateway", role, "").await.unwrap()();
    let revision = "steady-00001";
    let _to_first = report(&first.endpoint, &token, revision, 50.0);
    let to_second = report(&second.endpoint, &token, revision, 50.0);
    let mut svc = Service::with_image("steady", "stratus/local:dev");
    svc.meta_mut().namespace = NS.into();
    let spec = svc.spec.as_mut().and_then(|s| s.template.as_mut()).and_then(|t| t.spec.as_mut()).unwrap();
    spec.containers[0].image_pull_policy = "Never".into();
    spec.container_concurrency = Some(10);
    client.apply(svc).await.unwrap();
    eventually("the leader to scale to 8", || async {
        let (n, reason) = desired(&client, revision).await?;
        if n == 8 { Ok(()) } else { Err(format!("{n} ({reason})")) }
    })
    .await;

    // From here on, the fewest instances the revision is ever asked for.
    let fewest = Arc::new(AtomicI32::new(8));
    let (watching, stop_watching) = watch::channel(false);
    let watcher = tokio::spawn({
        let (client, fewest) = (client.clone(), fewest.clone());
        async move {
            let mut stop = stop_watching;
            loop {
                if let Ok((n, _)) = desired(&client, revision).await {
                    fewest.fetch_min(n, Ordering::SeqCst);
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        }
    });

    // The leader stops (it releases the Lease); the standby takes over.
    first.stop.send_replace(true);
    eventually("replica-2 to lead", || std::future::ready(if second.leads() { Ok(()) } else { Err("no".into()) }))
        .await;
    // It evaluates the revision over more than a stable window (2 s at a 200 ms tick), which
    // is how long a scaler started from nothing would take to bring it down.
    let from = reconciles(&second.metrics, "autoscaler");
    eventually("replica-2 to evaluate for a stable window", || {
        let done = reconciles(&second.metrics, "autoscaler");
        std::future::ready(if done >= from + 15 { Ok(()) } else { Err(format!("{} evaluations", done - from)) })
    })
    .await;
    watching.send_replace(true);
    watcher.await.unwrap();
    let fewest = fewest.load(Ordering::SeqCst);
    assert_eq!(fewest, 8, "the revision was asked for {fewest} instances during the takeover");

    // The new leader acts on the demand reported to it: when that falls silent, so does the
    // revision (to its initial scale, 1, since no instance of it was ever ready).
    drop(to_second);
    eventually("replica-2 to scale down", || async {
        let (n, reason) = desired(&client, revision).await?;
        if n < 8 { Ok(()) } else { Err(format!("{n} ({reason})")) }
    })
    .await;
}
