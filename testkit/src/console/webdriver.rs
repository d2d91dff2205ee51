//! A small W3C WebDriver client (<https://www.w3.org/TR/webdriver2/>): the commands the
//! console's tests use, as plain JSON over HTTP/1.1 to a driver on loopback.
//!
//! Every command is one request, `POST` with a JSON body, `GET` or `DELETE`; the driver answers
//! `{"value": …}`, or `{"value": {"error", "message", …}}` with a 4xx or 5xx status when the
//! command failed. A failure comes back as an [`Error`] naming the command.

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Method, Request, StatusCode, header};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

/// The key under which WebDriver names a web element in JSON (the spec's "web element
/// identifier").
pub const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long one command may take before it fails. Longer than the driver's own script timeout
/// (30 s) and shorter than its page-load timeout (300 s): a page that never loads fails here.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// A command that failed, and why.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{command}: building the request: {source}")]
    Request {
        command: Command,
        #[source]
        source: hyper::http::Error,
    },
    #[error("{command}: sending the request to the driver: {source}")]
    Send {
        command: Command,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("{command}: reading the driver's answer: {source}")]
    Receive {
        command: Command,
        #[source]
        source: hyper::Error,
    },
    #[error("{command}: no answer from the driver within {COMMAND_TIMEOUT:?}")]
    Timeout { command: Command },
    #[error("{command}: the driver answered {status} with no WebDriver JSON: {body}")]
    NotWebDriver { command: Command, status: StatusCode, body: String },
    /// The driver refused or failed the command: `error` is the spec's error code
    /// (`no such element`, `javascript error`, …).
    #[error("{command}: {error}: {message}")]
    Driver { command: Command, error: String, message: String },
    #[error("{command}: unexpected answer {value}")]
    Unexpected { command: Command, value: Value },
}

impl Error {
    /// The spec's error code when the driver failed the command (`no such element`, …).
    pub fn driver_error(&self) -> Option<&str> {
        match self {
            Error::Driver { error, .. } => Some(error),
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A command as sent: method and path below the driver's root (e.g. `POST /session/…/url`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub method: Method,
    pub path: String,
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.path)
    }
}

/// A WebDriver session. Cheap to clone: clones share the session and its connections.
#[derive(Debug, Clone)]
pub struct Client {
    http: HttpClient<HttpConnector, Full<Bytes>>,
    /// `http://127.0.0.1:PORT`, without a trailing slash.
    root: String,
    session: String,
}

impl Client {
    /// Opens a session on the driver at `root` (`http://127.0.0.1:PORT`) with the given
    /// capabilities (put under `alwaysMatch`).
    pub async fn new_session(root: &str, capabilities: serde_json::Map<String, Value>) -> Result<Client> {
        let http = HttpClient::builder(TokioExecutor::new()).build(HttpConnector::new());
        let root = root.trim_end_matches('/').to_string();
        let command = Command { method: Method::POST, path: "/session".into() };
        let body = json!({"capabilities": {"alwaysMatch": capabilities}});
        let value = send(&http, &root, command.clone(), Some(body)).await?;
        let Some(session) = value.get("sessionId").and_then(Value::as_str) else {
            return Err(Error::Unexpected { command, value });
        };
        Ok(Client { session: session.to_string(), http, root })
    }

    /// The session's id, as the driver named it.
    pub fn session_id(&self) -> &str {
        &self.session
    }

    /// Opens `url` and returns once the page has loaded.
    pub async fn goto(&self, url: &str) -> Result<()> {
        self.post("/url", json!({"url": url})).await.map(drop)
    }

    /// The URL of the current page, fragment included.
    pub async fn current_url(&self) -> Result<String> {
        self.get("/url").await.and_then(|value| string(self.command(Method::GET, "/url"), value))
    }

    /// The first element `css` selects; fails with `no such element` when there is none (it
    /// does not wait).
    pub async fn find(&self, css: &str) -> Result<Element> {
        let path = "/element";
        let value = self.post(path, locator(css)).await?;
        self.element(self.command(Method::POST, path), value)
    }

    /// Every element `css` selects, in document order; empty when there is none.
    pub async fn find_all(&self, css: &str) -> Result<Vec<Element>> {
        let path = "/elements";
        let value = self.post(path, locator(css)).await?;
        self.elements(self.command(Method::POST, path), value)
    }

    /// Runs `script` as the body of a function called with `args` and returns what it returns
    /// (a thrown exception is a `javascript error`).
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> Result<Value> {
        self.post("/execute/sync", json!({"script": script, "args": args})).await
    }

    /// Runs `script` like [`Client::execute`]; it ends by calling
    /// `arguments[arguments.length - 1]` with its result, within the driver's script timeout.
    pub async fn execute_async(&self, script: &str, args: Vec<Value>) -> Result<Value> {
        self.post("/execute/async", json!({"script": script, "args": args})).await
    }

    /// Resizes the browser window.
    pub async fn set_window_size(&self, width: u32, height: u32) -> Result<()> {
        self.post("/window/rect", json!({"width": width, "height": height})).await.map(drop)
    }

    /// A PNG of the visible part of the page.
    pub async fn screenshot(&self) -> Result<Vec<u8>> {
        let path = "/screenshot";
        let value = self.get(path).await?;
        decode_png(self.command(Method::GET, path), value)
    }

    /// Ends the session: the browser quits.
    pub async fn close(&self) -> Result<()> {
        send(&self.http, &self.root, self.command(Method::DELETE, ""), None).await.map(drop)
    }

    fn command(&self, method: Method, path: &str) -> Command {
        Command { method, path: format!("/session/{}{path}", self.session) }
    }

    async fn get(&self, path: &str) -> Result<Value> {
        send(&self.http, &self.root, self.command(Method::GET, path), None).await
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value> {
        send(&self.http, &self.root, self.command(Method::POST, path), Some(body)).await
    }

    fn element(&self, command: Command, value: Value) -> Result<Element> {
        match value.get(ELEMENT_KEY).and_then(Value::as_str) {
            Some(id) => Ok(Element { client: self.clone(), id: id.to_string() }),
            None => Err(Error::Unexpected { command, value }),
        }
    }

    fn elements(&self, command: Command, value: Value) -> Result<Vec<Element>> {
        let Value::Array(items) = value else {
            return Err(Error::Unexpected { command, value });
        };
        items.into_iter().map(|item| self.element(command.clone(), item)).collect()
    }
}

/// An element of the current page. It goes stale (`stale element reference`) when the page
/// removes it.
#[derive(Debug, Clone)]
pub struct Element {
    client: Client,
    id: String,
}

impl Element {
    /// The element's id in the session, as the driver named it.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The element as a script argument: `arguments[i]` is the DOM element.
    pub fn to_json(&self) -> Value {
        json!({ELEMENT_KEY: self.id})
    }

    /// Clicks the middle of the element, after scrolling it into view; fails with `element not
    /// interactable` or `element click intercepted` when it cannot be clicked.
    pub async fn click(&self) -> Result<()> {
        self.post("/click", json!({})).await.map(drop)
    }

    /// Empties an editable element.
    pub async fn clear(&self) -> Result<()> {
        self.post("/clear", json!({})).await.map(drop)
    }

    /// Types `text` into the element, after focusing it.
    pub async fn send_keys(&self, text: &str) -> Result<()> {
        self.post("/value", json!({"text": text})).await.map(drop)
    }

    /// The element's rendered text, as a user sees it.
    pub async fn text(&self) -> Result<String> {
        let path = "/text";
        let value = self.get(path).await?;
        string(self.command(Method::GET, path), value)
    }

    /// The attribute `name` as written in the HTML, or `None` when the element has none.
    pub async fn attr(&self, name: &str) -> Result<Option<String>> {
        let path = format!("/attribute/{name}");
        let value = self.get(&path).await?;
        optional_string(self.command(Method::GET, &path), value)
    }

    /// The DOM property `name` (e.g. `value`, `checked`): a string as is, a boolean or number
    /// in its JSON form, `None` when it is null or undefined.
    pub async fn prop(&self, name: &str) -> Result<Option<String>> {
        let path = format!("/property/{name}");
        let value = self.get(&path).await?;
        Ok(match value {
            Value::Null => None,
            Value::String(s) => Some(s),
            other => Some(other.to_string()),
        })
    }

    /// Whether the element is shown (the spec's "element displayedness").
    pub async fn is_displayed(&self) -> Result<bool> {
        let path = "/displayed";
        let value = self.get(path).await?;
        value.as_bool().ok_or_else(|| Error::Unexpected { command: self.command(Method::GET, path), value })
    }

    /// The first element `css` selects inside this one.
    pub async fn find(&self, css: &str) -> Result<Element> {
        let path = "/element";
        let value = self.post(path, locator(css)).await?;
        self.client.element(self.command(Method::POST, path), value)
    }

    /// Every element `css` selects inside this one.
    pub async fn find_all(&self, css: &str) -> Result<Vec<Element>> {
        let path = "/elements";
        let value = self.post(path, locator(css)).await?;
        self.client.elements(self.command(Method::POST, path), value)
    }

    /// Chooses the `<option>` of this `<select>` whose value is `value`, as a user clicking it
    /// would (the select's `input` and `change` events fire).
    pub async fn select_by_value(&self, value: &str) -> Result<()> {
        let quoted = serde_json::to_string(value).unwrap_or_default();
        self.find(&format!("option[value={quoted}]")).await?.click().await
    }

    fn command(&self, method: Method, path: &str) -> Command {
        self.client.command(method, &format!("/element/{}{path}", self.id))
    }

    async fn get(&self, path: &str) -> Result<Value> {
        send(&self.client.http, &self.client.root, self.command(Method::GET, path), None).await
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value> {
        send(&self.client.http, &self.client.root, self.command(Method::POST, path), Some(body)).await
    }
}

fn locator(css: &str) -> Value {
    json!({"using": "css selector", "value": css})
}

/// Sends `command` (with `body` as JSON, if any) and returns the answer's `value`.
async fn send(
    http: &HttpClient<HttpConnector, Full<Bytes>>,
    root: &str,
    command: Command,
    body: Option<Value>,
) -> Result<Value> {
    let mut request = Request::builder().method(command.method.clone()).uri(format!("{root}{}", command.path));
    let body = match body {
        Some(body) => {
            request = request.header(header::CONTENT_TYPE, "application/json; charset=utf-8");
            Full::new(Bytes::from(body.to_string()))
        }
        None => Full::default(),
    };
    // Only a URI that does not parse fails here (an attribute name with a space, say).
    let request = match request.body(body) {
        Ok(request) => request,
        Err(source) => return Err(Error::Request { command, source }),
    };
    let exchange = async {
        let response =
            http.request(request).await.map_err(|source| Error::Send { command: command.clone(), source })?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|source| Error::Receive { command: command.clone(), source })?
            .to_bytes();
        Ok((status, bytes))
    };
    let (status, bytes) = match tokio::time::timeout(COMMAND_TIMEOUT, exchange).await {
        Ok(answer) => answer?,
        Err(_) => return Err(Error::Timeout { command }),
    };
    answer(command, status, &bytes)
}

/// The `value` of a driver's answer, or the error it reports.
fn answer(command: Command, status: StatusCode, body: &[u8]) -> Result<Value> {
    let not_webdriver =
        |command| Error::NotWebDriver { command, status, body: String::from_utf8_lossy(body).into_owned() };
    let Ok(Value::Object(mut answer)) = serde_json::from_slice::<Value>(body) else {
        return Err(not_webdriver(command));
    };
    let Some(value) = answer.remove("value") else {
        return Err(not_webdriver(command));
    };
    if let Some(error) = value.get("error").and_then(Value::as_str) {
        let message = value.get("message").and_then(Value::as_str).unwrap_or_default();
        return Err(Error::Driver { command, error: error.to_string(), message: message.to_string() });
    }
    if !status.is_success() {
        return Err(not_webdriver(command));
    }
    Ok(value)
}

fn string(command: Command, value: Value) -> Result<String> {
    match value {
        Value::String(s) => Ok(s),
        value => Err(Error::Unexpected { command, value }),
    }
}

fn optional_string(command: Command, value: Value) -> Result<Option<String>> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        value => Err(Error::Unexpected { command, value }),
    }
}

fn decode_png(command: Command, value: Value) -> Result<Vec<u8>> {
    let encoded = string(command.clone(), value)?;
    match base64::engine::general_purpose::STANDARD.decode(&encoded) {
        Ok(png) if png.starts_with(b"\x89PNG\r\n\x1a\n") => Ok(png),
        _ => Err(Error::Unexpected { command, value: Value::String(encoded) }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command() -> Command {
        Command { method: Method::POST, path: "/session/s1/element".into() }
    }

    #[test]
    fn a_driver_error_names_the_command_the_code_and_the_message() {
        let body = br#"{"value":{"error":"no such element","message":"no such element: Unable to locate element","stacktrace":"..."}}"#;
        let err = answer(command(), StatusCode::NOT_FOUND, body).unwrap_err();
        assert_eq!(err.driver_error(), Some("no such element"));
        assert_eq!(
            err.to_string(),
            "POST /session/s1/element: no such element: no such element: Unable to locate element"
        );
    }

    #[test]
    fn a_success_gives_the_value() {
        let body = format!(r#"{{"value":{{"{ELEMENT_KEY}":"e7"}}}}"#);
        assert_eq!(answer(command(), StatusCode::OK, body.as_bytes()).unwrap(), json!({ELEMENT_KEY: "e7"}));
        assert_eq!(answer(command(), StatusCode::OK, br#"{"value":null}"#).unwrap(), Value::Null);
    }

    #[test]
    fn an_answer_that_is_not_webdriver_json_is_an_error_with_its_body() {
        for (status, body) in [
            (StatusCode::OK, &b"<html>proxy</html>"[..]),
            (StatusCode::OK, br#"{"sessionId":"s1"}"#),
            (StatusCode::INTERNAL_SERVER_ERROR, br#"{"value":"broken"}"#),
        ] {
            let err = answer(command(), status, body).unwrap_err();
            assert!(matches!(err, Error::NotWebDriver { .. }), "{err}");
            assert!(err.to_string().contains(&*String::from_utf8_lossy(body)), "{err}");
        }
    }

    #[test]
    fn a_screenshot_must_be_a_base64_png() {
        let png = b"\x89PNG\r\n\x1a\nrest";
        let encoded = base64::engine::general_purpose::STANDARD.encode(png);
        assert_eq!(decode_png(command(), Value::String(encoded)).unwrap(), png);
        assert!(decode_png(command(), json!("not base64!")).is_err());
        let gif = base64::engine::general_purpose::STANDARD.encode(b"GIF89a");
        assert!(decode_png(command(), Value::String(gif)).is_err());
    }
}
