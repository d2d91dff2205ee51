//! The autoscaler against a real in-process API server, with the services and revisions
//! controllers running and demand reported by a real gRPC client of the `Autoscaler` service,
//! as a gateway reports it. No node agent runs: the tests mark Instances ready as an agent would.
//! Windows, grace and tick are short so that each test takes seconds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use cluster::eventually;
use stratus_api::Resource;
use stratus_api::v1::autoscaler_client::AutoscalerClient;
use stratus_api::v1::{
    DemandReport, Instance, InstanceStatus, PokeRequest, Revision, RevisionDemand, Scaling, Service,
};
use stratus_apiserver::testing::TestServer;
use stratus_client::review::TokenReview;
use stratus_client::{Bearer, Client, Credentials, ListParams};
use stratus_controllers::revisions::REVISION_LABEL;
use stratus_controllers::{Config, Context, DemandStore, Metrics, autoscaler, revisions, serve_autoscaler, services};
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

const NS: &str = "default";

/// An API server, the services, revisions and autoscaler controllers and the autoscaler's gRPC
/// service; all stop when dropped.
struct Harness {
    client: Client,
    autoscaler: AutoscalerClient<InterceptedService<Channel, Bearer>>,
    stop: watch::Sender<bool>,
    _server: TestServer,
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

impl Harness {
    async fn start(config: Config) -> Harness {
        let server = TestServer::start().await;
        let client = Client::new(&server.endpoint).unwrap().with_token(&server.token);
        let demand = DemandStore::new();
        let ctx = Context::with_demand(client.clone(), config, Arc::new(Metrics::default()), demand.clone());
        let (stop, stopped) = watch::channel(false);
        let until = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let review = Arc::new(TokenReview::new(client.clone(), autoscaler::REPORTERS));
        tokio::spawn(serve_autoscaler(listener, demand, review, until(stopped.clone())));
        tokio::spawn(services::run(ctx.clone(), until(stopped.clone())));
        tokio::spawn(revisions::run(ctx.clone(), until(stopped.clone())));
        tokio::spawn(autoscaler::run(ctx, until(stopped)));
        // The test reports as a gateway does: with the token of the gateway's account.
        let role = stratus_api::identity::roles::SYSTEM_GATEWAY;
        let token = server.identity.component_token("gateway", role, "").await.unwrap()();
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect_lazy();
        let autoscaler = AutoscalerClient::with_interceptor(channel, Bearer::new(Credentials::Token(token.into())));
        Harness { client, autoscaler, stop, _server: server }
    }

    /// A Service running a node-local image (no registry is asked), 10 requests per instance.
    async fn apply(&self, name: &str, max_instances: Option<i32>) {
        let mut svc = Service::with_image(name, "stratus/local:dev");
        svc.meta_mut().namespace = NS.into();
        let spec = svc.spec.as_mut().and_then(|s| s.template.as_mut()).and_then(|t| t.spec.as_mut()).unwrap();
        spec.containers[0].image_pull_policy = "Never".into();
        spec.container_concurrency = Some(10);
        spec.scaling = Some(Scaling { max_instances, ..Default::default() });
        self.client.apply(svc).await.unwrap();
    }

    /// Waits until the revision's status says `desired` for a reason starting with `reason`.
    async fn scaled(&self, revision: &str, desired: i32, reason: &str) -> Revision {
        eventually(&format!("{revision} scaled to {desired} ({reason}…)"), || async {
            let rev = self.client.get::<Revision>(NS, revision).await.map_err(|e| e.to_string())?;
            let st = rev.status.clone().unwrap_or_default();
            if st.desired_instances == desired && st.scale_reason.starts_with(reason) {
                Ok(rev)
            } else {
                Err(format!("{} ({})", st.desired_instances, st.scale_reason))
            }
        })
        .await
    }

    /// Waits until `revision` has exactly `n` live instances, and marks them ready.
    async fn ready_instances(&self, revision: &str, n: usize) {
        let instances = eventually(&format!("{n} instances of {revision}"), || async {
            let params = ListParams { label_selector: format!("{REVISION_LABEL}={revision}"), ..Default::default() };
            let items = self.client.list::<Instance>(&params).await.map_err(|e| e.to_string())?.items;
            let live: Vec<Instance> = items.into_iter().filter(|i| i.meta().deletion_timestamp.is_none()).collect();
            if live.len() == n { Ok(live) } else { Err(format!("{} instances", live.len())) }
        })
        .await;
        for inst in instances {
            let name = inst.meta().name.clone();
            loop {
                let mut inst = self.client.get::<Instance>(NS, &name).await.unwrap();
                inst.status = Some(InstanceStatus {
                    phase: "Running".into(),
                    ready: true,
                    address: "127.0.0.1:9".into(),
                    ..Default::default()
                });
                match self.client.update_status(inst).await {
                    Ok(_) => break,
                    Err(stratus_client::Error::Conflict(_)) => continue,
                    Err(e) => panic!("marking {name} ready: {e}"),
                }
            }
        }
    }

    /// Streams, as gateway `gateway`, `concurrency` requests in flight for each of `revisions`
    /// every 100 ms, until the returned sender is dropped.
    fn report(&self, gateway: &str, revisions: &[&str], concurrency: f64) -> watch::Sender<bool> {
        let (done, stopped) = watch::channel(false);
        let report = DemandReport {
            gateway: gateway.into(),
            revisions: revisions
                .iter()
                .map(|r| RevisionDemand {
                    namespace: NS.into(),
                    revision: (*r).into(),
                    concurrency,
                    requests: 10,
                    queued: 0,
                    period_ms: 100,
                    latency_buckets: Vec::new(),
                })
                .collect(),
        };
        let reports = async_stream(move || {
            let report = report.clone();
            let mut stopped = stopped.clone();
            async move {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100)) => Some(report),
                    _ = stopped.wait_for(|s| *s) => None,
                }
            }
        });
        let mut client = self.autoscaler.clone();
        tokio::spawn(async move {
            let _ = client.report_demand(reports).await;
        });
        done
    }
}

/// A stream of what `next` yields until it yields `None`.
fn async_stream<T, F, Fut>(next: F) -> impl futures::Stream<Item = T> + Send + 'static
where
    T: Send + 'static,
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = Option<T>> + Send,
{
    futures::stream::unfold(next, |next| async move { next().await.map(|item| (item, next)) })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reported_demand_scales_revisions_up_to_their_max_and_silence_to_zero() {
    let h = Harness::start(Config {
        autoscale_tick: Duration::from_millis(200),
        stable_window: Duration::from_secs(2),
        scale_to_zero_grace: Duration::from_secs(1),
        ..Config::default()
    })
    .await;
    // 100 in flight from the start, over two gateways: at 10 per instance and 70%,
    // ceil(100 / 7) = 15 instances, or maxInstances.
    let g1 = h.report("g1", &["free-00001", "capped-00001"], 60.0);
    let g2 = h.report("g2", &["free-00001", "capped-00001"], 40.0);
    h.apply("free", None).await;
    h.apply("capped", Some(10)).await;
    let rev = h.scaled("free-00001", 15, "panic mode: 100 in flight").await;
    let reason = rev.status.unwrap_or_default().scale_reason;
    assert!(reason.ends_with("0 ready"), "nothing was ready when it panicked: {reason}");
    h.scaled("capped-00001", 10, "maxInstances 10 (panic mode: 100 in flight").await;
    h.ready_instances("free-00001", 15).await;
    h.ready_instances("capped-00001", 10).await;

    // With 15 ready the demand is no panic; once a stable window passed, the stable average
    // (100 / 7 → 15) decides.
    h.scaled("free-00001", 15, "stable: 100 in flight / (10 × 70%) = 15").await;

    // Silence: the gateways' reports age out, the grace passes, zero.
    drop((g1, g2));
    h.scaled("free-00001", 0, "scaled to zero after 1s without requests").await;
    h.scaled("capped-00001", 0, "scaled to zero after 1s without requests").await;
    h.ready_instances("free-00001", 0).await;
    h.ready_instances("capped-00001", 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poke_at_zero_wants_an_instance_before_the_next_tick() {
    let tick = Duration::from_secs(4);
    let mut h = Harness::start(Config {
        autoscale_tick: tick,
        stable_window: Duration::from_secs(2),
        scale_to_zero_grace: Duration::from_secs(1),
        ..Config::default()
    })
    .await;
    h.apply("web", None).await;
    // Never ready yet: initialScale (1), whatever the demand.
    h.scaled("web-00001", 1, "initial scale 1").await;
    h.ready_instances("web-00001", 1).await;
    // No request ever: zero once ready and the grace passed.
    h.scaled("web-00001", 0, "scaled to zero after 1s without requests").await;
    let at_zero = Instant::now();

    // The zero was written at a tick, so the next tick is `tick` after `at_zero` at the
    // earliest: seeing one instance wanted sooner proves the poke did it.
    let poke = PokeRequest { namespace: NS.into(), revision: "web-00001".into() };
    h.autoscaler.poke(poke).await.unwrap();
    h.scaled("web-00001", 1, "kept at 1: last request").await;
    assert!(at_zero.elapsed() < tick, "the poke waited for the tick: {:?}", at_zero.elapsed());
    h.ready_instances("web-00001", 1).await;

    // A poke must name a revision.
    let empty = h.autoscaler.poke(PokeRequest::default()).await.unwrap_err();
    assert_eq!(empty.code(), tonic::Code::InvalidArgument);
}

/// The demand service over TLS from a new cluster CA, requiring client certificates from it;
/// returns its endpoint and the CA.
async fn demand_over_tls(demand: DemandStore) -> (String, stratus_auth::pki::Ca, watch::Sender<bool>) {
    use stratus_auth::pki::{Ca, Usage};
    let ca = Ca::generate().unwrap();
    let serving = ca.issue(Usage::Server, &["127.0.0.1".into()], Duration::from_secs(3600)).unwrap();
    let certificates = stratus_support::tls::Certificates::new();
    let key =
        stratus_support::tls::certified_key(serving.cert_pem.as_bytes(), serving.key_pem.as_bytes(), "test").unwrap();
    certificates.set_default(key);
    let tls = certificates.server_config_requiring_clients(ca.cert_pem().as_bytes()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("https://{}", listener.local_addr().unwrap());
    let (stop, stopped) = watch::channel(false);
    let mut stopped = stopped;
    let until = async move {
        let _ = stopped.wait_for(|s| *s).await;
    };
    tokio::spawn(stratus_controllers::serve_autoscaler_tls(listener, demand, tls, until));
    (endpoint, ca, stop)
}

/// A client of the demand service at `endpoint` presenting a certificate `ca` issued for
/// `common_name` (none when `None`).
fn demand_client(endpoint: &str, ca: &stratus_auth::pki::Ca, common_name: Option<&str>) -> AutoscalerClient<Channel> {
    use stratus_client::tls::ClientIdentity;
    let identity = match common_name {
        Some(cn) => {
            let issued = ca.issue(stratus_auth::pki::Usage::Client, &[cn.into()], Duration::from_secs(3600)).unwrap();
            ClientIdentity::new(issued.cert_pem.as_bytes(), issued.key_pem.as_bytes()).unwrap()
        }
        None => ClientIdentity::default(),
    };
    let channel = stratus_client::tls::channel(endpoint, ca.cert_pem().as_bytes(), &identity, None, |e| e).unwrap();
    AutoscalerClient::new(channel)
}

#[tokio::test]
async fn over_tls_the_demand_service_takes_only_gateways_certificates() {
    let demand = DemandStore::new();
    let (endpoint, ca, _stop) = demand_over_tls(demand.clone()).await;
    let poke = || PokeRequest { namespace: NS.into(), revision: "web-00001".into() };

    // No certificate: the handshake itself is refused.
    assert!(demand_client(&endpoint, &ca, None).poke(poke()).await.is_err());
    // A node's certificate from the cluster CA is not a gateway's.
    let err = demand_client(&endpoint, &ca, Some("system:node:n1")).poke(poke()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("only from gateways") && err.message().contains("system:node:n1"), "{err:?}");
    // A gateway's is answered.
    let mut gateway = demand_client(&endpoint, &ca, Some(&stratus_api::identity::gateway_user("g1")));
    gateway.poke(poke()).await.unwrap();
    // It reports as itself only.
    let report = |name: &str| DemandReport { gateway: name.into(), revisions: Vec::new() };
    let err = gateway.report_demand(futures::stream::iter([report("g2")])).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("gateway g1 may report only its own demand"), "{err:?}");
    gateway.report_demand(futures::stream::iter([report("g1")])).await.unwrap();
}
