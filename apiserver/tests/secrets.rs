//! Secrets on a real server: encrypted in every file of the data directory, absent from the
//! audit log, kept readable through a key rotation, read by developers and not by viewers,
//! hidden from other tenants, given to a node's agent only for its own instances, and
//! validated before they are stored.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::sync::Arc;

use common::*;
use serde_json::json;
use stratus_api::Resource;
use stratus_api::identity::roles;
use stratus_api::v1::{Container, EnvVar, EnvVarSource, Instance, InstanceSpec, Secret, SecretKeySelector, Service};
use stratus_apiserver::encryption::{self, Keys};
use stratus_apiserver::{ApiServer, Config, auth::Caller};
use stratus_client::{Client, Error, ListParams};

const API: &str = "/apis/stratus.dev/v1";

/// A value no other byte sequence of the server's files could contain by chance.
const VALUE: &str = "s3cr3t-7f1e9c2a-d4b8";

fn secret(namespace: &str, name: &str, data: &[(&str, &str)]) -> Secret {
    let mut s =
        Secret { data: data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), ..Default::default() };
    s.meta_mut().name = name.into();
    s.meta_mut().namespace = namespace.into();
    s
}

/// The files under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    let mut scanned = 0;
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                scanned += 1;
                let bytes = std::fs::read(&path).unwrap();
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    found.push(path.display().to_string());
                }
            }
        }
    }
    assert!(scanned > 0, "no file under {}", dir.display());
    found
}

#[tokio::test]
async fn a_secret_value_is_in_no_file_of_the_data_directory_nor_in_the_audit_log() {
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("audit.log");
    let config = Config { audit: Some(stratus_apiserver::audit::AuditConfig::new(&log)), ..Default::default() };
    let s = TestServer::start_config(config).await;
    present(&s.token);
    let base = format!("{}{API}/namespaces/default", s.endpoint);
    // Created, replaced and applied over HTTP, and applied over gRPC: every way a value arrives.
    let body = json!({"apiVersion": "stratus.dev/v1", "kind": "Secret", "metadata": {"name": "db"},
                      "data": {"password": VALUE}});
    let r = send_json("POST", &format!("{base}/secrets"), &body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let mut changed = r.body.clone();
    changed["data"]["password"] = json!(format!("{VALUE}-2"));
    let r = send_json("PUT", &format!("{base}/secrets/db"), &changed).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let applied =
        format!("apiVersion: stratus.dev/v1\nkind: Secret\nmetadata: {{name: api}}\ndata: {{token: {VALUE}-3}}\n");
    let r = send_yaml("PATCH", &format!("{base}/secrets/api"), &applied).await;
    assert!(matches!(r.status, 200 | 201), "{}", r.text);
    let admin = Client::new(&s.endpoint).unwrap().with_token(&s.token);
    admin.apply(secret("default", "grpc", &[("k", &format!("{VALUE}-4"))])).await.unwrap();
    // What goes in comes back to those who may read it.
    let got = admin.get::<Secret>("default", "db").await.unwrap();
    assert_eq!(got.data["password"], format!("{VALUE}-2"));
    assert_eq!(got.r#type, "Opaque");

    // A value of another kind is found in clear by the same scan: the scan can see.
    let mut svc = Service::with_image("plain", "img");
    let env = EnvVar { name: "MARKER".into(), value: "plain-7f1e9c2a-marker".into(), value_from: None };
    svc.spec.as_mut().unwrap().template.as_mut().unwrap().spec.as_mut().unwrap().containers[0].env = vec![env];
    admin.create(svc).await.unwrap();
    let data = s.dir.join("data");
    assert!(!files_containing(&data, b"plain-7f1e9c2a-marker").is_empty());

    for needle in [VALUE.as_bytes(), b"7f1e9c2a-d4b8"] {
        assert_eq!(files_containing(&data, needle), Vec::<String>::new(), "a secret value is stored in clear");
        assert_eq!(files_containing(logs.path(), needle), Vec::<String>::new(), "a secret value is in the audit log");
    }
    // The audit log did record the writes, by name only.
    let audit = std::fs::read_to_string(&log).unwrap();
    assert!(audit.lines().filter(|l| l.contains("\"kind\":\"secrets\"")).count() >= 4, "{audit}");
    // Stored, a Secret is sealed under the primary key and names it.
    let kv = s.store.get("/registry/secrets/default/db").await.unwrap().unwrap();
    assert_eq!(encryption::key_name(&kv.value), Some("key1"));
}

#[tokio::test]
async fn a_rotated_key_keeps_every_secret_readable() {
    let dir = tempfile::tempdir().unwrap();
    let store =
        stratus_apiserver::open_store(&stratus_apiserver::StoreOptions::Embedded { data_dir: dir.path().join("data") })
            .await
            .unwrap();
    let key_file = dir.path().join("data/encryption-key");
    let start = async |keys: Keys| {
        let config = Config { encryption: Some(Arc::new(keys)), ..Default::default() };
        ApiServer::with_config(store.clone(), config).await
    };
    let system = Caller::system();
    let names = ["db", "api", "mail"];
    let old = start(Keys::load_or_create(&key_file).unwrap()).await.unwrap();
    for name in names {
        old.registry()
            .create(&system, secret("default", name, &[("v", &format!("{name}-{VALUE}"))]).into_any())
            .await
            .unwrap();
    }
    let stored_under = async |name: &str| {
        let kv = store.get(&format!("/registry/secrets/default/{name}")).await.unwrap().unwrap();
        encryption::key_name(&kv.value).map(str::to_string)
    };
    assert_eq!(stored_under("db").await.as_deref(), Some("key1"));

    // A new primary, the old key kept for reading: the server re-encrypts as it starts.
    assert_eq!(encryption::rotate_file(&key_file).unwrap(), "key2");
    let rotated = start(Keys::load(&key_file).unwrap()).await.unwrap();
    for name in names {
        assert_eq!(stored_under(name).await.as_deref(), Some("key2"), "{name}");
    }
    assert_eq!(rotated.registry().reencrypt_secrets().await.unwrap(), 0, "a second pass has nothing to do");

    // The old key removed from the file: every secret still reads.
    let text = std::fs::read_to_string(&key_file).unwrap();
    let mut file: serde_json::Value = yaml_serde::from_str(&text).unwrap();
    file["keys"].as_array_mut().unwrap().truncate(1);
    std::fs::write(&key_file, yaml_serde::to_string(&file).unwrap()).unwrap();
    let keys = Keys::load(&key_file).unwrap();
    assert_eq!(keys.names(), ["key2"]);
    let new = start(keys).await.unwrap();
    for name in names {
        let got = new.registry().get(&system, "Secret", "default", name).await.unwrap();
        let stratus_api::AnyObject::Secret(got) = got else { panic!("{got:?}") };
        assert_eq!(got.data["v"], format!("{name}-{VALUE}"));
    }

    // With only the old key, nothing reads any more: the key truly changed.
    let stale = Keys::generate("key1").unwrap();
    let refused = start(stale).await;
    let e = refused.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        e.contains("re-encrypting secrets") && e.contains("\"key2\", which is not in the encryption key file"),
        "{e}"
    );
}

#[tokio::test]
async fn viewers_read_no_secret_and_other_tenants_do_not_see_one() {
    let s = TestServer::start().await;
    let admin = two_tenants(&s).await;
    for (user, tenant, role) in
        [("dev", "a", roles::DEVELOPER), ("val", "a", roles::VIEWER), ("bob", "b", roles::ADMIN)]
    {
        create_user(&admin, user, tenant, "").await;
        bind(&admin, &format!("{tenant}-ns"), role, user).await;
    }
    let (dev, _) = user_client(&s, "dev").await;
    let (val, val_token) = user_client(&s, "val").await;
    let (bob, _) = user_client(&s, "bob").await;
    dev.create(secret("a-ns", "db", &[("password", VALUE)])).await.unwrap();
    assert_eq!(dev.get::<Secret>("a-ns", "db").await.unwrap().data["password"], VALUE);

    let forbidden = |r: Result<(), Error>| matches!(r, Err(Error::Forbidden(_)));
    let in_a = ListParams { namespace: "a-ns".into(), ..Default::default() };
    assert!(forbidden(val.get::<Secret>("a-ns", "db").await.map(|_| ())));
    assert!(forbidden(val.list::<Secret>(&in_a).await.map(|_| ())));
    assert!(forbidden(val.watch::<Secret>(&in_a, "", false).await.map(|_| ())));
    assert!(forbidden(val.create(secret("a-ns", "mine", &[])).await.map(|_| ())));
    // Across namespaces a viewer's list is filtered to nothing.
    assert!(val.list::<Secret>(&ListParams::default()).await.unwrap().items.is_empty());
    // The viewer still reads what viewers read.
    assert!(val.list::<Service>(&in_a).await.is_ok());
    present(&val_token);
    let r = get(&format!("{}{API}/namespaces/a-ns/secrets/db", s.endpoint)).await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert!(!r.text.contains(VALUE));

    // Another tenant's admin: as if it did not exist.
    let not_found = |r: Result<(), Error>| matches!(r, Err(Error::NotFound(_)));
    assert!(not_found(bob.get::<Secret>("a-ns", "db").await.map(|_| ())));
    assert!(not_found(bob.delete::<Secret>("a-ns", "db").await.map(|_| ())));
    assert!(bob.list::<Secret>(&ListParams::default()).await.unwrap().items.is_empty());
}

#[tokio::test]
async fn an_agent_reads_only_the_secrets_of_its_own_instances() {
    let s = TestServer::start().await;
    let admin = Client::new(&s.endpoint).unwrap().with_token(&s.token);
    for name in ["used", "unused"] {
        admin.create(secret("default", name, &[("k", VALUE)])).await.unwrap();
    }
    let from = |name: &str| EnvVar {
        name: "K".into(),
        value: String::new(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector { name: name.into(), key: "k".into(), optional: None }),
        }),
    };
    let mut inst = Instance {
        spec: Some(InstanceSpec {
            node_name: "n1".into(),
            containers: vec![Container { image: "img".into(), env: vec![from("used")], ..Default::default() }],
            ..Default::default()
        }),
        ..Default::default()
    };
    inst.meta_mut().name = "i1".into();
    admin.create(inst.clone()).await.unwrap();
    // The Instance carries the reference, never the value.
    let stored = admin.get::<Instance>("default", "i1").await.unwrap();
    assert!(!format!("{stored:?}").contains(VALUE));

    let agent = async |node: &str| {
        let token = s.identity.component_token(&format!("agent-{node}"), roles::SYSTEM_AGENT, node).await.unwrap();
        Client::new(&s.endpoint).unwrap().with_token(&token())
    };
    let n1 = agent("n1").await;
    assert_eq!(n1.get::<Secret>("default", "used").await.unwrap().data["k"], VALUE);
    let refused = n1.get::<Secret>("default", "unused").await;
    assert!(matches!(refused, Err(Error::Forbidden(_))), "{refused:?}");
    let refused = n1.list::<Secret>(&ListParams::default()).await;
    assert!(matches!(refused, Err(Error::Forbidden(_))), "{refused:?}");
    let n2 = agent("n2").await;
    let refused = n2.get::<Secret>("default", "used").await;
    assert!(matches!(refused, Err(Error::Forbidden(_))), "{refused:?}");
}

#[tokio::test]
async fn bad_secrets_and_bad_references_are_refused_naming_the_field() {
    let s = start().await;
    let url = format!("{}{API}/namespaces/default/secrets", s.endpoint);
    let r = send_json(
        "POST",
        &url,
        &json!({"apiVersion": "stratus.dev/v1", "kind": "Secret", "metadata": {"name": "bad"}, "data": {"a/b": "v", "..": "v"}}),
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.text.contains("data[\\\"a/b\\\"]") && r.text.contains("data[\\\"..\\\"]"), "{}", r.text);
    // Past the body limit over HTTP; past the Secret's own limit over gRPC.
    let big = "v".repeat(stratus_api::validation::MAX_SECRET_BYTES + 1);
    let r = send_json(
        "POST",
        &url,
        &json!({"apiVersion": "stratus.dev/v1", "kind": "Secret", "metadata": {"name": "big"}, "data": {"k": big}}),
    )
    .await;
    assert_eq!(r.status, 413, "{}", r.text);
    let admin = Client::new(&s.endpoint).unwrap().with_token(&s.token);
    let refused = admin.create(secret("default", "big", &[("k", &big)])).await;
    assert!(matches!(&refused, Err(Error::Invalid(m)) if m.contains("data: takes 1048578 bytes")), "{refused:?}");

    let mut svc = common::hello("both");
    svc["spec"]["template"]["spec"]["containers"][0]["env"] =
        json!([{"name": "A", "value": "x", "valueFrom": {"secretKeyRef": {"name": "db", "key": "k"}}}]);
    let r = send_json("POST", &format!("{}{API}/namespaces/default/services", s.endpoint), &svc).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.text.contains("spec.template.spec.containers[0].env[0].valueFrom"), "{}", r.text);
}
