//! The web console at `/ui`: its files and headers, the session cookie and what the API makes
//! of it, and the pages themselves in a real headless Chromium (see `stratus_testkit::console`),
//! against an API server on 127.0.0.1:0. Screenshots of every page go to
//! `target/console-screenshots/`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use stratus_agent::runtime::LogStream;
use stratus_apiserver::Config;
use stratus_apiserver::console::{CONSOLE_HEADER, CONTENT_SECURITY_POLICY, SESSION_COOKIE};
use stratus_testkit::console::Browser;
use stratus_testkit::log_agent::{LogAgent, create_instance, register_node};
use stratus_testkit::relay::Relay;

/// A server with tenants `a` and `b` (namespaces `a-ns`, `b-ns`), `alice` a developer in
/// `a-ns` and `bob` a developer in `b-ns`; logins last `login_ttl`.
async fn cluster(login_ttl: Duration) -> (TestServer, stratus_client::Client) {
    let mut config = Config::default();
    config.tokens.login_ttl = login_ttl;
    let s = TestServer::start_config(config).await;
    present(&s.token);
    let admin = two_tenants(&s).await;
    for (user, tenant) in [("alice", "a"), ("bob", "b")] {
        create_user(&admin, user, tenant, "").await;
        bind(&admin, &format!("{tenant}-ns"), "developer", user).await;
    }
    (s, admin)
}

async fn create_service(s: &TestServer, namespace: &str, name: &str) {
    present(&s.token);
    let r =
        send_json("POST", &format!("{}/apis/stratus.dev/v1/namespaces/{namespace}/services", s.endpoint), &hello(name))
            .await;
    assert_eq!(r.status, 201, "{}", r.text);
}

/// Opens the console and logs in as `user` (password `USER-password`).
async fn log_in(browser: &Browser, s: &TestServer, user: &str) {
    log_in_at(browser, &s.endpoint, user).await;
}

/// [`log_in`] through the server at `endpoint` (a relay in front of it).
async fn log_in_at(browser: &Browser, endpoint: &str, user: &str) {
    browser.goto(&format!("{endpoint}/ui/")).await;
    browser.fill("#username", user).await;
    browser.fill("#password", &format!("{user}-password")).await;
    browser.click("#login").await;
}

fn header<'a>(r: &'a Reply, name: &str) -> &'a str {
    r.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

// ---------------------------------------------------------------- HTTP, no browser

#[tokio::test]
async fn the_console_is_served_without_a_token_with_strict_headers() {
    let s = TestServer::start().await;
    present("");
    for (path, content_type) in [
        ("/ui", "text/html; charset=utf-8"),
        ("/ui/", "text/html; charset=utf-8"),
        ("/ui/assets/boot.js", "text/javascript; charset=utf-8"),
        ("/ui/assets/app.js", "text/javascript; charset=utf-8"),
        ("/ui/assets/api.js", "text/javascript; charset=utf-8"),
        ("/ui/assets/services.js", "text/javascript; charset=utf-8"),
        ("/ui/assets/console.css", "text/css; charset=utf-8"),
        ("/ui/assets/icon.svg", "image/svg+xml"),
    ] {
        let r = get(&format!("{}{path}", s.endpoint)).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text);
        assert_eq!(header(&r, "content-type"), content_type, "{path}");
        assert_eq!(header(&r, "content-security-policy"), CONTENT_SECURITY_POLICY, "{path}");
        assert_eq!(header(&r, "x-content-type-options"), "nosniff", "{path}");
        assert_eq!(header(&r, "referrer-policy"), "no-referrer", "{path}");
    }
    // Unknown files are 404, with the same headers; the rest of the API still wants a token.
    let r = get(&format!("{}/ui/assets/nope.js", s.endpoint)).await;
    assert_eq!(r.status, 404);
    assert_eq!(header(&r, "content-security-policy"), CONTENT_SECURITY_POLICY);
    let r = get(&format!("{}/apis/stratus.dev/v1/namespaces/default/services", s.endpoint)).await;
    assert_eq!(r.status, 401);
    // The page loads no script, style or font from anywhere else, and has no inline script.
    let page = get(&format!("{}/ui/", s.endpoint)).await.text;
    assert!(!page.contains("http://") && !page.contains("https://"), "{page}");
    assert!(!page.contains("<script>") && !page.contains("style="), "{page}");
    assert!(page.contains(r#"<script src="/ui/assets/boot.js" defer>"#), "{page}");
}

#[tokio::test]
async fn the_session_cookie_speaks_for_the_user_only_with_the_console_header() {
    let (s, _admin) = cluster(Duration::from_secs(3600)).await;
    create_service(&s, "a-ns", "web").await;
    present("");
    let url = format!("{}/ui/session", s.endpoint);
    let body = |password: &str| {
        Some(("application/json", json!({"username": "alice", "password": password}).to_string().into_bytes()))
    };

    // Without the console's header, no login (a cross-site form cannot set it).
    let r = request("POST", &url, body("alice-password")).await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert!(r.headers.get("set-cookie").is_none());

    let r = request_with("POST", &url, &[(CONSOLE_HEADER, "1")], body("wrong")).await;
    assert_eq!(r.status, 401, "{}", r.text);
    assert!(r.headers.get("set-cookie").is_none());

    let r = request_with("POST", &url, &[(CONSOLE_HEADER, "1")], body("alice-password")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["username"], "alice");
    assert_eq!(r.body["tenant"], "a");
    assert_eq!(r.body["namespaces"], json!(["a-ns"]), "only the namespaces alice may list services in");
    let cookie = header(&r, "set-cookie").to_string();
    for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/", "Max-Age=3600"] {
        assert!(cookie.split("; ").any(|a| a == attribute), "{attribute} missing from {cookie}");
    }
    assert_eq!(header(&r, "cache-control"), "no-store");
    let token = cookie.split(';').next().unwrap().strip_prefix(&format!("{SESSION_COOKIE}=")).unwrap().to_string();
    assert!(token.split('.').count() == 3, "a JWT: {token}");
    let session = format!("{SESSION_COOKIE}={token}");

    let services = format!("{}/apis/stratus.dev/v1/namespaces/a-ns/services", s.endpoint);
    // The cookie alone is no credential.
    let r = request_with("GET", &services, &[("cookie", &session)], None).await;
    assert_eq!(r.status, 401, "{}", r.text);
    let r = request_with("GET", &services, &[("cookie", &session), (CONSOLE_HEADER, "1")], None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["items"][0]["metadata"]["name"], "web");
    // As alice, not as anyone more: another tenant's namespace is hidden.
    let other = format!("{}/apis/stratus.dev/v1/namespaces/b-ns/services", s.endpoint);
    let r = request_with("GET", &other, &[("cookie", &session), (CONSOLE_HEADER, "1")], None).await;
    assert_eq!(r.status, 404, "{}", r.text);
    let r = request_with("GET", &url, &[("cookie", &session), (CONSOLE_HEADER, "1")], None).await;
    assert_eq!((r.status, r.body["username"].as_str()), (200, Some("alice")), "{}", r.text);

    // Another site's script may not add the header: its preflight is refused.
    let r = request_with(
        "OPTIONS",
        &services,
        &[
            ("origin", "https://evil.example"),
            ("access-control-request-method", "GET"),
            ("access-control-request-headers", CONSOLE_HEADER),
        ],
        None,
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert!(r.headers.get("access-control-allow-origin").is_none());

    // Logging out clears the cookie.
    let r = request_with("DELETE", &url, &[("cookie", &session), (CONSOLE_HEADER, "1")], None).await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert!(header(&r, "set-cookie").starts_with(&format!("{SESSION_COOKIE}=;")), "{:?}", r.headers);
    assert!(header(&r, "set-cookie").contains("Max-Age=0"));
}

// ---------------------------------------------------------------- in Chromium

#[tokio::test]
async fn a_user_logs_in_and_sees_services_appear_live() {
    let (s, _admin) = cluster(Duration::from_secs(3600)).await;
    let browser = Browser::start().await;
    browser.goto(&format!("{}/ui/", s.endpoint)).await;
    browser.find("#username").await;
    browser.screenshot("login").await;
    log_in(&browser, &s, "alice").await;

    browser.wait_for_text("#services-empty", "No Services in a-ns yet").await;
    browser.wait_for_text("#live-state", "Live").await;
    assert!(browser.client().current_url().await.unwrap().as_str().ends_with("#/services/a-ns"));
    assert_eq!(browser.wait_for_text("#who", "alice").await, "alice (a)");
    let options =
        browser.run("return [...document.querySelectorAll('#namespace option')].map(o => o.value)", vec![]).await;
    assert_eq!(options, json!(["a-ns"]));
    // The session cookie is out of the page's reach.
    let cookies = browser.run("return document.cookie", vec![]).await;
    assert!(!cookies.as_str().unwrap().contains("stratus-session"), "{cookies}");
    browser.screenshot("services-empty").await;

    // Marks this page: a reload would lose the mark.
    browser.run("window.stratusTestMark = 'unchanged'", vec![]).await;
    create_service(&s, "a-ns", "hello").await;
    create_service(&s, "a-ns", "api").await;
    let row = browser.wait_for_text("#services-rows tr[data-name='hello']", "hello").await;
    assert!(row.contains("Pending"), "a Service no controller has seen is pending: {row}");
    assert!(row.contains("100% latest"), "{row}");
    browser.wait_for_text("#services-rows tr[data-name='api']", "api").await;
    assert_eq!(browser.run("return window.stratusTestMark", vec![]).await, json!("unchanged"), "the page reloaded");
    let names = browser
        .run("return [...document.querySelectorAll('#services-rows tr')].map(r => r.dataset.name)", vec![])
        .await;
    assert_eq!(names, json!(["api", "hello"]));

    // A status written by the platform (here: by hand) shows, with the URL as a link.
    present(&s.token);
    let path = format!("{}/apis/stratus.dev/v1/namespaces/a-ns/services/hello", s.endpoint);
    let mut svc = get(&path).await.body;
    svc["status"] = json!({
        "url": "http://hello.a-ns.127.0.0.1.sslip.io",
        "latestCreatedRevisionName": "hello-00002",
        "latestReadyRevisionName": "hello-00002",
        "conditions": [{"type": "Ready", "status": "True"}],
        "traffic": [{"revisionName": "hello-00002", "percent": 80}, {"revisionName": "hello-00001", "percent": 20, "tag": "old"}],
    });
    let r = send_json("PUT", &format!("{path}/status"), &svc).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let row = browser.wait_for_text("#services-rows tr[data-name='hello']", "Ready").await;
    assert!(row.contains("hello-00002") && row.contains("80% hello-00002") && row.contains("20% hello-00001"), "{row}");
    let href = browser
        .run("return document.querySelector(\"tr[data-name='hello'] td[data-label='URL'] a\").href", vec![])
        .await;
    assert_eq!(href, json!("http://hello.a-ns.127.0.0.1.sslip.io/"));
    browser.screenshot("services").await;

    // Deleted: gone from the table.
    let r = request("DELETE", &format!("{}/apis/stratus.dev/v1/namespaces/a-ns/services/api", s.endpoint), None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    browser
        .eventually("the deleted Service to leave the table", || async {
            let n = browser.run("return document.querySelectorAll(\"tr[data-name='api']\").length", vec![]).await;
            (n == json!(0)).then_some(())
        })
        .await
        .unwrap();

    // On a phone-sized screen each Service is a card with labelled lines.
    browser.resize(390, 844).await;
    let display =
        browser.run("return getComputedStyle(document.querySelector('#services-rows tr')).display", vec![]).await;
    assert_eq!(display, json!("block"));
    browser.screenshot("services-narrow").await;
    browser.resize(1280, 900).await;

    // Logging out goes back to the login page, and the session is gone.
    browser.click("#logout").await;
    browser.wait_for_text("#login-message", "You have logged out").await;
    let status = browser
        .run_async(
            "fetch('/ui/session', {headers: {'X-Stratus-Console': '1'}}).then(r => arguments[0](r.status))",
            vec![],
        )
        .await;
    assert_eq!(status, json!(401));
    browser.close().await;
}

#[tokio::test]
async fn a_wrong_password_says_so_on_the_page() {
    let (s, _admin) = cluster(Duration::from_secs(3600)).await;
    let browser = Browser::start().await;
    browser.goto(&format!("{}/ui/", s.endpoint)).await;
    browser.fill("#username", "alice").await;
    browser.fill("#password", "not-her-password").await;
    browser.click("#login").await;
    browser.wait_for_text("#login-message", "Wrong user name or password.").await;
    // Still on the login page, with no session.
    assert!(browser.find("#session").await.attr("hidden").await.unwrap().is_some());
    browser.screenshot("login-wrong-password").await;
    browser.close().await;
}

#[tokio::test]
async fn an_expired_session_goes_back_to_the_login_page() {
    let (s, _admin) = cluster(Duration::from_secs(3)).await;
    create_service(&s, "a-ns", "hello").await;
    let browser = Browser::start().await;
    log_in(&browser, &s, "alice").await;
    browser.wait_for_text("#services-rows tr[data-name='hello']", "hello").await;
    // The token, and the cookie with it, last three seconds: then the page is told 401.
    browser.wait_for_text("#login-message", "Your session expired, log in again.").await;
    assert!(browser.find("#session").await.attr("hidden").await.unwrap().is_some());
    browser.screenshot("session-expired").await;
    // Logging in again works.
    browser.fill("#username", "alice").await;
    browser.fill("#password", "alice-password").await;
    browser.click("#login").await;
    browser.wait_for_text("#services-rows tr[data-name='hello']", "hello").await;
    browser.close().await;
}

#[tokio::test]
async fn a_second_tenants_user_sees_none_of_the_first_tenants_services() {
    let (s, _admin) = cluster(Duration::from_secs(3600)).await;
    create_service(&s, "a-ns", "alpha-secret").await;
    create_service(&s, "b-ns", "beta").await;
    let browser = Browser::start().await;
    log_in(&browser, &s, "bob").await;
    browser.wait_for_text("#services-rows tr[data-name='beta']", "beta").await;
    let options =
        browser.run("return [...document.querySelectorAll('#namespace option')].map(o => o.value)", vec![]).await;
    assert_eq!(options, json!(["b-ns"]));

    // Asking for tenant a's namespace by its address shows bob's own instead.
    browser.goto(&format!("{}/ui/#/services/a-ns", s.endpoint)).await;
    browser.wait_for_text("#services-rows tr[data-name='beta']", "beta").await;
    assert!(browser.client().current_url().await.unwrap().as_str().ends_with("#/services/b-ns"));
    // A Service made in a-ns now does not show up either, while one in b-ns does.
    create_service(&s, "a-ns", "alpha-later").await;
    create_service(&s, "b-ns", "beta-later").await;
    browser.wait_for_text("#services-rows tr[data-name='beta-later']", "beta-later").await;
    let page = browser.find("main").await.text().await.unwrap();
    assert!(!page.contains("alpha"), "{page}");
    // And the API, asked from the page with bob's session, does not know a-ns.
    let status = browser
        .run_async(
            "fetch('/apis/stratus.dev/v1/namespaces/a-ns/services', {headers: {'X-Stratus-Console': '1'}})\
             .then(r => arguments[0](r.status))",
            vec![],
        )
        .await;
    assert_eq!(status, json!(404));
    browser.screenshot("services-second-tenant").await;
    browser.close().await;
}

#[tokio::test]
async fn the_page_picks_up_where_it_was_when_its_connections_are_cut() {
    // A cluster admin, so that the Instances of the default namespace can be made by hand.
    let (s, admin) = cluster(Duration::from_secs(3600)).await;
    create_user(&admin, "carol", stratus_api::identity::DEFAULT_TENANT, stratus_api::identity::roles::CLUSTER_ADMIN)
        .await;
    let agent = LogAgent::start_reviewed("n1", &admin).await;
    register_node(&admin, "n1", &agent.endpoint).await;
    create_service(&s, "default", "hello").await;
    let first = create_instance(&admin, "hello-1", "hello", "n1").await;
    let container = agent.run(&first, &["before the cut"]);

    // The browser reaches the API server only through a relay that the test can cut.
    let relay = Relay::start(s.addr).await;
    let endpoint = format!("http://{}", relay.addr);
    let browser = Browser::start().await;
    log_in_at(&browser, &endpoint, "carol").await;
    browser.wait_for_text("#live-state", "Live").await;
    browser.goto(&format!("{endpoint}/ui/#/services/default/hello")).await;
    browser.wait_for_text("#instance-rows tr[data-name='hello-1']", "hello-1").await;
    browser
        .run(
            "const s = document.querySelector('#log-instance'); s.value = 'hello-1'; s.dispatchEvent(new Event('change'))",
            vec![],
        )
        .await;
    browser.click("#log-follow").await;
    browser.wait_for_text("#log-state", "Following hello-1").await;
    browser.wait_for_text("#log-lines", "before the cut").await;

    // Every connection of the page breaks at once: its watches and the followed log reconnect.
    relay.cut();
    browser.wait_for_text("#log-lines", "the connection broke here").await;
    browser.wait_for_text("#log-state", "Following hello-1").await;
    agent.fake.log(&container, LogStream::Stdout, "after the cut");
    let lines = browser.wait_for_text("#log-lines", "after the cut").await;
    assert_eq!(lines.matches("before the cut").count(), 1, "old lines came again: {lines}");
    create_instance(&admin, "hello-2", "hello", "n1").await;
    browser.wait_for_text("#instance-rows tr[data-name='hello-2']", "hello-2").await;
    browser.wait_for_text("#live-state", "Live").await;

    // A read is asked again when the network fails under it: the page's API module reads
    // while the relay refuses every connection for 600 ms (its tries: at once, 250 ms and
    // 750 ms later).
    let module = browser
        .run_async(
            "import(arguments[0]).then(api => { window.testApi = api; arguments[1]('ok'); })",
            vec![json!("/ui/assets/api.js")],
        )
        .await;
    assert_eq!(module, json!("ok"));
    relay.break_for(Duration::from_millis(600));
    let answer = browser
        .run_async(
            "window.testApi.request('GET', '/apis/stratus.dev/v1/namespaces/default/services/hello')
               .then(s => arguments[0](s.metadata.name), e => arguments[0]('failed: ' + e.message))",
            vec![],
        )
        .await;
    assert_eq!(answer, json!("hello"));
    // So is a merge patch, as the service page's traffic editor sends.
    relay.break_for(Duration::from_millis(600));
    let patched = browser
        .run_async(
            "window.testApi.request('PATCH', '/apis/stratus.dev/v1/namespaces/default/services/hello',
               {spec: {traffic: [{latestRevision: true, percent: 100, tag: 'now'}]}},
               {contentType: 'application/merge-patch+json'})
               .then(s => arguments[0](s.spec.traffic[0].tag), e => arguments[0]('failed: ' + e.message))",
            vec![],
        )
        .await;
    assert_eq!(patched, json!("now"));

    // A create that was made but whose answer was lost, twice in a row (Chromium sends a
    // request again by itself when a kept-alive connection closes before its answer), is taken
    // as made: its name was free just before. A name that was taken before is still refused.
    let collection = "/apis/stratus.dev/v1/namespaces/default/services";
    let create = "window.testApi.request('POST', arguments[0], arguments[1])
        .then(s => arguments[2](s.metadata.name), e => arguments[2]('failed: ' + e.message))";
    relay.lose_answers_to(&format!("POST {collection} "), 2);
    let created = browser.run_async(create, vec![json!(collection), hello("lost-answer")]).await;
    assert_eq!(created, json!("lost-answer"));
    // One answer lost: Chromium sends the create again on its own (the connection was kept
    // alive from the read before it), and that one answers 409.
    relay.lose_answers_to(&format!("POST {collection} "), 1);
    let created = browser.run_async(create, vec![json!(collection), hello("lost-once")]).await;
    let seen = relay.seen();
    relay.lose_answers_to("", 0);
    assert_eq!(created, json!("lost-once"));
    assert_eq!(seen, 2, "Chromium sent the create once: the 409 was not what the page met");
    let stored = get(&format!("{}{collection}/lost-answer", s.endpoint)).await;
    assert_eq!(stored.status, 200, "{}", stored.text);
    let refused = browser.run_async(create, vec![json!(collection), hello("lost-answer")]).await;
    assert!(refused.as_str().is_some_and(|r| r.starts_with("failed: ") && r.contains("already exists")), "{refused}");
    browser.close().await;
}

#[tokio::test]
async fn a_watch_that_goes_silent_is_opened_again() {
    let (s, _admin) = cluster(Duration::from_secs(3600)).await;
    let relay = Relay::start(s.addr).await;
    let endpoint = format!("http://{}", relay.addr);
    let browser = Browser::start().await;
    log_in_at(&browser, &endpoint, "alice").await;
    browser.wait_for_text("#live-state", "Live").await;
    // Every connection of the page stops delivering without closing: nothing tells the page
    // but the silence (no bookmark for 30 s), after which it opens its watches again.
    relay.freeze_streams().await;
    create_service(&s, "a-ns", "after-the-silence").await;
    browser.wait_for_text("#services-rows tr[data-name='after-the-silence']", "after-the-silence").await;
    browser.close().await;
}
