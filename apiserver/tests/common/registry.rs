//! A `docker-registry` of a test's own, on a free loopback port, and archives in the layout
//! `docker save` writes.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// A registry of its own, stopped (and its storage removed) when dropped.
pub struct TestRegistry {
    pub addr: String,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl TestRegistry {
    /// Starts `docker-registry` on a free port; tries again on another port when the one
    /// picked was taken in between.
    pub fn start() -> TestRegistry {
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let addr = format!("127.0.0.1:{port}");
            let config = dir.path().join("config.yml");
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\nlog: {{ level: warn }}\nstorage: {{ filesystem: {{ rootdirectory: {} }}, delete: {{ enabled: true }} }}\nhttp: {{ addr: {addr} }}\n",
                    dir.path().join("data").display()
                ),
            )
            .unwrap();
            let mut child = std::process::Command::new("docker-registry")
                .arg("serve")
                .arg(&config)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("these tests need Debian's docker-registry (hack/install-deps.sh installs it)");
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if std::net::TcpStream::connect(&addr).is_ok() {
                    return TestRegistry { addr, child, _dir: dir };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("docker-registry did not start");
    }

    pub async fn get(&self, path: &str, accept: &str) -> (u16, hyper::HeaderMap, Bytes) {
        let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .build_http::<http_body_util::Full<Bytes>>();
        let req = hyper::Request::get(format!("http://{}{path}", self.addr))
            .header("accept", accept)
            .body(http_body_util::Full::new(Bytes::new()))
            .unwrap();
        let resp = client.request(req).await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        (status, headers, resp.into_body().collect().await.unwrap().to_bytes())
    }

    pub async fn catalog(&self) -> Vec<String> {
        let (status, _, body) = self.get("/v2/_catalog", "application/json").await;
        assert_eq!(status, 200);
        let v: Value = serde_json::from_slice(&body).unwrap();
        v["repositories"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_string()).collect()
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A ustar archive of `files`, with the end-of-archive marker.
pub fn tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data) in files {
        let mut h = vec![0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..107].copy_from_slice(b"0000644");
        h[124..135].copy_from_slice(format!("{:011o}", data.len()).as_bytes());
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        out.extend(h);
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend([0u8; 1024]);
    out
}

pub fn sha256(data: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    format!("sha256:{}", digest.as_ref().iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// An archive in the legacy `docker save` layout (the layer first, as Docker writes it), with
/// one uncompressed layer of `layer_bytes` bytes.
pub fn saved_image(repo_tag: &str, layer_bytes: usize) -> (Vec<u8>, Vec<u8>) {
    let layer = tar(&[("hello", &vec![b'h'; layer_bytes])]);
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{"Entrypoint":["/hello"]}},"rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#,
        sha256(&layer)
    );
    let config_name = format!("{}.json", &sha256(config.as_bytes())[7..]);
    let manifest = format!(r#"[{{"Config":"{config_name}","RepoTags":["{repo_tag}"],"Layers":["abc/layer.tar"]}}]"#);
    let archive = tar(&[
        ("abc/VERSION", b"1.0"),
        ("abc/layer.tar", &layer),
        (&config_name, config.as_bytes()),
        ("manifest.json", manifest.as_bytes()),
    ]);
    (archive, layer)
}
