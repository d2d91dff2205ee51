//! A small HTTP client for the API server's tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

pub use stratus_apiserver::testing::TestServer;

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
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<bytes::Bytes>>();
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
