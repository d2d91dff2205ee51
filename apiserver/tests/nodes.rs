//! Nodes that prove who they are, on a real server over TLS: joining with a bootstrap token
//! (pinned CA, single use, expiry), the node's certificate as its identity (mutual TLS), the
//! node authorizer confining it to what runs on it, and renewing the certificate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use stratus_api::Resource;
use stratus_api::v1::{
    Container, EnvVar, EnvVarSource, Instance, InstanceSpec, Lease, Node, Secret, SecretKeySelector,
};
use stratus_api::wellknown::namespaces::NODE_LEASE;
use stratus_apiserver::Config;
use stratus_apiserver::testing::TestServer;
use stratus_auth::pki::{self, Usage};
use stratus_client::tls::ClientIdentity;
use stratus_client::{Client, Error, ListParams};

struct Cluster {
    s: TestServer,
    ca_pem: String,
    admin: Client,
}

async fn cluster() -> Cluster {
    let s = TestServer::start_tls(Config::default()).await;
    let ca_pem = s.ca.as_ref().unwrap().cert_pem().to_string();
    let admin = Client::with_ca(&s.endpoint, Some(ca_pem.as_bytes())).unwrap().with_token(&s.token);
    Cluster { s, ca_pem, admin }
}

impl Cluster {
    /// An anonymous client that trusts the CA (what a joining node has once it pinned it).
    fn anonymous(&self) -> Client {
        Client::with_ca(&self.s.endpoint, Some(self.ca_pem.as_bytes())).unwrap()
    }

    /// Joins node `name` with `token`: the client presenting its new certificate.
    async fn join(&self, name: &str, token: &str) -> Result<(Client, ClientIdentity, String), Error> {
        let (key, csr) = pki::client_request(&format!("system:node:{name}"), "system:nodes").unwrap();
        let issued = self.anonymous().node_certificate(name, &csr, Some(token)).await?;
        assert_eq!(issued.ca, self.ca_pem);
        let identity = ClientIdentity::new(issued.certificate.as_bytes(), key.as_bytes()).unwrap();
        let client = Client::with_identity(&self.s.endpoint, self.ca_pem.as_bytes(), &identity).unwrap();
        Ok((client, identity, issued.certificate))
    }

    async fn token(&self, uses: u32) -> String {
        self.admin.create_bootstrap_token(Some(Duration::from_secs(600)), uses, "test").await.unwrap().token
    }
}

fn instance(name: &str, node: &str, secret: &str) -> Instance {
    let env = EnvVar {
        name: "K".into(),
        value: String::new(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector { name: secret.into(), key: "k".into(), optional: None }),
        }),
    };
    let mut inst = Instance {
        spec: Some(InstanceSpec {
            node_name: node.into(),
            containers: vec![Container { image: "img".into(), env: vec![env], ..Default::default() }],
            ..Default::default()
        }),
        ..Default::default()
    };
    inst.meta_mut().name = name.into();
    inst.meta_mut().namespace = "default".into();
    inst
}

fn secret(name: &str) -> Secret {
    let mut s = Secret { data: [("k".to_string(), "v".to_string())].into(), ..Default::default() };
    s.meta_mut().name = name.into();
    s.meta_mut().namespace = "default".into();
    s
}

fn lease(node: &str) -> Lease {
    let mut l = Lease::default();
    l.meta_mut().name = node.into();
    l.meta_mut().namespace = NODE_LEASE.into();
    l.spec.get_or_insert_default().holder_identity = node.into();
    l
}

#[tokio::test]
async fn a_node_joins_with_a_pinned_ca_and_a_bootstrap_token_once() {
    let c = cluster().await;
    // Discovery: the CA is served to anyone and accepted only with its hash.
    let hash = pki::ca_cert_hash(&c.ca_pem).unwrap();
    assert_eq!(stratus_client::join::discover_ca(&c.s.endpoint, &hash).await.unwrap(), c.ca_pem);
    let other = pki::ca_cert_hash(pki::Ca::generate().unwrap().cert_pem()).unwrap();
    let refused = stratus_client::join::discover_ca(&c.s.endpoint, &other).await;
    assert!(matches!(&refused, Err(Error::Tls(m)) if m.contains("refusing to trust")), "{refused:?}");

    // Only a cluster admin makes bootstrap tokens; a node cannot.
    let token = c.token(1).await;
    assert!(token.len() == 23 && token.as_bytes()[6] == b'.', "{token}");
    let (n1, _, _) = c.join("n1", &token).await.unwrap();
    let refused = n1.create_bootstrap_token(None, 1, "").await;
    assert!(matches!(refused, Err(Error::Forbidden(_))), "{refused:?}");

    // Used up: a second join with it fails, and so does an expired token.
    let refused = c.join("n2", &token).await.map(|_| ());
    assert!(matches!(&refused, Err(Error::Unauthenticated(m)) if m.contains("used up")), "{refused:?}");
    let expiring = c.token(5).await;
    let key = format!("/bootstrap-tokens/{}", &expiring[..6]);
    let kv = c.s.store.get(&key).await.unwrap().unwrap();
    let mut stored: serde_json::Value = serde_json::from_slice(&kv.value).unwrap();
    stored["expires"] = 1.into();
    c.s.store.update(&key, serde_json::to_vec(&stored).unwrap().into(), kv.mod_revision).await.unwrap();
    let refused = c.join("n2", &expiring).await.map(|_| ());
    assert!(matches!(refused, Err(Error::Unauthenticated(_))), "{refused:?}");
    // A wrong secret for a real id, and a token that is not one.
    let good = c.token(1).await;
    let wrong = format!("{}.{}", &good[..6], "0000000000000000");
    assert!(matches!(c.join("n2", &wrong).await.map(|_| ()), Err(Error::Unauthenticated(_))));
    // The token is not spent by a request that is refused: a CSR for another name than the node.
    let (_, csr) = pki::client_request("system:node:other", "system:nodes").unwrap();
    let refused = c.anonymous().node_certificate("n2", &csr, Some(&good)).await;
    assert!(matches!(&refused, Err(Error::Invalid(m)) if m.contains("system:node:n2")), "{refused:?}");
    c.join("n2", &good).await.unwrap();

    // The store keeps only the secret's hash.
    let all = c.s.store.list("/bootstrap-tokens/", Default::default()).await.unwrap();
    for kv in all.items {
        let text = String::from_utf8_lossy(&kv.value);
        assert!(!text.contains(&expiring[7..]), "{text}");
    }
    // A bootstrap token opens nothing else.
    let refused = c.anonymous().with_token(&good).list::<Node>(&ListParams::default()).await;
    assert!(matches!(&refused, Err(Error::Unauthenticated(m)) if m.contains("bootstrap token")), "{refused:?}");
}

#[tokio::test]
async fn a_nodes_certificate_confines_it_to_its_own_node() {
    let c = cluster().await;
    for name in ["used-a", "used-b", "unused"] {
        c.admin.create(secret(name)).await.unwrap();
    }
    c.admin.create(instance("on-a", "a", "used-a")).await.unwrap();
    c.admin.create(instance("on-b", "b", "used-b")).await.unwrap();
    let token = c.token(2).await;
    let (a, _, _) = c.join("a", &token).await.unwrap();
    let (b, _, _) = c.join("b", &token).await.unwrap();

    // Who it is: the node, with the agent's role, by its certificate alone.
    let me = a.who_am_i().await.unwrap();
    assert_eq!(me.username, "system:node:a", "{me:?}");

    // Its own Node and Lease; not another's.
    let mut node = Node::default();
    node.meta_mut().name = "a".into();
    a.create(node).await.unwrap();
    let mut other = Node::default();
    other.meta_mut().name = "b".into();
    assert!(matches!(a.create(other).await, Err(Error::Forbidden(_))));
    a.create(lease("a")).await.unwrap();
    b.create(lease("b")).await.unwrap();
    let b_lease = b.get::<Lease>(NODE_LEASE, "b").await.unwrap();
    let refused = a.update(b_lease).await;
    assert!(matches!(refused, Err(Error::Forbidden(_))), "node a renewed b's lease: {refused:?}");

    // Only the Instances bound to it: another node's are not there for it.
    let listed = a.list::<Instance>(&ListParams::default()).await.unwrap();
    let names: Vec<_> = listed.items.iter().map(|i| i.meta().name.clone()).collect();
    assert_eq!(names, ["on-a"]);
    let on_b = c.admin.get::<Instance>("default", "on-b").await.unwrap();
    assert!(matches!(a.get::<Instance>("default", "on-b").await, Err(Error::NotFound(_))));
    let mut status = on_b.clone();
    status.status.get_or_insert_default().phase = "Running".into();
    let refused = a.update_status(status).await;
    assert!(matches!(refused, Err(Error::NotFound(_))), "node a wrote b's status: {refused:?}");
    // Its own: status and finalizers, never the spec.
    let mut on_a = a.get::<Instance>("default", "on-a").await.unwrap();
    on_a.status.get_or_insert_default().phase = "Running".into();
    let on_a = a.update_status(on_a).await.unwrap();
    let mut held = on_a.clone();
    held.meta_mut().finalizers.push("stratus.dev/agent".into());
    let held = a.update(held).await.unwrap();
    let mut changed = held.clone();
    changed.spec.as_mut().unwrap().containers[0].env[0].value_from = None;
    changed.spec.as_mut().unwrap().containers[0].image = "evil".into();
    let refused = a.update(changed).await;
    assert!(matches!(&refused, Err(Error::Forbidden(m)) if m.contains("only the finalizers")), "{refused:?}");

    // The Secrets its instances use, one at a time; not another node's, nor an unused one.
    assert_eq!(a.get::<Secret>("default", "used-a").await.unwrap().data["k"], "v");
    for name in ["used-b", "unused"] {
        let refused = a.get::<Secret>("default", name).await;
        assert!(matches!(refused, Err(Error::Forbidden(_))), "{name}: {refused:?}");
    }
    assert!(matches!(a.list::<Secret>(&ListParams::default()).await, Err(Error::Forbidden(_))));

    // A token, when sent, wins over the certificate.
    let as_admin = a.with_token(&c.s.token);
    assert_eq!(as_admin.who_am_i().await.unwrap().username, c.admin.who_am_i().await.unwrap().username);
}

#[tokio::test]
async fn a_certificate_that_names_no_node_is_refused_and_a_node_renews_only_its_own() {
    let c = cluster().await;
    let ca = c.s.ca.as_ref().unwrap();
    // Signed by the CA, but not a node's.
    let alice = ca.issue(Usage::Client, &["alice".into(), "admins".into()], Duration::from_secs(600)).unwrap();
    let identity = ClientIdentity::new(alice.cert_pem.as_bytes(), alice.key_pem.as_bytes()).unwrap();
    let client = Client::with_identity(&c.s.endpoint, c.ca_pem.as_bytes(), &identity).unwrap();
    let refused = client.list::<Node>(&ListParams::default()).await;
    assert!(matches!(&refused, Err(Error::Unauthenticated(m)) if m.contains("not a node's")), "{refused:?}");
    // Signed by another CA: the handshake itself fails.
    let stranger = pki::Ca::generate().unwrap();
    let forged = stranger
        .issue(Usage::Client, &["system:node:a".into(), "system:nodes".into()], Duration::from_secs(600))
        .unwrap();
    let identity = ClientIdentity::new(forged.cert_pem.as_bytes(), forged.key_pem.as_bytes()).unwrap();
    let client = Client::with_identity(&c.s.endpoint, c.ca_pem.as_bytes(), &identity).unwrap();
    assert!(client.list::<Node>(&ListParams::default()).await.is_err());
    // No credentials at all: 401 as before.
    assert!(matches!(c.anonymous().list::<Node>(&ListParams::default()).await, Err(Error::Unauthenticated(_))));

    // Renewal: with its certificate, for itself only; the new certificate is presented on the
    // next connection without a new client.
    let token = c.token(1).await;
    let (a, identity, first) = c.join("a", &token).await.unwrap();
    let (_, csr) = pki::client_request("system:node:b", "system:nodes").unwrap();
    let refused = a.node_certificate("b", &csr, None).await;
    assert!(matches!(refused, Err(Error::Forbidden(_))), "{refused:?}");
    let (key, csr) = pki::client_request("system:node:a", "system:nodes").unwrap();
    let renewed = a.node_certificate("a", &csr, None).await.unwrap();
    assert_ne!(renewed.certificate, first);
    identity.set(renewed.certificate.as_bytes(), key.as_bytes()).unwrap();
    let fresh = Client::with_identity(&c.s.endpoint, c.ca_pem.as_bytes(), &identity).unwrap();
    assert_eq!(fresh.who_am_i().await.unwrap().username, "system:node:a");
}
