//! The console's Images page in a real headless Chromium: a `docker save` archive chosen in the
//! file field is uploaded with progress into a registry of the test's own and listed; a broken
//! archive shows the API's message. Screenshots go to `target/console-screenshots/`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/registry.rs"]
mod registry;

use common::*;
use registry::{TestRegistry, saved_image};
use std::time::Duration;

use serde_json::json;
use stratus_api::Resource;
use stratus_apiserver::images::ImagesConfig;
use stratus_testkit::console::Browser;
use stratus_testkit::relay::Relay;

/// An API server storing uploads in `registry`, with user alice, a developer of `a-ns`.
async fn server_with(registry: &TestRegistry, spool: &std::path::Path) -> TestServer {
    let config =
        stratus_apiserver::Config { images: Some(ImagesConfig::new(&registry.addr, spool)), ..Default::default() };
    let s = TestServer::start_config(config).await;
    present(&s.token);
    let admin = two_tenants(&s).await;
    create_user(&admin, "alice", "a", "").await;
    bind(&admin, "a-ns", "developer", "alice").await;
    s
}

/// Logs in as alice through `endpoint` and opens the Images page of `a-ns`, empty.
async fn open_images_page(browser: &Browser, endpoint: &str) {
    browser.goto(&format!("{endpoint}/ui/")).await;
    browser.fill("#username", "alice").await;
    browser.fill("#password", "alice-password").await;
    browser.click("#login").await;
    browser.wait_for_text("#who", "alice").await;
    browser.click("#nav-images").await;
    browser.wait_for_text("#images-empty", "No images uploaded to a-ns yet").await;
}

#[tokio::test]
async fn an_archive_uploaded_in_the_console_is_listed() {
    let registry = TestRegistry::start();
    let spool = tempfile::tempdir().unwrap();
    let s = server_with(&registry, spool.path()).await;

    let files = tempfile::tempdir().unwrap();
    let (archive, _) = saved_image("127.0.0.1:5000/web:v3", 3 * 1024 * 1024);
    let good = files.path().join("web.tar");
    std::fs::write(&good, &archive).unwrap();
    let broken = files.path().join("broken.tar");
    std::fs::write(&broken, &archive[..archive.len() / 2]).unwrap();

    let browser = Browser::start().await;
    open_images_page(&browser, &s.endpoint).await;
    assert!(browser.client().current_url().await.unwrap().as_str().ends_with("#/images/a-ns"));
    browser.screenshot("images-empty").await;

    // A truncated archive: the API's words on the page, nothing listed.
    browser.find("#image-file").await.send_keys(broken.to_str().unwrap()).await.unwrap();
    browser.click("#image-upload").await;
    let message = browser.wait_for_text("#image-message", "The upload failed").await;
    assert!(message.contains("the archive is truncated"), "{message}");
    browser.screenshot("images-failed").await;

    browser.find("#image-file").await.send_keys(good.to_str().unwrap()).await.unwrap();
    browser.fill("#image-tag", "from-console").await;
    browser.click("#image-upload").await;
    let image = format!("{}/a-ns/web:from-console", registry.addr);
    let message = browser.wait_for_text("#image-message", "Uploaded").await;
    assert!(message.contains(&image), "{message}");
    let row = browser.wait_for_text("#images-rows tr", "web").await;
    assert!(row.contains("from-console") && row.contains(&image) && row.contains("sha256:"), "{row}");
    let progress = browser.run("return document.querySelector('#image-progress').value", vec![]).await;
    assert_eq!(progress, json!(1));
    assert_eq!(registry.catalog().await, ["a-ns/web"]);
    browser.screenshot("images").await;
    browser.close().await;
}

#[tokio::test]
async fn an_upload_the_network_breaks_is_sent_again() {
    let registry = TestRegistry::start();
    let spool = tempfile::tempdir().unwrap();
    let s = server_with(&registry, spool.path()).await;
    let files = tempfile::tempdir().unwrap();
    let (archive, _) = saved_image("127.0.0.1:5000/web:v4", 64 * 1024);
    let path = files.path().join("web.tar");
    std::fs::write(&path, &archive).unwrap();

    // The browser reaches the API server only through a relay that the test can break.
    let relay = Relay::start(s.addr).await;
    let browser = Browser::start().await;
    open_images_page(&browser, &format!("http://{}", relay.addr)).await;
    browser.find("#image-file").await.send_keys(path.to_str().unwrap()).await.unwrap();
    // The network breaks as the upload starts, for longer than the page's first three tries
    // (at once, 250 ms and 750 ms after): as Chromium fails every request in flight when Docker
    // adds a container's interface. The fourth try (1.75 s) goes through.
    relay.break_for(Duration::from_millis(1500));
    browser.click("#image-upload").await;
    let message = browser.wait_for_text("#image-message", "Uploaded").await;
    assert!(message.contains(&format!("{}/a-ns/web:v4", registry.addr)), "{message}");
    assert_eq!(registry.catalog().await, ["a-ns/web"]);
    browser.close().await;
}

/// A deploy whose request the network breaks (Chromium fails every request in flight when
/// Docker adds or removes a container's interface) is sent again once a read shows the service
/// was not made, and the service is made once.
#[tokio::test]
async fn a_deploy_the_network_breaks_is_sent_again_while_the_service_is_not_there() {
    let registry = TestRegistry::start();
    let spool = tempfile::tempdir().unwrap();
    let s = server_with(&registry, spool.path()).await;
    let relay = Relay::start(s.addr).await;
    let browser = Browser::start().await;
    let endpoint = format!("http://{}", relay.addr);
    open_images_page(&browser, &endpoint).await;
    browser.goto(&format!("{endpoint}/ui/#/deploy/a-ns")).await;
    browser.wait_for_text("#deploy-title", "Deploy a service").await;
    browser.fill("#deploy-name", "web").await;
    browser.fill("#deploy-image", "127.0.0.1:5000/a-ns/web:v4").await;
    // Longer than the first tries of the create's read-back (at once, 250 ms, 750 ms after
    // the create failed): the create is sent again only once a read answers 404.
    relay.break_for(Duration::from_millis(1500));
    browser.click("#deploy-submit").await;
    browser.wait_for_text("#services", "web").await;
    let admin = stratus_client::Client::new(&s.endpoint).unwrap().with_token(&s.token);
    let params = stratus_client::ListParams { namespace: "a-ns".into(), ..Default::default() };
    let services = admin.list::<stratus_api::v1::Service>(&params).await.unwrap();
    let names: Vec<&str> = services.items.iter().map(|s| s.meta().name.as_str()).collect();
    assert_eq!(names, ["web"]);
    browser.close().await;
}
