//! Image upload against a real registry (Debian's `docker-registry`, started per test on a
//! free loopback port): an archive in the layout `docker save` writes is stored under the
//! namespace and served by the registry; broken, oversized and foreign uploads fail clearly
//! and leave nothing behind. `e2e/tests/images.rs` uploads a real `docker save` and runs it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/registry.rs"]
mod registry;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, StreamBody};
use hyper_util::rt::TokioExecutor;
use registry::{TestRegistry, saved_image, sha256};
use serde_json::Value;
use stratus_api::identity::roles;
use stratus_apiserver::images::ImagesConfig;

async fn server(registry: &TestRegistry, max_bytes: u64) -> (TestServer, tempfile::TempDir) {
    let spool = tempfile::tempdir().unwrap();
    let images = ImagesConfig { max_bytes, ..ImagesConfig::new(&registry.addr, spool.path()) };
    let s = TestServer::start_config(stratus_apiserver::Config { images: Some(images), ..Default::default() }).await;
    present(&s.token);
    (s, spool)
}

async fn upload(s: &TestServer, namespace: &str, query: &str, archive: Vec<u8>) -> Reply {
    let url = format!("{}/apis/stratus.dev/v1/namespaces/{namespace}/images{query}", s.endpoint);
    request("POST", &url, Some(("application/x-tar", archive))).await
}

fn spool_is_empty(spool: &tempfile::TempDir) -> bool {
    std::fs::read_dir(spool.path()).map(|mut d| d.next().is_none()).unwrap_or(true)
}

#[tokio::test]
async fn an_uploaded_archive_is_served_by_the_registry_under_the_namespace() {
    let registry = TestRegistry::start();
    let (s, spool) = server(&registry, 1 << 30).await;
    let (archive, layer) = saved_image("127.0.0.1:5000/hello:v1", 300_000);

    let r = upload(&s, "default", "", archive.clone()).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["name"], "hello");
    assert_eq!(r.body["tag"], "v1");
    assert_eq!(r.body["image"], format!("{}/default/hello:v1", registry.addr));
    let digest = r.body["digest"].as_str().unwrap().to_string();
    assert!(digest.starts_with("sha256:"), "{digest}");
    assert!(spool_is_empty(&spool), "the spooled archive was left behind");

    // The registry serves the manifest by tag, with the digest the upload answered, and the
    // layer byte for byte.
    let (status, headers, body) =
        registry.get("/v2/default/hello/manifests/v1", "application/vnd.docker.distribution.manifest.v2+json").await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(headers["docker-content-digest"], digest.as_str());
    assert_eq!(sha256(&body), digest);
    let manifest: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(manifest["mediaType"], "application/vnd.docker.distribution.manifest.v2+json");
    assert_eq!(manifest["layers"][0]["digest"], sha256(&layer));
    assert_eq!(manifest["layers"][0]["mediaType"], "application/vnd.docker.image.rootfs.diff.tar");
    let (status, _, blob) = registry.get(&format!("/v2/default/hello/blobs/{}", sha256(&layer)), "*/*").await;
    assert_eq!(status, 200);
    assert_eq!(blob.as_ref(), layer.as_slice());

    // The same archive under another name and tag: the blobs are there already.
    let r = upload(&s, "default", "?name=again&tag=v2", archive).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["image"], format!("{}/default/again:v2", registry.addr));
    assert_eq!(r.body["digest"], digest.as_str());

    let list = get(&format!("{}/apis/stratus.dev/v1/namespaces/default/images", s.endpoint)).await;
    assert_eq!(list.status, 200, "{}", list.text);
    let items = list.body["items"].as_array().unwrap();
    let names: Vec<_> = items.iter().map(|i| format!("{}:{}", i["name"], i["tag"])).collect();
    assert_eq!(names, ["\"again\":\"v2\"", "\"hello\":\"v1\""]);
    assert!(items.iter().all(|i| i["digest"] == digest.as_str()));
    assert_eq!(items[1]["image"], format!("{}/default/hello:v1", registry.addr));

    // Another namespace lists none of them.
    let admin = stratus_client::Client::new(&s.endpoint).unwrap().with_token(&s.token);
    let mut ns = stratus_api::v1::Namespace::default();
    stratus_api::Resource::meta_mut(&mut ns).name = "other".into();
    admin.create(ns).await.unwrap();
    let list = get(&format!("{}/apis/stratus.dev/v1/namespaces/other/images", s.endpoint)).await;
    assert_eq!(list.status, 200, "{}", list.text);
    assert_eq!(list.body["items"], serde_json::json!([]));
}

#[tokio::test]
async fn broken_and_oversized_archives_fail_clearly_and_leave_nothing() {
    let registry = TestRegistry::start();
    let (archive, _) = saved_image("127.0.0.1:5000/broken:v1", 200_000);
    let (s, spool) = server(&registry, archive.len() as u64 + 100).await;

    let truncated = archive[..archive.len() / 2].to_vec();
    let r = upload(&s, "default", "", truncated).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(
        r.body["message"].as_str().unwrap().starts_with("the archive is truncated: it ends inside \"abc/layer.tar\""),
        "{}",
        r.text
    );

    let mut damaged = archive.clone();
    damaged[2000] ^= 0x20;
    let r = upload(&s, "default", "", damaged).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.body["message"].as_str().unwrap().contains("layer 1 has digest"), "{}", r.text);

    let r = upload(&s, "default", "", b"not an archive at all".repeat(100)).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.body["message"].as_str().unwrap().starts_with("the archive is not a tar file"), "{}", r.text);

    // Too large by its Content-Length: refused before a byte is read.
    let mut big = archive.clone();
    big.extend(vec![0u8; 4096]);
    let r = upload(&s, "default", "", big.clone()).await;
    assert_eq!(r.status, 413, "{}", r.text);
    assert!(r.body["message"].as_str().unwrap().contains("over the limit of"), "{}", r.text);

    // Too large without a length (streamed): refused once the limit is passed.
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http::<StreamBody<futures::stream::Iter<std::vec::IntoIter<Result<hyper::body::Frame<Bytes>, std::io::Error>>>>>();
    let frames: Vec<_> = big.chunks(8192).map(|c| Ok(hyper::body::Frame::data(Bytes::copy_from_slice(c)))).collect();
    let req = hyper::Request::post(format!("{}/apis/stratus.dev/v1/namespaces/default/images", s.endpoint))
        .header("authorization", format!("Bearer {}", s.token))
        .header("content-type", "application/x-tar")
        .body(StreamBody::new(futures::stream::iter(frames)))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    let text = String::from_utf8_lossy(&resp.into_body().collect().await.unwrap().to_bytes()).to_string();
    assert!(text.contains("larger than the limit"), "{text}");

    let r = request(
        "POST",
        &format!("{}/apis/stratus.dev/v1/namespaces/default/images", s.endpoint),
        Some(("application/octet-stream", archive.clone())),
    )
    .await;
    assert_eq!(r.status, 415, "{}", r.text);

    let r = upload(&s, "default", "?name=Not_Valid", archive.clone()).await;
    assert_eq!(r.status, 400, "{}", r.text);

    assert!(registry.catalog().await.is_empty(), "a failed upload left a repository: {:?}", registry.catalog().await);
    assert!(spool_is_empty(&spool), "a failed upload left files in the spool directory");

    // The archive itself was fine.
    let r = upload(&s, "default", "", archive).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(registry.catalog().await, ["default/broken"]);
}

#[tokio::test]
async fn only_those_who_may_create_services_in_the_namespace_upload() {
    let registry = TestRegistry::start();
    let (s, _spool) = server(&registry, 1 << 30).await;
    let admin = two_tenants(&s).await;
    create_user(&admin, "alice", "a", "").await;
    create_user(&admin, "bob", "b", "").await;
    create_user(&admin, "victor", "a", "").await;
    bind(&admin, "a-ns", roles::DEVELOPER, "alice").await;
    bind(&admin, "b-ns", roles::DEVELOPER, "bob").await;
    bind(&admin, "a-ns", roles::VIEWER, "victor").await;
    let (archive, _) = saved_image("app:v1", 1000);
    let url = format!("{}/apis/stratus.dev/v1/namespaces/a-ns/images", s.endpoint);

    // Another tenant's user: the namespace does not exist for it.
    let (_, bob) = user_client(&s, "bob").await;
    present(&bob);
    let r = upload(&s, "a-ns", "", archive.clone()).await;
    assert_eq!(r.status, 404, "{}", r.text);
    assert_eq!(get(&url).await.status, 404);

    // A viewer of the namespace lists its images but may not add one.
    let (_, victor) = user_client(&s, "victor").await;
    present(&victor);
    let r = upload(&s, "a-ns", "", archive.clone()).await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(get(&url).await.status, 200);
    assert!(registry.catalog().await.is_empty());

    let (_, alice) = user_client(&s, "alice").await;
    present(&alice);
    let r = upload(&s, "a-ns", "", archive).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["image"], format!("{}/a-ns/app:v1", registry.addr));
    assert_eq!(registry.catalog().await, ["a-ns/app"]);
    present("");
    assert_eq!(get(&url).await.status, 401);
}

#[tokio::test]
async fn without_a_registry_uploads_are_unavailable() {
    let s = start().await;
    let (archive, _) = saved_image("app:v1", 10);
    let r = upload(&s, "default", "", archive).await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert!(r.body["message"].as_str().unwrap().contains("--registry"), "{}", r.text);
}
