//! Identity and authorisation end to end on a real server: every token the server must refuse
//! is refused on HTTP, gRPC and watches alike; tenants see nothing of each other; roles grant
//! what docs/api.md says and `can-i` agrees; components get narrow roles; keys rotate without
//! cutting off the tokens they signed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use futures::StreamExt;
use serde_json::{Value, json};
use stratus_api::Resource;
use stratus_api::identity::roles;
use stratus_api::v1::{
    Lease, Namespace, NamespaceSpec, RoleBinding, RoleBindingSpec, Service, ServiceAccount, Subject, Tenant, User,
    UserSpec,
};
use stratus_auth::{Claims, KeySet};
use stratus_client::{Client, Error, ListParams};

const API: &str = "/apis/stratus.dev/v1";

/// The claims of a token the server issued.
fn claims_of(token: &str) -> Claims {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// The server's own key set, read from its store.
async fn server_keys(s: &TestServer) -> KeySet {
    let kv = s.store.get("/stratus/signing-keys").await.unwrap().expect("the key set is stored");
    KeySet::from_json(&kv.value).unwrap()
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

/// Every token the server must refuse, by name.
async fn bad_tokens(s: &TestServer) -> Vec<(&'static str, String)> {
    let keys = server_keys(s).await;
    let good = claims_of(&s.token);
    let signed = |f: &dyn Fn(&mut Claims)| {
        let mut c = good.clone();
        f(&mut c);
        stratus_auth::sign(&keys, &c)
    };
    let now = good.iat;
    let payload = b64(&serde_json::to_value(&good).unwrap());
    let alg_none = format!("{}.{payload}.", b64(&json!({"alg": "none", "typ": "JWT"})));
    // HS256 with the server's public key as the HMAC secret: the classic algorithm confusion.
    let jwks = s.tokens.jwks();
    let public = URL_SAFE_NO_PAD.decode(jwks["keys"][0]["x"].as_str().unwrap()).unwrap();
    let kid = jwks["keys"][0]["kid"].as_str().unwrap().to_string();
    let hs_input = format!("{}.{payload}", b64(&json!({"alg": "HS256", "typ": "JWT", "kid": kid})));
    let mac = ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &public), hs_input.as_bytes());
    let hs256 = format!("{hs_input}.{}", URL_SAFE_NO_PAD.encode(mac.as_ref()));
    let unknown_kid = {
        let token = signed(&|_| {});
        let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
        parts[0] = b64(&json!({"alg": "EdDSA", "typ": "JWT", "kid": "no-such-key"}));
        parts.join(".")
    };
    let other_cluster = stratus_auth::sign(&KeySet::generate(now).unwrap(), &good);
    let tampered = {
        let token = signed(&|_| {});
        let parts: Vec<&str> = token.split('.').collect();
        let mut c = good.clone();
        c.sub = "admin".into();
        format!("{}.{}.{}", parts[0], b64(&serde_json::to_value(&c).unwrap()), parts[2])
    };
    vec![
        ("no token", String::new()),
        ("malformed", "not-a-jwt".into()),
        ("alg none", alg_none),
        ("HS256 with the public key", hs256),
        ("unknown kid", unknown_kid),
        ("another cluster's key", other_cluster),
        ("tampered payload", tampered),
        ("expired", signed(&|c| c.exp = now - 3600)),
        ("nbf in the future", signed(&|c| c.nbf = now + 3600)),
        ("wrong iss", signed(&|c| c.iss = "https://elsewhere".into())),
        ("wrong aud", signed(&|c| c.aud = "someone-else".into())),
    ]
}

#[tokio::test]
async fn every_bad_token_is_refused_on_http_grpc_and_watch() {
    let s = TestServer::start().await;
    // The genuine token works, so the refusals below are the tokens' doing.
    let admin = Client::new(&s.endpoint).unwrap().with_token(&s.token);
    admin.list::<Service>(&ListParams::default()).await.unwrap();
    for (case, token) in bad_tokens(&s).await {
        present(&token);
        for url in [
            format!("{}{API}/namespaces/default/services", s.endpoint),
            format!("{}{API}/services?watch=true", s.endpoint),
        ] {
            let r = get(&url).await;
            assert_eq!(r.status, 401, "{case}: {url}: {}", r.text);
            let challenge = r.headers.get("www-authenticate").map(|v| v.to_str().unwrap().to_string());
            assert!(challenge.as_deref().is_some_and(|c| c.starts_with("Bearer")), "{case}: {challenge:?}");
            assert_eq!(r.body["reason"], "Unauthorized", "{case}");
        }
        let c = Client::new(&s.endpoint).unwrap().with_token(&token);
        let listed = c.list::<Service>(&ListParams::default()).await;
        assert!(matches!(listed, Err(Error::Unauthenticated(_))), "{case}: {listed:?}");
        let watched = c.watch::<Service>(&ListParams::default(), "", false).await;
        assert!(matches!(watched, Err(Error::Unauthenticated(_))), "{case}: {:?}", watched.err());
        let who = c.who_am_i().await;
        assert!(matches!(who, Err(Error::Unauthenticated(_))), "{case}: {who:?}");
    }
    // The expired token's answer says what to do.
    present("");
    let r = get(&format!("{}{API}/services", s.endpoint)).await;
    assert!(r.body["message"].as_str().unwrap().contains("stratus login"), "{}", r.text);
}

#[tokio::test]
async fn tokens_signed_before_a_rotation_work_until_they_expire() {
    let s = TestServer::start().await;
    let before = s.token.clone();
    s.tokens.rotate().await.unwrap();
    let jwks = get(&format!("{}/.well-known/jwks.json", s.endpoint)).await;
    assert_eq!(jwks.body["keys"].as_array().map(Vec::len), Some(2), "{}", jwks.text);
    assert!(!jwks.text.contains("pkcs8") && !jwks.text.contains("\"d\""), "{}", jwks.text);
    let c = Client::new(&s.endpoint).unwrap().with_token(&before);
    assert_eq!(c.who_am_i().await.unwrap().username, "system:serviceaccount:stratus-system:test-admin");
    // New tokens carry the new key.
    let after = s
        .identity
        .issue_for_service_account("stratus-system", "test-admin", std::time::Duration::from_secs(60))
        .await
        .unwrap();
    let kid = |t: &str| -> String {
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(t.split('.').next().unwrap()).unwrap()).unwrap();
        header["kid"].as_str().unwrap().to_string()
    };
    assert_ne!(kid(&before), kid(&after.token));
    let discovery = get(&format!("{}/.well-known/openid-configuration", s.endpoint)).await;
    assert_eq!(discovery.body["id_token_signing_alg_values_supported"], json!(["EdDSA"]));
}

#[tokio::test]
async fn tenants_see_nothing_of_each_other() {
    let s = TestServer::start().await;
    let admin = two_tenants(&s).await;
    create_user(&admin, "alice", "a", "").await;
    create_user(&admin, "bob", "b", "").await;
    bind(&admin, "a-ns", roles::DEVELOPER, "alice").await;
    bind(&admin, "b-ns", roles::ADMIN, "bob").await;
    let (alice, alice_token) = user_client(&s, "alice").await;
    let (bob, _) = user_client(&s, "bob").await;
    let mut secret = Service::with_image("secret-b", "img");
    secret.meta_mut().namespace = "b-ns".into();
    bob.create(secret).await.unwrap();
    let mut mine = Service::with_image("mine", "img");
    mine.meta_mut().namespace = "a-ns".into();
    alice.create(mine.clone()).await.unwrap();

    // gRPC: every verb on b's objects answers as if they did not exist.
    let nf = |r: Result<_, Error>| matches!(r, Err(Error::NotFound(_)));
    assert!(nf(alice.get::<Service>("b-ns", "secret-b").await.map(|_| ())));
    assert!(nf(alice
        .list::<Service>(&ListParams { namespace: "b-ns".into(), ..Default::default() })
        .await
        .map(|_| ())));
    assert!(nf(alice
        .watch::<Service>(&ListParams { namespace: "b-ns".into(), ..Default::default() }, "", false)
        .await
        .map(|_| ())));
    let mut theirs = Service::with_image("intruder", "img");
    theirs.meta_mut().namespace = "b-ns".into();
    assert!(nf(alice.create(theirs.clone()).await.map(|_| ())));
    assert!(nf(alice.apply(theirs.clone()).await.map(|_| ())));
    assert!(nf(alice.delete::<Service>("b-ns", "secret-b").await.map(|_| ())));
    let mut stolen = bob.get::<Service>("b-ns", "secret-b").await.unwrap();
    stolen.meta_mut().labels.insert("x".into(), "y".into());
    assert!(nf(alice.update(stolen).await.map(|_| ())));
    assert!(nf(alice.logs("Service", "b-ns", "secret-b", false, None).await.map(|_| ())));
    assert!(nf(alice.get::<Namespace>("", "b-ns").await.map(|_| ())));
    assert!(nf(alice.get::<Tenant>("", "b").await.map(|_| ())));
    assert!(nf(alice.get::<User>("", "bob").await.map(|_| ())));
    assert!(nf(alice.get::<RoleBinding>("b-ns", "bob-admin").await.map(|_| ())));
    assert!(nf(alice
        .list::<ServiceAccount>(&ListParams { namespace: "b-ns".into(), ..Default::default() })
        .await
        .map(|_| ())));

    // HTTP: the same, and no answer names b's objects or counts them.
    present(&alice_token);
    for (method, path) in [
        ("GET", "/namespaces/b-ns/services/secret-b"),
        ("GET", "/namespaces/b-ns/services"),
        ("GET", "/namespaces/b-ns/services?watch=true"),
        ("DELETE", "/namespaces/b-ns/services/secret-b"),
        ("GET", "/namespaces/b-ns/services/secret-b/log"),
        ("GET", "/namespaces/b-ns/rolebindings"),
        ("GET", "/namespaces/b-ns"),
        ("GET", "/users/bob"),
        ("GET", "/tenants/b"),
    ] {
        let r = request(method, &format!("{}{API}{path}", s.endpoint), None).await;
        assert_eq!(r.status, 404, "{method} {path}: {}", r.text);
        assert!(!r.text.contains("bob-admin") && !r.text.contains("\"items\""), "{method} {path}: {}", r.text);
    }
    let patch = json!({"apiVersion": "stratus.dev/v1", "kind": "Service", "metadata": {"name": "secret-b", "labels": {"x": "y"}},
                       "spec": {"template": {"spec": {"containers": [{"image": "img"}]}}}});
    let r = send_json("PATCH", &format!("{}{API}/namespaces/b-ns/services/secret-b", s.endpoint), &patch).await;
    assert_eq!(r.status, 404, "{}", r.text);

    // -A lists only a's; every namespace list, only a's namespace.
    let all = alice.list::<Service>(&ListParams::default()).await.unwrap();
    let names: Vec<_> = all.items.iter().map(|s| format!("{}/{}", s.meta().namespace, s.meta().name)).collect();
    assert_eq!(names, ["a-ns/mine"]);
    let namespaces: Vec<_> = alice
        .list::<Namespace>(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|n| n.meta().name.clone())
        .collect();
    assert_eq!(namespaces, ["a-ns"]);
    let users: Vec<_> =
        alice.list::<User>(&ListParams::default()).await.unwrap().items.iter().map(|n| n.meta().name.clone()).collect();
    assert_eq!(users, ["alice"]);

    // A watch of every namespace never delivers b's events.
    let list = alice.list::<Service>(&ListParams::default()).await.unwrap();
    let mut w = alice.watch::<Service>(&ListParams::default(), &list.resource_version, false).await.unwrap();
    let mut more = Service::with_image("secret-b2", "img");
    more.meta_mut().namespace = "b-ns".into();
    bob.create(more).await.unwrap();
    mine.meta_mut().name = "mine2".into();
    alice.create(mine).await.unwrap();
    let ev = tokio::time::timeout(std::time::Duration::from_secs(10), w.next()).await.unwrap().unwrap().unwrap();
    assert!(matches!(&ev, stratus_client::WatchEvent::Added(s) if s.meta().name == "mine2"), "{ev:?}");
}

#[tokio::test]
async fn roles_grant_what_they_say_and_can_i_agrees() {
    let s = TestServer::start().await;
    let admin = two_tenants(&s).await;
    for (user, role) in [("vera", roles::VIEWER), ("dev", roles::DEVELOPER), ("ada", roles::ADMIN)] {
        create_user(&admin, user, "a", "").await;
        bind(&admin, "a-ns", role, user).await;
    }
    create_user(&admin, "tess", "a", roles::TENANT_ADMIN).await;
    let mut existing = Service::with_image("web", "img");
    existing.meta_mut().namespace = "a-ns".into();
    admin.create(existing).await.unwrap();

    // (user, verb, kind, may)
    let matrix = [
        ("vera", "get", "services", true),
        ("vera", "list", "services", true),
        ("vera", "create", "services", false),
        ("vera", "delete", "services", false),
        ("vera", "create", "rolebindings", false),
        ("dev", "create", "services", true),
        ("dev", "delete", "services", true),
        ("dev", "create", "rolebindings", false),
        ("dev", "create", "serviceaccounts", false),
        ("ada", "create", "rolebindings", true),
        ("ada", "create", "serviceaccounts", true),
        ("ada", "create", "namespaces", false),
        ("tess", "create", "namespaces", true),
        ("tess", "create", "users", true),
        ("tess", "create", "rolebindings", true),
        ("tess", "get", "nodes", false),
    ];
    for (user, verb, kind, may) in matrix {
        let (c, _) = user_client(&s, user).await;
        let answer = c.can_i(verb, kind, "a-ns", "").await.unwrap();
        assert_eq!(answer.allowed, may, "can-i: {user} {verb} {kind}: {}", answer.reason);
        // What the server does agrees.
        let did = attempt(&c, verb, kind, user).await;
        assert_eq!(did, may, "{user} {verb} {kind}");
    }
}

/// Tries `verb` on `kind` in `a-ns` and says whether the server let it through.
async fn attempt(c: &Client, verb: &str, kind: &str, user: &str) -> bool {
    let name = format!("{user}-{verb}-{kind}");
    let res: Result<(), Error> = match (verb, kind) {
        ("get", "services") => c.get::<Service>("a-ns", "web").await.map(|_| ()),
        ("list", "services") => {
            c.list::<Service>(&ListParams { namespace: "a-ns".into(), ..Default::default() }).await.map(|_| ())
        }
        ("create", "services") => {
            let mut svc = Service::with_image(&name, "img");
            svc.meta_mut().namespace = "a-ns".into();
            c.create(svc).await.map(|_| ())
        }
        ("delete", "services") => c.delete::<Service>("a-ns", "web").await.map(|_| ()),
        ("create", "rolebindings") => {
            let mut rb = RoleBinding {
                spec: Some(RoleBindingSpec {
                    role: "viewer".into(),
                    subjects: vec![Subject { kind: "User".into(), name: "vera".into(), namespace: String::new() }],
                }),
                ..Default::default()
            };
            rb.meta_mut().name = name;
            rb.meta_mut().namespace = "a-ns".into();
            c.create(rb).await.map(|_| ())
        }
        ("create", "serviceaccounts") => {
            let mut sa = ServiceAccount::default();
            sa.meta_mut().name = name;
            sa.meta_mut().namespace = "a-ns".into();
            c.create(sa).await.map(|_| ())
        }
        ("create", "namespaces") => {
            let mut ns = Namespace::default();
            ns.meta_mut().name = name;
            c.create(ns).await.map(|_| ())
        }
        ("create", "users") => {
            let mut u =
                User { spec: Some(UserSpec { tenant: "a".into(), ..Default::default() }), ..Default::default() };
            u.meta_mut().name = name;
            c.create(u).await.map(|_| ())
        }
        ("get", "nodes") => match c.get::<stratus_api::v1::Node>("", "n1").await {
            Err(Error::NotFound(_)) => Ok(()),
            other => other.map(|_| ()),
        },
        other => panic!("no attempt for {other:?}"),
    };
    match res {
        Ok(()) => true,
        Err(Error::Forbidden(_)) | Err(Error::NotFound(_)) => false,
        Err(e) => panic!("{user} {verb} {kind}: {e}"),
    }
}

#[tokio::test]
async fn components_hold_narrow_roles() {
    let s = TestServer::start().await;
    let admin = Client::new(&s.endpoint).unwrap().with_token(&s.token);
    let agent_token = s.identity.component_token("node-n1", roles::SYSTEM_AGENT, "n1").await.unwrap()();
    let agent = Client::new(&s.endpoint).unwrap().with_token(&agent_token);
    let forbidden = |r: Result<(), Error>| matches!(r, Err(Error::Forbidden(_)));
    assert!(forbidden(agent.create(Service::with_image("evil", "img")).await.map(|_| ())));
    let lease = |node: &str| {
        let mut l = Lease::default();
        l.meta_mut().name = node.into();
        l.meta_mut().namespace = stratus_api::wellknown::namespaces::NODE_LEASE.into();
        l
    };
    agent.create(lease("n1")).await.unwrap();
    assert!(forbidden(agent.create(lease("n2")).await.map(|_| ())));
    admin.create(lease("n2")).await.unwrap();
    let mut other = admin.get::<Lease>(stratus_api::wellknown::namespaces::NODE_LEASE, "n2").await.unwrap();
    other.meta_mut().labels.insert("hijacked".into(), "yes".into());
    assert!(forbidden(agent.update(other).await.map(|_| ())));
    let mut user = User::default();
    user.meta_mut().name = "mallory".into();
    assert!(forbidden(agent.create(user).await.map(|_| ())));

    let gateway_token = s.identity.component_token("gateway", roles::SYSTEM_GATEWAY, "").await.unwrap()();
    let gateway = Client::new(&s.endpoint).unwrap().with_token(&gateway_token);
    gateway.list::<Service>(&ListParams::default()).await.unwrap();
    assert!(forbidden(gateway.create(Service::with_image("evil", "img")).await.map(|_| ())));
    assert!(forbidden(gateway.delete::<Lease>(stratus_api::wellknown::namespaces::NODE_LEASE, "n1").await.map(|_| ())));
    assert!(forbidden(gateway.create(lease("n3")).await.map(|_| ())));
}

#[tokio::test]
async fn failed_logins_are_limited_and_passwords_never_come_back() {
    let s = TestServer::start().await;
    let admin = Client::new(&s.endpoint).unwrap().with_token(&s.token);
    create_user(&admin, "carol", "default", "").await;
    for _ in 0..stratus_apiserver::auth::service::LOGIN_FAILURES {
        let r = login(&s, "carol", "wrong-password").await;
        assert_eq!(r.status, 400, "{}", r.text);
        assert_eq!(r.body["error"], "invalid_grant");
    }
    let r = login(&s, "carol", "carol-password").await;
    assert_eq!(r.status, 429, "{}", r.text);
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // Unknown users get the same answer as a wrong password.
    let r = login(&s, "nobody", "whatever-password").await;
    assert_eq!((r.status, r.body["error"].clone()), (400, json!("invalid_grant")), "{}", r.text);

    present(&s.token);
    for url in [format!("{}{API}/users/carol", s.endpoint), format!("{}{API}/users", s.endpoint)] {
        let r = get(&url).await;
        assert_eq!(r.status, 200);
        assert!(!r.text.contains("argon2") && !r.text.contains("passwordHash"), "{}", r.text);
    }
    // A client may not plant a hash of its own.
    let r = send_json(
        "POST",
        &format!("{}{API}/users", s.endpoint),
        &json!({"apiVersion": "stratus.dev/v1", "kind": "User", "metadata": {"name": "eve"},
                "spec": {"tenant": "default", "passwordHash": "$argon2id$v=19$m=19456,t=2,p=1$x$y"}}),
    )
    .await;
    assert_eq!((r.status, r.body["reason"].clone()), (422, json!("Invalid")), "{}", r.text);
    // The password still works after an update that does not touch it.
    let mut carol = admin.get::<User>("", "carol").await.unwrap();
    carol.spec.as_mut().unwrap().display_name = "Carol".into();
    admin.update(carol).await.unwrap();
    let c = Client::new(&s.endpoint).unwrap();
    // The limit was per user: a fresh user logs in at once; carol after the window.
    create_user(&admin, "dave", "default", "").await;
    c.login("dave", "dave-password").await.unwrap();
}

#[tokio::test]
async fn a_deleted_user_s_token_stops_working() {
    let s = TestServer::start().await;
    let admin = Client::new(&s.endpoint).unwrap().with_token(&s.token);
    create_user(&admin, "erin", "default", "").await;
    let (erin, _) = user_client(&s, "erin").await;
    assert_eq!(erin.who_am_i().await.unwrap().username, "erin");
    admin.delete::<User>("", "erin").await.unwrap();
    assert!(matches!(erin.who_am_i().await, Err(Error::Unauthenticated(_))));
    // Made again under the same name, the old token still does not speak for it.
    create_user(&admin, "erin", "default", "").await;
    assert!(matches!(erin.who_am_i().await, Err(Error::Unauthenticated(_))));
}

#[tokio::test]
async fn a_browser_cannot_be_turned_against_the_api() {
    let s = start().await;
    let url = format!("{}{API}/namespaces/default/services", s.endpoint);
    let body = serde_json::to_vec(&hello("from-a-page")).unwrap();
    // A cross-site "simple" request: text/plain needs no preflight, so it must fail on its own.
    let r = request_with("POST", &url, &[], Some(("text/plain", body.clone()))).await;
    assert_eq!(r.status, 415, "{}", r.text);
    let r = request_with("POST", &url, &[("origin", "https://evil.example")], Some(("application/json", body.clone())))
        .await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert!(r.headers.get("access-control-allow-origin").is_none());
    // DNS rebinding: the page's own name, resolved to loopback.
    let r = request_with("GET", &url, &[("host", "evil.example:7070")], None).await;
    assert_eq!(r.status, 421, "{}", r.text);
    // None of it was stored.
    assert!(!get(&url).await.text.contains("from-a-page"));
    // The API's own origin (its console) is answered, with CORS headers.
    let own = s.endpoint.clone();
    let r = request_with("OPTIONS", &url, &[("origin", &own), ("access-control-request-method", "POST")], None).await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(r.headers["access-control-allow-origin"], own.as_str());
    let r = request_with("POST", &url, &[("origin", &own)], Some(("application/json", body))).await;
    assert_eq!(r.status, 201, "{}", r.text);
}

#[tokio::test]
async fn every_write_and_every_refusal_is_audited_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let config = stratus_apiserver::Config {
        audit: Some(stratus_apiserver::audit::AuditConfig::new(&log)),
        ..Default::default()
    };
    let s = TestServer::start_config(config).await;
    let admin = Client::new(&s.endpoint).unwrap().with_token(&s.token);
    // A scripted sequence: make a tenant's user, who logs in, deploys, changes and deletes.
    let _ = two_tenants(&s).await;
    create_user(&admin, "fay", "a", "").await;
    bind(&admin, "a-ns", roles::DEVELOPER, "fay").await;
    let (fay, _) = user_client(&s, "fay").await;
    let mut svc = Service::with_image("web", "img");
    svc.meta_mut().namespace = "a-ns".into();
    fay.create(svc.clone()).await.unwrap();
    fay.apply(svc).await.unwrap();
    fay.delete::<Service>("a-ns", "web").await.unwrap();
    let _ = fay.get::<Service>("b-ns", "anything").await;
    let _ = Client::new(&s.endpoint).unwrap().with_token("garbage").list::<Service>(&ListParams::default()).await;

    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let has = |user: &str, verb: &str, kind: &str, name: &str, code: u64| {
        lines.iter().any(|l| {
            l["user"] == user && l["verb"] == verb && l["kind"] == kind && l["name"] == name && l["code"] == code
        })
    };
    let admin_user = "system:serviceaccount:stratus-system:test-admin";
    assert!(has(admin_user, "create", "tenants", "a", 201), "{text}");
    assert!(has(admin_user, "create", "namespaces", "a-ns", 201), "{text}");
    assert!(has(admin_user, "create", "users", "fay", 201), "{text}");
    assert!(has(admin_user, "create", "rolebindings", "fay-developer", 201), "{text}");
    assert!(has("fay", "create", "services", "web", 201), "{text}");
    assert!(has("fay", "patch", "services", "web", 200), "{text}");
    assert!(has("fay", "delete", "services", "web", 200), "{text}");
    assert!(has("fay", "get", "services", "anything", 404), "{text}");
    assert!(lines.iter().any(|l| l["user"] == "system:anonymous" && l["code"] == 401), "{text}");
    for l in &lines {
        for key in ["time", "requestId", "client"] {
            assert!(l[key].as_str().is_some_and(|v| !v.is_empty()) || l["protocol"] == "internal", "{key}: {l}");
        }
    }
    assert!(!text.contains("fay-password") && !text.contains("argon2") && !text.contains("garbage"), "{text}");
}

#[tokio::test]
async fn scaling_past_the_clusters_bounds_is_refused_naming_the_field() {
    let s = start().await;
    let url = format!("{}{API}/namespaces/default/services", s.endpoint);
    let mut svc = hello("greedy");
    svc["spec"]["template"]["spec"]["scaling"] = json!({"minInstances": 1000, "maxInstances": 5000});
    let r = send_json("POST", &url, &svc).await;
    assert_eq!(r.status, 422, "{}", r.text);
    let fields: Vec<_> = r.body["details"]["causes"].as_array().unwrap().iter().map(|c| c["field"].clone()).collect();
    assert_eq!(
        fields,
        [json!("spec.template.spec.scaling.minInstances"), json!("spec.template.spec.scaling.maxInstances")]
    );
    assert!(!get(&url).await.text.contains("greedy"));
    // Knative's annotations are held to the same bounds.
    let mut knative = hello("greedy-too");
    knative["spec"]["template"]["metadata"] = json!({"annotations": {"autoscaling.knative.dev/max-scale": "5000"}});
    let r = send_json("POST", &url, &knative).await;
    assert_eq!(r.status, 422, "{}", r.text);
}

#[tokio::test]
async fn no_one_grows_past_their_tenant_or_their_namespace() {
    let s = TestServer::start().await;
    let admin = two_tenants(&s).await;
    create_user(&admin, "tess", "a", roles::TENANT_ADMIN).await;
    create_user(&admin, "ada", "a", "").await;
    bind(&admin, "a-ns", roles::ADMIN, "ada").await;
    let (tess, _) = user_client(&s, "tess").await;
    let (ada, _) = user_client(&s, "ada").await;
    let account = |role: &str| {
        let mut sa = ServiceAccount {
            spec: Some(stratus_api::v1::ServiceAccountSpec { cluster_role: role.into(), ..Default::default() }),
            ..Default::default()
        };
        sa.meta_mut().name = format!("sa-{}", role.replace(':', "-"));
        sa.meta_mut().namespace = "a-ns".into();
        sa
    };
    // A namespace admin makes no account with a role beyond the namespace, nor takes its token.
    let refused = ada.create(account(roles::TENANT_ADMIN)).await;
    assert!(matches!(refused, Err(Error::Forbidden(_))), "{refused:?}");
    tess.create(account(roles::TENANT_ADMIN)).await.unwrap();
    let refused = ada.create_token("a-ns", "sa-tenant-admin", None).await;
    assert!(matches!(refused, Err(Error::Forbidden(_))), "{refused:?}");
    // A tenant admin makes tenant admins, never more.
    let refused = tess.create(account(roles::CLUSTER_ADMIN)).await;
    assert!(matches!(refused, Err(Error::Forbidden(_))), "{refused:?}");
    let token = tess.create_token("a-ns", "sa-tenant-admin", None).await.unwrap().access_token;
    // A namespace stays in its tenant: moving it would hand its accounts the other tenant.
    let mut ns = tess.get::<Namespace>("", "a-ns").await.unwrap();
    ns.spec = Some(NamespaceSpec { tenant: "b".into() });
    let refused = tess.update(ns).await;
    assert!(matches!(&refused, Err(Error::Invalid(m)) if m.contains("spec.tenant")), "{refused:?}");
    let sa = Client::new(&s.endpoint).unwrap().with_token(&token);
    assert_eq!(sa.who_am_i().await.unwrap().tenant, "a");
    assert!(matches!(sa.get::<Namespace>("", "b-ns").await, Err(Error::NotFound(_))));
}

#[tokio::test]
async fn continue_tokens_name_only_what_the_caller_was_shown() {
    let s = TestServer::start().await;
    let admin = two_tenants(&s).await;
    create_user(&admin, "alice", "a", "").await;
    bind(&admin, "a-ns", roles::VIEWER, "alice").await;
    for (ns, name) in [("a-ns", "a1"), ("b-ns", "payroll"), ("a-ns", "z9")] {
        let mut svc = Service::with_image(name, "img");
        svc.meta_mut().namespace = ns.into();
        admin.create(svc).await.unwrap();
    }
    let (_, token) = user_client(&s, "alice").await;
    present(&token);
    let page = get(&format!("{}{API}/services?limit=1", s.endpoint)).await;
    assert_eq!(page.status, 200, "{}", page.text);
    let next = page.body["metadata"]["continue"].as_str().unwrap_or_default().to_string();
    assert!(!next.is_empty() && !next.contains("payroll") && !next.contains("b-ns"), "{next}");
    let rest = get(&format!("{}{API}/services?limit=1&continue={next}", s.endpoint)).await;
    let names: Vec<_> = rest.body["items"].as_array().unwrap().iter().map(|i| i["metadata"]["name"].clone()).collect();
    assert_eq!(names, [json!("z9")], "{}", rest.text);
}
