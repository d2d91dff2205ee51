//! A real headless Chromium, driven over WebDriver through Debian's `chromedriver`, for the
//! web console's tests: start one per test, drive it, wait on what the page shows, and save
//! screenshots under `target/console-screenshots/`.
//!
//! Chromium and chromedriver come from `hack/install-deps.sh` (packages `chromium` and
//! `chromium-driver`); without them [`Browser::start`] panics naming the package, so the tests
//! fail instead of skipping.
//!
//! The WebDriver client is [`webdriver`], a small one of this crate's own.

pub mod webdriver;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

pub use webdriver::{Client, Element};

/// Where Debian's packages put the driver and the browser.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// How long a wait on the page lasts before the test fails: generous, the machine is shared.
pub const WAIT: Duration = Duration::from_secs(60);

/// A browser session; the driver and the browser are killed when it is dropped.
pub struct Browser {
    client: Client,
    /// chromedriver, leader of a process group that holds the browser too.
    driver: tokio::process::Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver on a free loopback port and a headless Chromium with a fresh
    /// profile, 1280×900, with the flags that keep it from reaching for the network.
    ///
    /// # Panics
    /// When chromedriver or Chromium is missing or does not start.
    pub async fn start() -> Browser {
        Browser::start_with(&[]).await
    }

    /// As [`Browser::start`], trusting the TLS certificates in the PEM files `certificates`
    /// (a server's own certificate, as the platform writes it beside its CA) by their public
    /// keys (`--ignore-certificate-errors-spki-list`): the end-to-end cluster serves its API
    /// over TLS with a CA made for the test, which Chromium does not know. Any other
    /// certificate error still fails the page.
    ///
    /// # Panics
    /// As [`Browser::start`], and when a file cannot be read or holds no certificate.
    pub async fn start_trusting(certificates: &[&Path]) -> Browser {
        let mut hashes = Vec::new();
        for path in certificates {
            let pem = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            let before = hashes.len();
            for block in x509_parser::pem::Pem::iter_from_buffer(&pem) {
                let block = block.unwrap_or_else(|e| panic!("{} is not PEM: {e}", path.display()));
                let cert = block.parse_x509().unwrap_or_else(|e| panic!("a certificate in {}: {e}", path.display()));
                let digest = ring::digest::digest(&ring::digest::SHA256, cert.public_key().raw);
                hashes.push(base64::engine::general_purpose::STANDARD.encode(digest.as_ref()));
            }
            assert!(hashes.len() > before, "{} holds no certificate", path.display());
        }
        Browser::start_with(&[format!("--ignore-certificate-errors-spki-list={}", hashes.join(","))]).await
    }

    async fn start_with(extra_args: &[String]) -> Browser {
        for (path, package) in [(CHROMEDRIVER, "chromium-driver"), (CHROMIUM, "chromium")] {
            assert!(
                Path::new(path).exists(),
                "{path} is missing: the console's tests need Debian's {package} (run hack/install-deps.sh)"
            );
        }
        let profile = tempfile::tempdir().expect("a profile directory for Chromium");
        let mut driver = tokio::process::Command::new(CHROMEDRIVER)
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        let stdout = driver.stdout.take().expect("chromedriver's stdout");
        let mut lines = BufReader::new(stdout).lines();
        let port = tokio::time::timeout(WAIT, async {
            while let Some(line) = lines.next_line().await.expect("chromedriver's output") {
                if let Some(port) = line.split("started successfully on port ").nth(1) {
                    return port.trim_end_matches('.').parse::<u16>().expect("chromedriver's port");
                }
            }
            panic!("chromedriver exited before it listened");
        })
        .await
        .expect("chromedriver listens within 30 s");
        // Keep reading, so that a full pipe never blocks the driver.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

        let args = [
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--no-first-run".into(),
            "--window-size=1280,900".into(),
            format!("--user-data-dir={}", profile.path().display()),
        ]
        .into_iter()
        .chain(extra_args.iter().cloned())
        .chain(net_log_arg())
        .collect::<Vec<_>>();
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".into(), json!("chrome"));
        capabilities.insert("goog:chromeOptions".into(), json!({"binary": CHROMIUM, "args": args}));
        let client = Client::new_session(&format!("http://127.0.0.1:{port}"), capabilities)
            .await
            .unwrap_or_else(|e| panic!("a WebDriver session in Chromium: {e}"));
        Browser { client, driver, _profile: profile }
    }

    /// The WebDriver client, for what the helpers below do not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Opens `url` and waits for it to load. A console page whose first script (`boot.js`)
    /// did not run once the page had loaded lost it to the network (Chromium fails every
    /// request in flight when a network interface comes or goes: whenever Docker starts or
    /// stops a container; see docs/console.md): it is opened again, as a person would reload a
    /// blank page, up to five times. What boot.js loads, it loads again itself.
    pub async fn goto(&self, url: &str) {
        for attempt in 1.. {
            self.client.goto(url).await.unwrap_or_else(|e| panic!("open {url}: {e}"));
            let lost = self
                .run(
                    "return document.readyState === 'complete'
                       && document.querySelector('script[src$=\"/boot.js\"]') !== null
                       && document.documentElement.dataset.booted !== 'true'",
                    vec![],
                )
                .await;
            if lost != json!(true) || attempt == 5 {
                return;
            }
            eprintln!("{url}: the page's boot.js was lost to the network; opening it again");
        }
    }

    /// The element `css` selects, once there is one.
    pub async fn find(&self, css: &str) -> Element {
        let last = std::cell::RefCell::new(String::new());
        self.eventually(&format!("an element {css:?}"), || async {
            match self.client.find(css).await {
                Ok(element) => Some(element),
                Err(e) => {
                    // Only its absence is worth waiting out; any other failure is final.
                    if e.driver_error() != Some("no such element") {
                        panic!("find {css:?}: {e}");
                    }
                    *last.borrow_mut() = e.to_string();
                    None
                }
            }
        })
        .await
        .unwrap_or_else(|what| panic!("{what}; the driver's last answer: {}", last.borrow()))
    }

    /// Types `text` into the field `css`.
    pub async fn fill(&self, css: &str, text: &str) {
        for attempt in 1.. {
            let field = self.find(css).await;
            let typed = match field.clear().await {
                Ok(()) => field.send_keys(text).await,
                Err(e) => Err(e),
            };
            match typed {
                Ok(()) => return,
                Err(e) if is_stale(&e) && attempt < STALE_RETRIES => continue,
                Err(e) => panic!("type into {css}: {e}"),
            }
        }
    }

    /// Clicks the element `css` selects. The page redraws what it polls (lists refresh every few
    /// seconds), so an element found a moment ago may have been replaced: it is found again.
    pub async fn click(&self, css: &str) {
        for attempt in 1.. {
            match self.find(css).await.click().await {
                Ok(()) => return,
                Err(e) if is_stale(&e) && attempt < STALE_RETRIES => continue,
                Err(e) => panic!("click {css}: {e}"),
            }
        }
    }

    /// The visible text of `css`, once an element of it is shown whose text contains `wanted`.
    pub async fn wait_for_text(&self, css: &str, wanted: &str) -> String {
        let last = std::cell::RefCell::new(String::new());
        let found = self
            .eventually(&format!("{css:?} to show {wanted:?}"), || async {
                for element in self.client.find_all(css).await.ok()? {
                    if !element.is_displayed().await.unwrap_or(false) {
                        continue;
                    }
                    let text = element.text().await.ok()?;
                    if text.contains(wanted) {
                        return Some(text);
                    }
                    *last.borrow_mut() = text;
                }
                None
            })
            .await;
        match found {
            Ok(text) => text,
            Err(what) => {
                // What the page showed instead, in the message and as a picture beside the others.
                let page = self.client.execute("return document.body.innerText", vec![]).await.unwrap_or_default();
                let url = self.client.current_url().await.unwrap_or_default();
                let picture = self.client.screenshot().await.ok().map(|png| {
                    let path = screenshot_dir().join("failed-wait.png");
                    let _ = std::fs::create_dir_all(screenshot_dir()).and_then(|()| std::fs::write(&path, png));
                    path.display().to_string()
                });
                panic!(
                    "{what}; last seen: {:?}; the page at {url} showed:\n{}\n(screenshot: {picture:?})",
                    last.borrow(),
                    page.as_str().unwrap_or_default()
                )
            }
        }
    }

    /// Runs `script` in the page (its `arguments` are `args`) and returns what it returns.
    pub async fn run(&self, script: &str, args: Vec<Value>) -> Value {
        self.client.execute(script, args).await.unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Runs an async `script` in the page: it ends by calling `arguments[arguments.length - 1]`
    /// with its result.
    pub async fn run_async(&self, script: &str, args: Vec<Value>) -> Value {
        self.client.execute_async(script, args).await.unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Polls `check` every 100 ms until it answers something, for at most [`WAIT`]; the error
    /// says what was waited for.
    pub async fn eventually<T, F, Fut>(&self, what: &str, mut check: F) -> Result<T, String>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(v) = check().await {
                return Ok(v);
            }
            if Instant::now() > deadline {
                return Err(format!("waited {WAIT:?} for {what}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Resizes the window (a narrow screen: 390×844).
    pub async fn resize(&self, width: u32, height: u32) {
        self.client.set_window_size(width, height).await.unwrap_or_else(|e| panic!("resize to {width}×{height}: {e}"));
    }

    /// Saves a PNG of the page as `target/console-screenshots/NAME.png` and returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.unwrap_or_else(|e| panic!("screenshot {name}: {e}"));
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "the screenshot {name} is not a PNG");
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    /// Ends the WebDriver session (the browser quits) and stops the driver.
    pub async fn close(mut self) {
        let _ = self.client.close().await;
        self.kill();
    }

    fn kill(&mut self) {
        if let Some(pid) = self.driver.id().and_then(|id| rustix::process::Pid::from_raw(id.cast_signed())) {
            // The browser is in the driver's process group: a test that panicked leaves none
            // behind.
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
        let _ = self.driver.start_kill();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How many times an action is retried on an element the page replaced under it.
const STALE_RETRIES: u32 = 20;

/// Whether the driver refused an action because its element is no longer in the page.
fn is_stale(e: &webdriver::Error) -> bool {
    e.driver_error() == Some("stale element reference")
}

/// `target/console-screenshots`: under `CARGO_TARGET_DIR` when set, else the target directory
/// the running test binary was built in (`target/debug/deps/TEST` → `target`).
pub fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).or_else(|| {
        let exe = std::env::current_exe().ok()?;
        exe.parent()?.parent()?.parent().map(Path::to_path_buf)
    });
    target.unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target")).join("console-screenshots")
}

/// With `STRATUS_CHROME_NET_LOG` set to a directory, each browser writes Chromium's network
/// log (every socket, TLS handshake and request, with the error that ended it) to a file of its
/// own there: what to read when a page says "Failed to fetch".
fn net_log_arg() -> Option<String> {
    let dir = PathBuf::from(std::env::var_os("STRATUS_CHROME_NET_LOG")?);
    let _ = std::fs::create_dir_all(&dir);
    let name =
        format!("netlog-{}-{}.json", std::process::id(), NET_LOGS.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    Some(format!("--log-net-log={}", dir.join(name).display()))
}

static NET_LOGS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
