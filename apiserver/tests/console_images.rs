//! The console's Images page in a real headless Chromium: a `docker save` archive chosen in the
//! file field is uploaded with progress into a registry of the test's own and listed; a broken
//! archive shows the API's message. Screenshots go to `target/console-screenshots/`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/registry.rs"]
mod registry;

use common::*;
use registry::{TestRegistry, saved_image};
use serde_json::json;
use stratus_apiserver::images::ImagesConfig;
use stratus_testkit::console::Browser;

#[tokio::test]
async fn an_archive_uploaded_in_the_console_is_listed() {
    let registry = TestRegistry::start();
    let spool = tempfile::tempdir().unwrap();
    let config = stratus_apiserver::Config {
        images: Some(ImagesConfig::new(&registry.addr, spool.path())),
        ..Default::default()
    };
    let s = TestServer::start_config(config).await;
    present(&s.token);
    let admin = two_tenants(&s).await;
    create_user(&admin, "alice", "a", "").await;
    bind(&admin, "a-ns", "developer", "alice").await;

    let files = tempfile::tempdir().unwrap();
    let (archive, _) = saved_image("127.0.0.1:5000/web:v3", 3 * 1024 * 1024);
    let good = files.path().join("web.tar");
    std::fs::write(&good, &archive).unwrap();
    let broken = files.path().join("broken.tar");
    std::fs::write(&broken, &archive[..archive.len() / 2]).unwrap();

    let browser = Browser::start().await;
    browser.goto(&format!("{}/ui/", s.endpoint)).await;
    browser.fill("#username", "alice").await;
    browser.fill("#password", "alice-password").await;
    browser.click("#login").await;
    browser.wait_for_text("#who", "alice").await;
    browser.click("#nav-images").await;
    browser.wait_for_text("#images-empty", "No images uploaded to a-ns yet").await;
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
