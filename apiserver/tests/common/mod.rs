//! A small HTTP client for the API server's tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use stratus_api::Resource;
use stratus_api::v1::{Namespace, NamespaceSpec, RoleBinding, RoleBindingSpec, Subject, Tenant, User, UserSpec};
pub use stratus_apiserver::testing::TestServer;
use stratus_client::Client;

pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub text: String,
    pub headers: hyper::HeaderMap,
}

thread_local! {
    /// The token requests of this test carry (each `#[tokio::test]` runs on a thread of its own).
    static TOKEN: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Makes the requests of this test present `token` (empty: none).
pub fn present(token: &str) {
    TOKEN.with(|t| *t.borrow_mut() = token.to_string());
}

/// Starts a server and makes the test's requests present its cluster-admin token.
pub async fn start() -> TestServer {
    let s = TestServer::start().await;
    present(&s.token);
    s
}

pub async fn request(method: &str, url: &str, body: Option<(&str, Vec<u8>)>) -> Reply {
    request_with(method, url, &[], body).await
}

/// A request with extra headers (`Host`, `Origin`, …).
pub async fn request_with(method: &str, url: &str, headers: &[(&str, &str)], body: Option<(&str, Vec<u8>)>) -> Reply {
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http::<Full<bytes::Bytes>>();
    let mut req = hyper::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let token = TOKEN.with(|t| t.borrow().clone());
    if !token.is_empty() {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let payload = match body {
        Some((content_type, bytes)) => {
            req = req.header("content-type", content_type);
            bytes
        }
        None => Vec::new(),
    };
    let resp = client.request(req.body(Full::new(payload.into())).unwrap()).await.expect("request sent");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.expect("body read").to_bytes();
    let text = String::from_utf8_lossy(&bytes).to_string();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Reply { status, body, text, headers }
}

pub async fn get(url: &str) -> Reply {
    request("GET", url, None).await
}

pub async fn send_json(method: &str, url: &str, body: &Value) -> Reply {
    request(method, url, Some(("application/json", serde_json::to_vec(body).unwrap()))).await
}

pub async fn send_yaml(method: &str, url: &str, yaml: &str) -> Reply {
    request(method, url, Some(("application/yaml", yaml.as_bytes().to_vec()))).await
}

pub fn hello(name: &str) -> Value {
    serde_json::json!({
        "apiVersion": "stratus.dev/v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"template": {"spec": {"containers": [{"image": "127.0.0.1:5000/hello:v1"}]}}}
    })
}

/// Tenants `a` and `b`, each with a namespace and a user; returns the admin client.
pub async fn two_tenants(s: &TestServer) -> Client {
    let admin = Client::new(&s.endpoint).unwrap().with_token(&s.token);
    for t in ["a", "b"] {
        let mut tenant = Tenant::default();
        tenant.meta_mut().name = t.into();
        admin.create(tenant).await.unwrap();
        let mut ns = Namespace { spec: Some(NamespaceSpec { tenant: t.into() }), ..Default::default() };
        ns.meta_mut().name = format!("{t}-ns");
        admin.create(ns).await.unwrap();
    }
    admin
}

pub async fn create_user(admin: &Client, name: &str, tenant: &str, cluster_role: &str) {
    let mut u = User {
        spec: Some(UserSpec {
            tenant: tenant.into(),
            password: format!("{name}-password"),
            cluster_role: cluster_role.into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    u.meta_mut().name = name.into();
    let made = admin.create(u).await.unwrap();
    let spec = made.spec.unwrap();
    assert!(spec.password.is_empty() && spec.password_hash.is_empty(), "a password came back: {spec:?}");
}

pub async fn bind(admin: &Client, namespace: &str, role: &str, user: &str) {
    let mut rb = RoleBinding {
        spec: Some(RoleBindingSpec {
            role: role.into(),
            subjects: vec![Subject { kind: "User".into(), name: user.into(), namespace: String::new() }],
        }),
        ..Default::default()
    };
    rb.meta_mut().name = format!("{user}-{role}");
    rb.meta_mut().namespace = namespace.into();
    admin.create(rb).await.unwrap();
}

/// Logs in through the OAuth token endpoint, as any OAuth client would.
pub async fn login(s: &TestServer, user: &str, password: &str) -> Reply {
    let form = format!("grant_type=password&username={user}&password={password}");
    present("");
    request(
        "POST",
        &format!("{}/auth/token", s.endpoint),
        Some(("application/x-www-form-urlencoded", form.into_bytes())),
    )
    .await
}

pub async fn user_client(s: &TestServer, user: &str) -> (Client, String) {
    let r = login(s, user, &format!("{user}-password")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["token_type"], "Bearer");
    assert!(r.body["expires_in"].as_i64().unwrap() > 0);
    let token = r.body["access_token"].as_str().unwrap().to_string();
    (Client::new(&s.endpoint).unwrap().with_token(&token), token)
}
