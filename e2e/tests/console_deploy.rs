//! The console's deploy form in a real headless Chromium against the whole platform (API
//! server over TLS, controllers, gateway, a node agent on the real Docker engine): a bad value
//! is refused by the API and shown at its field with nothing created; the form's YAML is what
//! `stratus apply` takes and applies to the very same Service; the Service deployed through the
//! form becomes Ready in the page and answers through the gateway at the URL the page links;
//! editing it through the form rolls out a new revision; an image archive made with `docker
//! save` and uploaded on the Images page is offered by the form, deployed from it, and answers.
//! Screenshots go to `target/console-screenshots/deploy-*.png` and `images-*.png`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use stratus_api::v1::Service;
use stratus_client::ListParams;
use stratus_testkit::binary;
use stratus_testkit::console::Browser;

const USER: &str = "dana";
const PASSWORD: &str = "dana-deploys-through-the-console";

/// A developer of namespace `default` who logs in with a password, and a Secret to read.
fn fixtures() -> String {
    format!(
        r#"
apiVersion: stratus.dev/v1
kind: User
metadata: {{name: {USER}}}
spec: {{tenant: default, password: {PASSWORD}}}
---
apiVersion: stratus.dev/v1
kind: RoleBinding
metadata: {{name: {USER}-developer, namespace: default}}
spec:
  role: developer
  subjects: [{{kind: User, name: {USER}}}]
---
apiVersion: stratus.dev/v1
kind: Secret
metadata: {{name: greeting, namespace: default}}
data: {{word: hush}}
"#
    )
}

async fn value(browser: &Browser, css: &str) -> String {
    let v = browser.run("return document.querySelector(arguments[0]).value;", vec![json!(css)]).await;
    v.as_str().unwrap_or_default().to_string()
}

async fn hidden(browser: &Browser, css: &str) -> bool {
    browser.run("return document.querySelector(arguments[0]).hidden;", vec![json!(css)]).await == json!(true)
}

async fn services(c: &Cluster) -> Vec<String> {
    let params = ListParams { namespace: "default".into(), ..Default::default() };
    let list = c.client.list::<Service>(&params).await.unwrap();
    list.items.iter().map(|s| stratus_api::Resource::meta(s).name.clone()).collect()
}

/// `stratus apply -f FILE` as the cluster admin: (exit code, stdout, stderr).
async fn stratus_apply(c: &Cluster, file: &std::path::Path) -> (i32, String, String) {
    let out = tokio::process::Command::new(binary("stratus"))
        .args(["--server", c.endpoint(), "--certificate-authority", c.ca()])
        .args(["apply", "-f", &file.display().to_string()])
        .env("STRATUS_CONFIG", "/nonexistent/stratus-config")
        .env("STRATUS_TOKEN", &c.token)
        .output()
        .await
        .expect("run stratus");
    let text = |b: &[u8]| String::from_utf8_lossy(b).to_string();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

/// The stored spec of a Service, as JSON.
async fn spec(c: &Cluster, name: &str) -> Value {
    serde_json::to_value(c.service(name).await.spec).unwrap()
}

/// Waits (up to [`PATIENCE`]) until the gateway answers `host` with 200 and a body containing
/// `wanted`.
async fn wait_answer(c: &Cluster, host: &str, wanted: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (code, body) = c.get(host, "/").await;
        if code == 200 && body.contains(wanted) {
            return;
        }
        assert!(Instant::now() < deadline, "{host} never answered {wanted:?}; last: {code} {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_service_deployed_through_the_form_becomes_ready_and_answers() {
    let c = Cluster::start("console-deploy", Duration::from_secs(15)).await;
    c.apply(&fixtures()).await;

    // Log in; the services page links to the form.
    let browser = c.console(USER, PASSWORD).await;
    browser.wait_for_text("#services-empty", "No Services in default").await;
    browser.click("#deploy-service").await;
    browser.wait_for_text("#deploy-title", "Deploy a service").await;
    // The images uploaded to the namespace are offered (the registry is the machine's, so other
    // tests' uploads may be there); reading them is no error.
    let note = browser.run("return document.querySelector('#deploy-images-note').textContent", vec![]).await;
    assert!(!note.as_str().unwrap_or_default().contains("could not be listed"), "{note}");
    browser.screenshot("deploy-empty").await;

    // The obvious mistakes are caught in the page: nothing is sent without a name or image.
    browser.click("#deploy-submit").await;
    browser.wait_for_text("#deploy-name-error", "needs a name").await;
    browser.wait_for_text("#deploy-image-error", "Choose the container image").await;

    browser.fill("#deploy-name", "hello-form").await;
    browser.fill("#deploy-image", IMAGE).await;
    browser.fill("#deploy-port", "8080").await;
    browser.click("#deploy-add-env").await;
    browser.fill("#deploy-env-name-1", "TARGET").await;
    browser.fill("#deploy-env-value-1", "Console").await;
    browser.click("#deploy-add-secret").await;
    browser.fill("#deploy-secret-env-2", "WORD").await;
    browser.fill("#deploy-secret-name-2", "greeting").await;
    browser.fill("#deploy-secret-key-2", "word").await;
    browser.fill("#deploy-cpu", "250m").await;
    browser.fill("#deploy-memory", "12XB").await;
    browser.fill("#deploy-concurrency", "10").await;
    browser.fill("#deploy-min", "0").await;
    browser.fill("#deploy-max", "3").await;
    browser.fill("#deploy-timeout", "60").await;
    browser.click("#deploy-billing-instance").await;

    // A bad memory passes the page's checks; the API refuses it, naming the field, and the
    // page shows its message at the memory field. Nothing is created.
    browser.click("#deploy-submit").await;
    let error = browser.wait_for_text("#deploy-memory-error", "12XB").await;
    assert!(error.contains("unknown suffix"), "not the API's message: {error}");
    browser.wait_for_text("#deploy-error", "Nothing was deployed").await;
    let invalid =
        browser.run("return document.querySelector('#deploy-memory').getAttribute('aria-invalid');", vec![]).await;
    assert_eq!(invalid, json!("true"));
    assert!(hidden(&browser, "#deploy-cpu-error").await, "an error at a field the API did not name");
    assert_eq!(services(&c).await, Vec::<String>::new(), "the refused service was created");
    browser.screenshot("deploy-error").await;

    // Fixed, the YAML view shows the manifest the form will apply.
    browser.fill("#deploy-memory", "64Mi").await;
    browser.click("#deploy-view-yaml").await;
    let yaml = browser.wait_for_text("#deploy-yaml-text", "memory: 64Mi").await;
    for line in [
        "apiVersion: serving.knative.dev/v1",
        "kind: Service",
        "  name: hello-form",
        "run.googleapis.com/cpu-throttling: \"false\"",
        "autoscaling.knative.dev/maxScale: \"3\"",
        "containerConcurrency: 10",
        "timeoutSeconds: 60",
        "- image: \"127.0.0.1:5000/hello:v1\"",
        "containerPort: 8080",
        "secretKeyRef:",
    ] {
        assert!(yaml.contains(line), "{line:?} missing from the YAML:\n{yaml}");
    }
    browser.screenshot("deploy-yaml").await;

    // Deployed, the page goes to the services list, where the service becomes Ready.
    browser.click("#deploy-submit").await;
    browser.wait_for_text("#services", "hello-form").await;
    assert!(browser.client().current_url().await.unwrap().as_str().ends_with("#/services/default"));
    c.wait_ready("hello-form").await;
    browser.wait_for_text("tr[data-name='hello-form']", "Ready").await;
    browser.screenshot("deploy-ready").await;

    // The URL the page links answers through the gateway with the form's variable.
    let href = browser
        .run("return document.querySelector(\"tr[data-name='hello-form'] td[data-label='URL'] a\").getAttribute('href');", vec![])
        .await;
    let href = href.as_str().expect("the service's URL is a link").to_string();
    let host = href.trim_start_matches("http://").split(['/', ':']).next().unwrap().to_string();
    assert_eq!(host, common::host("hello-form"), "{href}");
    wait_answer(&c, &host, "Hello Console!").await;

    // The stored service is what the form said.
    let stored = spec(&c, "hello-form").await;
    let template = &stored["template"]["spec"];
    assert_eq!(template["cpuThrottling"], json!(false), "{template:#}");
    assert_eq!(template["scaling"]["maxInstances"], json!(3), "{template:#}");
    assert_eq!(template["containerConcurrency"], json!(10), "{template:#}");
    assert_eq!(template["timeoutSeconds"], json!(60), "{template:#}");
    let container = &template["containers"][0];
    assert_eq!(container["resources"]["limits"], json!({"cpu": "250m", "memory": "64Mi"}), "{container:#}");
    assert_eq!(container["env"][1]["valueFrom"]["secretKeyRef"]["name"], json!("greeting"), "{container:#}");

    // The YAML is what `stratus apply` takes: applied as it is, it leaves the service the form
    // made unchanged; applied under another name, it makes the same service.
    let file = c.dir().join("hello-form.yaml");
    std::fs::write(&file, &yaml).unwrap();
    let (code, out, err) = stratus_apply(&c, &file).await;
    assert_eq!((code, out.trim()), (0, "service/hello-form unchanged"), "{err}");
    std::fs::write(&file, yaml.replace("  name: hello-form", "  name: hello-yaml")).unwrap();
    let (code, out, err) = stratus_apply(&c, &file).await;
    assert_eq!((code, out.trim()), (0, "service/hello-yaml created"), "{err}");
    assert_eq!(spec(&c, "hello-yaml").await, stored, "the YAML made another service than the form");

    // Editing through the form starts from the stored service and applies over it.
    browser.goto(&format!("{}/ui/#/deploy/default/hello-form", c.endpoint())).await;
    browser.wait_for_text("#deploy-title", "Update hello-form").await;
    browser
        .eventually("the form to start from the service", || async {
            (value(&browser, "#deploy-env-value-1").await == "Console").then_some(())
        })
        .await
        .unwrap();
    assert_eq!(value(&browser, "#deploy-image").await, IMAGE);
    assert_eq!(value(&browser, "#deploy-memory").await, "64Mi");
    browser.fill("#deploy-env-value-1", "Again").await;
    browser.click("#deploy-submit").await;
    browser.wait_for_text("#services", "hello-form").await;
    wait_answer(&c, &host, "Hello Again!").await;
    c.wait_service("hello-form", "its second revision", |s| {
        s.status.as_ref().is_some_and(|st| st.latest_ready_revision_name.ends_with("00002"))
    })
    .await;

    browser.close().await;
}

/// An archive made with `docker save`, uploaded on the console's Images page, is offered by the
/// deploy form; deployed from the form, it runs and answers through the gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_uploaded_archive_is_deployed_from_the_form_and_answers() {
    let c = Cluster::start("console-upload", Duration::from_secs(15)).await;
    c.apply(&fixtures()).await;
    let archive = c.dir().join("hello.tar");
    let saved = std::process::Command::new("docker")
        .args(["save", "-o", &archive.display().to_string(), IMAGE])
        .output()
        .expect("run docker save");
    assert!(saved.status.success(), "docker save: {}", String::from_utf8_lossy(&saved.stderr));
    // A tag of this run's own, so that the image offered is the one uploaded here.
    let tag = format!("up{}", stratus_testkit::free_port());
    let browser = c.console(USER, PASSWORD).await;
    browser.wait_for_text("#services-empty", "No Services in default").await;

    browser.click("#nav-images").await;
    browser.find("#image-file").await.send_keys(archive.to_str().unwrap()).await.unwrap();
    browser.fill("#image-name", "uploaded").await;
    browser.fill("#image-tag", &tag).await;
    browser.click("#image-upload").await;
    let image = format!("127.0.0.1:5000/default/uploaded:{tag}");
    let message = browser.wait_for_text("#image-message", "Uploaded").await;
    assert!(message.contains(&image), "{message}");
    browser.screenshot("images-uploaded-e2e").await;

    browser.goto(&format!("{}/ui/#/deploy/default", c.endpoint())).await;
    browser.wait_for_text("#deploy-title", "Deploy a service").await;
    browser
        .eventually("the uploaded image to be offered", || async {
            let offered = browser
                .run("return [...document.querySelectorAll('#deploy-images option')].map(o => o.value);", vec![])
                .await;
            offered.as_array().is_some_and(|o| o.iter().any(|v| v == &json!(image))).then_some(())
        })
        .await
        .unwrap();
    browser.fill("#deploy-name", "from-upload").await;
    browser.fill("#deploy-image", &image).await;
    browser.click("#deploy-add-env").await;
    browser.fill("#deploy-env-name-1", "TARGET").await;
    browser.fill("#deploy-env-value-1", "Upload").await;
    browser.click("#deploy-submit").await;
    browser.wait_for_text("#services", "from-upload").await;
    c.wait_ready("from-upload").await;
    browser.wait_for_text("tr[data-name='from-upload']", "Ready").await;
    wait_answer(&c, &common::host("from-upload"), "Hello Upload!").await;
    let stored = spec(&c, "from-upload").await;
    assert_eq!(stored["template"]["spec"]["containers"][0]["image"], json!(image));
    browser.close().await;
}
