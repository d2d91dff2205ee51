//! Image upload end to end: the example image saved with `docker save`, uploaded with
//! `stratus image push` into the cluster's registry (127.0.0.1:5000, as hack/images.sh runs
//! it), deployed by the name the upload answered, pulled by the node agent and answering
//! through the gateway.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use stratus_testkit::free_port;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_docker_save_archive_pushed_with_the_cli_is_deployed_and_answers() {
    let c = Cluster::start("images", Duration::from_secs(15)).await;
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("hello.tar");
    docker(&["save", "-o", archive.to_str().unwrap(), IMAGE]);
    // A name of its own per run: the registry outlives the test.
    let name = format!("uploaded-{}", free_port());

    let (code, out, err) =
        c.stratus(&["image", "push", archive.to_str().unwrap(), "--name", &name, "--tag", "v1"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let image = format!("127.0.0.1:5000/default/{name}:v1");
    assert!(out.starts_with(&format!("pushed {image} (sha256:")), "{out}");
    assert!(err.contains("sent ") && err.contains("(100%)"), "no progress on stderr: {err}");

    let (code, out, err) = c.stratus(&["image", "list"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.lines().any(|l| l.starts_with(&name) && l.contains(&image)), "{out}");

    // An IMAGE of the local engine instead of a file: `docker save` streamed, no length known.
    let (code, out, err) = c.stratus(&["image", "push", IMAGE, "--name", &name, "--tag", "v2"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with(&format!("pushed 127.0.0.1:5000/default/{name}:v2")), "{out}");

    let (code, out, err) = c.stratus(&["image", "push", "127.0.0.1:5000/no-such-image:v9"]).await;
    assert_ne!(code, 0, "{out}{err}");
    assert!(err.contains("docker save 127.0.0.1:5000/no-such-image:v9` failed"), "{err}");

    let manifest = hello("uploaded", "upload", "").replace(IMAGE, &image);
    assert!(manifest.contains(&image), "{manifest}");
    c.apply(&manifest).await;
    c.wait_ready("uploaded").await;
    let (code, body) = c.get(&host("uploaded"), "/").await;
    assert_eq!(code, 200, "{body}");
    assert!(body.starts_with("Hello upload!"), "{body}");
}
