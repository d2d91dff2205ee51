//! A service's page in the web console, in a real headless Chromium, against the whole platform
//! (API server, controllers, gateway and a node agent driving the real Docker engine): the
//! traffic editor splits traffic and requests reach both revisions, an instance's logs are
//! followed, and under load the charts' requests per second and instance count move.
//! Screenshots go to `target/console-screenshots/service-*.png`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use stratus_api::Resource;
use stratus_api::v1::{User, UserSpec};
use stratus_testkit::console::Browser;

/// Every revision: two requests at a time per instance, one to four instances, a tenth of a
/// CPU each, so that a little load scales it and it fits on this machine's node (and the
/// instance whose logs are followed is not scaled away while idle).
const SCALING: &str = "      containerConcurrency: 2\n      scaling: {minInstances: 1, maxInstances: 4}";

fn web(target: &str) -> String {
    hello("web", target, SCALING).replace("cpu: 250m", "cpu: 100m")
}

/// The value shown by `css` as a number (`—` is none).
async fn number(browser: &Browser, css: &str) -> Option<f64> {
    let text = browser.run(&format!("return document.querySelector({css:?})?.textContent || ''"), vec![]).await;
    text.as_str().and_then(|t| t.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_service_page_splits_traffic_follows_logs_and_charts_load() {
    let c = Arc::new(Cluster::autoscaling("console-svc").await);
    // A person who logs in with a password.
    let mut user = User {
        spec: Some(UserSpec {
            tenant: stratus_api::identity::DEFAULT_TENANT.into(),
            password: "carol-password".into(),
            cluster_role: stratus_api::identity::roles::CLUSTER_ADMIN.into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    user.meta_mut().name = "carol".into();
    c.client.create(user).await.unwrap();

    // Two revisions through the API; all traffic on the latest.
    c.apply(&web("a")).await;
    c.wait_ready("web").await;
    c.apply(&web("b")).await;
    c.wait_service("web", "its second revision ready", |s| {
        s.status.as_ref().is_some_and(|st| st.latest_ready_revision_name == "web-00002")
    })
    .await;

    let browser = c.console("carol", "carol-password").await;
    browser.wait_for_text("#live-state", "Live").await;
    // The services list links to the page.
    browser.wait_for_text("#services-rows tr[data-name='web']", "web").await;
    browser.click("#services-rows tr[data-name='web'] th a").await;
    browser.wait_for_text("#service-title", "web").await;
    assert!(browser.client().current_url().await.unwrap().as_str().ends_with("#/services/default/web"));
    browser.wait_for_text("#revision-rows tr[data-name='web-00001']", "Ready").await;
    browser.wait_for_text("#revision-rows tr[data-name='web-00002']", "Ready").await;
    browser.wait_for_text("#service-summary", "Ready").await;
    browser.wait_for_text("#instance-rows", "web-0000").await;
    browser.run("window.scrollTo(0, 0)", vec![]).await;
    browser.screenshot("service-idle").await;

    // Checked in the page before anything is sent: 50 + 100 is not 100, and a tag must be a
    // DNS label.
    let percent = |key: &str| format!("#traffic-rows tr[data-key='{key}'] input[name='percent']");
    let tag = |key: &str| format!("#traffic-rows tr[data-key='{key}'] input[name='tag']");
    browser.fill(&percent("web-00001"), "50").await;
    browser.click("#traffic-save").await;
    browser.wait_for_text("#traffic-message", "add up to 150, not 100").await;
    browser.fill(&percent("@latest"), "50").await;
    browser.fill(&tag("web-00001"), "Old_One").await;
    browser.click("#traffic-save").await;
    browser.wait_for_text("#traffic-rows tr[data-key='web-00001'] .field-error", "not a DNS label").await;
    let traffic = c.service("web").await.spec.unwrap().traffic;
    assert!(
        traffic.iter().all(|t| t.percent == Some(100) && t.tag.is_empty()),
        "an invalid split was sent: {traffic:?}"
    );

    // 50/50, with a tag for the old revision: saved through the API, and served.
    browser.fill(&tag("web-00001"), "old").await;
    browser.click("#traffic-save").await;
    browser.wait_for_text("#traffic-message", "Traffic saved").await;
    c.wait_service("web", "a 50/50 split", |s| {
        s.status.as_ref().is_some_and(|st| st.traffic.iter().filter(|t| t.percent == Some(50)).count() == 2)
    })
    .await;
    browser.wait_for_text("#revision-rows tr[data-name='web-00001']", "50%").await;
    let (mut a, mut b) = (0, 0);
    for _ in 0..200 {
        let (code, body) = c.get(&host("web"), "/").await;
        assert_eq!(code, 200, "{body}");
        if body.starts_with("Hello a!") {
            a += 1;
        } else if body.starts_with("Hello b!") {
            b += 1;
        }
    }
    eprintln!("console split: a={a} b={b} of 200");
    assert!(a >= 50 && b >= 50, "requests did not reach both revisions: a={a} b={b}");
    let (code, body) = c.get("old-web.default.localhost", "/").await;
    assert_eq!((code, body.starts_with("Hello a!")), (200, true), "{body}");

    // Follow one instance's logs. The autoscaler's windows are short here: the instance picked
    // may be scaled away after the split's burst, and then another is picked and followed.
    let pick = || async {
        let instance = browser
            .eventually("an instance to pick", || async {
                let v = browser
                    .run(
                        "return [...document.querySelectorAll('#instance-rows tr')]
                           .find(r => r.textContent.includes('Running, ready'))?.dataset.name || null",
                        vec![],
                    )
                    .await;
                v.as_str().map(String::from)
            })
            .await
            .unwrap();
        browser.run("const s = document.querySelector('#log-instance'); s.value = arguments[0]; s.dispatchEvent(new Event('change'))", vec![json!(instance)]).await;
        browser.click("#log-follow").await;
        browser.wait_for_text("#log-state", &format!("Following {instance}")).await;
        instance
    };
    let mut instance = pick().await;
    // Lines written after following began arrive: requests with a path of their own, until
    // one reaches this instance.
    let deadline = Instant::now() + PATIENCE;
    let lines = loop {
        // The example answers 404 for a path it does not know, and logs it like any other.
        let (code, body) = c.get(&host("web"), "/console-logs-check").await;
        assert_eq!(code, 404, "{body}");
        let text = browser.run("return document.querySelector('#log-lines').textContent", vec![]).await;
        let text = text.as_str().unwrap_or_default().to_string();
        if text.contains("GET /console-logs-check") {
            break text;
        }
        if Instant::now() >= deadline {
            let rows = browser.run("return document.querySelector('#instance-rows').innerText", vec![]).await;
            panic!("no line of the request reached the followed log of {instance}: {text}\ninstances:\n{rows}");
        }
        // Scaled down, an instance leaves the revision's endpoints (not ready) before it goes.
        let serving = browser
            .run(
                "return [...document.querySelectorAll('#instance-rows tr')]
                   .some(r => r.dataset.name === arguments[0] && r.textContent.includes('Running, ready'))",
                vec![json!(instance)],
            )
            .await;
        if serving != json!(true) {
            eprintln!("{instance} no longer serves (scaled down); following another");
            instance = pick().await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // One instance's lines come as it wrote them; the service-wide stream prefixes [instance].
    assert!(!lines.lines().any(|l| l.starts_with('[')), "not one instance's lines: {lines}");

    // Load: `stratus bench`, eight requests outstanding, each taking 100 ms. The chart's
    // requests per second and instance count follow.
    // First the chart goes quiet (the split's requests above have left its last slot).
    browser
        .eventually("the chart's requests per second to fall below 5 at idle", || async {
            number(&browser, "#rps-now").await.filter(|rps| *rps < 5.0)
        })
        .await
        .unwrap();
    let instances_before = number(&browser, "#instances-now").await.unwrap_or(0.0);
    let bench = c.stratus_running(&["bench", "web", "-c", "8", "-d", "10m", "--path", "/?sleep_ms=100"]);
    let started = Instant::now();
    // The first slot (5 s) wholly under load ends after this, in seconds since the epoch.
    let loaded_slot_end = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 10;
    let deadline = started + PATIENCE;
    let (mut rps, mut instances) = (0.0, 0.0);
    while Instant::now() < deadline {
        let time = browser.run("return Number(document.querySelector('#rps-now')?.dataset.time || 0)", vec![]).await;
        // A reading of a slot before the load (the split's requests) does not count.
        rps = if time.as_u64().unwrap_or(0) >= loaded_slot_end {
            number(&browser, "#rps-now").await.unwrap_or(0.0)
        } else {
            0.0
        };
        instances = number(&browser, "#instances-now").await.unwrap_or(0.0);
        if rps > 10.0 && instances >= 3.0 && instances > instances_before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!(
        "console under load after {:?}: {rps} requests/s, {instances} instances (before: {instances_before})",
        started.elapsed()
    );
    assert!(rps > 10.0, "the chart's requests per second stayed at {rps}");
    assert!(instances >= 3.0 && instances > instances_before, "the instance count stayed at {instances}");
    let p99 = browser.wait_for_text("#p99-now", "p99").await;
    let p99: f64 = p99.trim_start_matches("p99").trim().parse().unwrap_or(0.0);
    assert!(p99 >= 100.0, "requests that sleep 100 ms have a p99 of {p99} ms");
    browser.run("document.activeElement?.blur(); window.scrollTo(0, 0)", vec![]).await;
    browser.screenshot("service-under-load").await;
    browser.resize(390, 844).await;
    browser.screenshot("service-narrow").await;
    browser.resize(1280, 900).await;

    // The services list shows the same load: its requests per second and its instances.
    browser.goto(&format!("{}/ui/#/services/default", c.endpoint())).await;
    browser
        .eventually("the services list to show the load", || async {
            let rate = browser
                .run("return document.querySelector(\"tr[data-name='web'] td.rate\")?.textContent || ''", vec![])
                .await;
            let rate: f64 = rate.as_str().unwrap_or_default().parse().unwrap_or(0.0);
            let instances = browser
                .run("return document.querySelector(\"tr[data-name='web'] td.instances\")?.textContent || ''", vec![])
                .await;
            let ready: u32 = instances.as_str().unwrap_or_default().split(" / ").next()?.parse().ok()?;
            (rate > 10.0 && ready >= 1).then_some(())
        })
        .await
        .unwrap();
    browser.screenshot("services-under-load").await;

    // Ctrl-C: the bench stops early and still reports what it sent.
    let pid = bench.id().expect("the bench runs").to_string();
    let interrupted = std::process::Command::new("kill").args(["-INT", &pid]).status().unwrap();
    assert!(interrupted.success(), "the bench had already ended");
    let out = bench.wait_with_output().await.unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}{}", String::from_utf8_lossy(&out.stderr));
    let requests = report.lines().find(|l| l.starts_with("Requests")).unwrap_or_default();
    let succeeded: Vec<u64> = requests.split(|ch: char| !ch.is_ascii_digit()).filter_map(|s| s.parse().ok()).collect();
    assert!(succeeded.get(2).is_some_and(|n| *n > 0), "no request of the bench succeeded: {report}");
    browser.close().await;
}
