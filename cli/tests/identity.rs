//! Identity end to end, in process, against a real API server: logging in and out, the token
//! kept in the config file or given as STRATUS_TOKEN, whoami, can-i, and what a tenant's user
//! may see once an admin has made the tenant, the user and a role binding.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Output, Stratus, TestServer, service};
use serde_json::Value;
use stratus_cli::config::Config;

/// A server and a CLI presenting its cluster-admin token.
async fn setup() -> (TestServer, Stratus) {
    let server = TestServer::start().await;
    let admin = Stratus::admin(&server);
    (server, admin)
}

/// The name of the context a login to `server` makes: its host and port.
fn context_name(server: &TestServer) -> String {
    server.endpoint.trim_start_matches("http://").to_string()
}

/// Has the admin make the user `name` of `tenant` with `password`.
async fn make_user(admin: &Stratus, name: &str, tenant: &str, password: &str) {
    let out = admin.run_with_stdin(&["create", "user", name, "--tenant", tenant, "--password-stdin"], password).await;
    assert_eq!(out.ok(), format!("user/{name} created\n"));
}

/// A CLI of its own (no token, its own config file) logged in as `name`.
async fn logged_in(server: &TestServer, name: &str, password: &str) -> Stratus {
    let cli = Stratus::new(&server.endpoint);
    cli.run_with_stdin(&["login", "-u", name, "--password-stdin"], password).await.ok();
    cli
}

/// The rows of a table, split into words.
fn rows(out: &str) -> Vec<Vec<String>> {
    out.lines().map(|l| l.split_whitespace().map(str::to_string).collect()).collect()
}

#[tokio::test]
async fn without_a_token_or_with_a_bad_one_the_error_is_one_line_that_says_to_log_in() {
    let server = TestServer::start().await;
    let cli = Stratus::new(&server.endpoint);
    let out = cli.run(&["get", "svc"]).await;
    assert_eq!(out.failed(), "error: not logged in or the token has expired (no credentials): run `stratus login`\n");
    assert_eq!(out.out, "");

    let cli = cli.with_token(Some("not-a-token"));
    let out = cli.run(&["get", "svc"]).await;
    let err = out.failed();
    assert!(err.starts_with("error: not logged in or the token has expired (the token is malformed"), "{err}");
    assert!(err.ends_with("): run `stratus login`\n"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    // Several objects: the first refusal ends the command, rather than one line per object.
    let two = format!("{}---\n{}", service("a", "x"), service("b", "x"));
    let out = cli.run_with_stdin(&["apply", "-f", "-"], &two).await;
    assert_eq!(out.failed().lines().count(), 1, "{}", out.err);
    assert!(out.err.ends_with("run `stratus login`\n"), "{}", out.err);
}

#[tokio::test]
async fn a_wrong_password_writes_nothing_and_the_right_one_keeps_the_token_in_a_context() {
    let (server, admin) = setup().await;
    make_user(&admin, "alice", "default", "correct horse\n").await;
    let alice = Stratus::new(&server.endpoint);

    let out = alice.run_with_stdin(&["login", "--username", "alice", "--password-stdin"], "wrong horse\n").await;
    assert_eq!(out.failed(), "error: login failed: invalid username or password\n");
    assert_eq!(out.out, "");
    assert!(!alice.config_path().exists(), "a failed login wrote the config file");

    let out = alice.run_with_stdin(&["login", "--username", "alice", "--password-stdin"], "correct horse\n").await;
    assert_eq!(
        out.ok(),
        format!("Logged in to {} as alice (tenant default); the token expires in 12h.\n", server.endpoint)
    );
    let config = Config::load(Some(&alice.config_path())).unwrap();
    assert_eq!(config.current_context, context_name(&server));
    let context = config.current(None).unwrap().unwrap();
    assert_eq!((context.server.as_str(), context.user.as_str()), (server.endpoint.as_str(), "alice"));
    assert!(context.token.len() > 100, "{}", context.token);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(alice.config_path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{mode:o}");
    }

    // The token is not shown unless asked for.
    let view = alice.run_bare(&["config", "view"]).await.ok().to_string();
    assert!(view.contains("  token: REDACTED\n") && !view.contains(&context.token), "{view}");
    let raw = alice.run_bare(&["config", "view", "--raw"]).await.ok().to_string();
    assert!(raw.contains(&format!("  token: {}\n", context.token)), "{raw}");
    let contexts = rows(alice.run_bare(&["config", "get-contexts"]).await.ok());
    assert_eq!(contexts[0], ["CURRENT", "NAME", "SERVER", "NAMESPACE", "USER"]);
    assert_eq!(contexts[1], ["*", &context_name(&server), &server.endpoint, "alice"]);

    // No --server: the context's server and token are used.
    let out = alice.run_bare(&["whoami"]).await;
    let table = rows(out.ok());
    assert_eq!(table[0], ["ATTRIBUTE", "VALUE"]);
    assert_eq!(table[1], ["Username", "alice"]);
    assert_eq!(table[2], ["Kind", "User"]);
    assert_eq!(table[3], ["Tenant", "default"]);
    assert_eq!(table[4], ["Cluster-Role", "<none>"]);
    assert_eq!(table[5][0], "Expires");
    // 12h as it is issued, 11h (kubectl's rounding) a second later.
    let expires = table[5].join(" ");
    assert!(expires.ends_with("(in 12h)") || expires.ends_with("(in 11h)"), "{expires}");
    let json: Value = serde_json::from_str(alice.run_bare(&["whoami", "-o", "json"]).await.ok()).unwrap();
    assert_eq!(json["username"], "alice");
    assert_eq!(json["kind"], "User");
    assert!(json["expiresAt"].as_str().unwrap().ends_with('Z'), "{json}");
    let yaml = alice.run_bare(&["whoami", "-o", "yaml"]).await.ok().to_string();
    assert!(yaml.contains("username: alice\n"), "{yaml}");

    // The token printed is the one kept, unless STRATUS_TOKEN says otherwise.
    assert_eq!(alice.run_bare(&["auth", "print-access-token"]).await.ok(), format!("{}\n", context.token));
    let mut alice = alice;
    alice.env.token = Some(server.token.clone());
    assert_eq!(alice.run_bare(&["auth", "print-access-token"]).await.ok(), format!("{}\n", server.token));
    let out = alice.run_bare(&["whoami", "-o", "json"]).await;
    assert_eq!(
        serde_json::from_str::<Value>(out.ok()).unwrap()["username"],
        "system:serviceaccount:stratus-system:test-admin"
    );
    alice.env.token = None;

    // A token is not handed to another server than its context's.
    let elsewhere = common::closed_endpoint();
    let out = alice.run_exactly(&["stratus", "--server", &elsewhere, "auth", "print-access-token"], "").await;
    assert_eq!(
        out.failed(),
        format!(
            "error: not logged in to {elsewhere}: run `stratus login --server {elsewhere}`, or set STRATUS_TOKEN\n"
        )
    );

    // Logging out deletes the token and keeps the rest of the context.
    let out = alice.run_bare(&["logout"]).await;
    assert_eq!(out.ok(), format!("Logged out of {} (context {:?}).\n", server.endpoint, context_name(&server)));
    let config = Config::load(Some(&alice.config_path())).unwrap();
    let after = config.current(None).unwrap().unwrap();
    assert_eq!((after.token.as_str(), after.user.as_str()), ("", "alice"));
    assert!(!std::fs::read_to_string(alice.config_path()).unwrap().contains("token"));
    let out = alice.run_bare(&["get", "svc"]).await;
    assert_eq!(out.failed(), "error: not logged in or the token has expired (no credentials): run `stratus login`\n");
    let out = alice.run_bare(&["auth", "print-access-token"]).await;
    assert!(out.failed().starts_with(&format!("error: not logged in to {}: ", server.endpoint)), "{}", out.err);
    assert_eq!(alice.run_bare(&["logout"]).await.ok(), "Not logged in.\n");

    // Logging in again: the context remembers the user; the password is asked at the terminal.
    let out = alice.run_answering(&["login"], &["correct horse"]).await;
    assert!(out.ok().starts_with("Logged in to "), "{}", out.out);
    assert_eq!(rows(alice.run_bare(&["whoami"]).await.ok())[1], ["Username", "alice"]);
}

#[tokio::test]
async fn login_needs_a_user_and_a_terminal_or_password_stdin() {
    let server = TestServer::start().await;
    let cli = Stratus::new(&server.endpoint);
    let out = cli.run(&["login"]).await;
    assert_eq!(out.failed(), "error: give the user to log in as with --username\n");
    let out = cli.run(&["login", "-u", "alice"]).await;
    assert_eq!(out.failed(), "error: there is no terminal to ask for the password: pipe it in with --password-stdin\n");
    let out = cli.run_with_stdin(&["login", "-u", "alice", "--password-stdin"], "").await;
    assert_eq!(out.failed(), "error: --password-stdin: stdin holds no password\n");
    assert!(!cli.config_path().exists());
}

#[tokio::test]
async fn can_i_answers_yes_or_no_with_the_exit_code() {
    let (server, admin) = setup().await;
    make_user(&admin, "bob", "default", "bob's password").await;
    let bob = logged_in(&server, "bob", "bob's password").await;

    // No role in the namespace: no, and why on stderr.
    let out = bob.run(&["auth", "can-i", "create", "services"]).await;
    assert_eq!(out.code, 1);
    assert_eq!(out.out, "no\n");
    assert!(!out.err.is_empty() && !out.err.starts_with("error:"), "{}", out.err);

    let out = admin.run(&["create", "rolebinding", "readers", "--role", "viewer", "--user", "bob"]).await;
    assert_eq!(out.ok(), "rolebinding/readers created\n");
    let out = bob.run(&["auth", "can-i", "list", "services"]).await;
    assert_eq!((out.code, out.out.as_str(), out.err.as_str()), (0, "yes\n", ""));
    let out = bob.run(&["auth", "can-i", "delete", "service/hello"]).await;
    assert_eq!(out.code, 1);
    assert_eq!(out.out, "no\n");
    assert_eq!(out.err, "bob may not delete services \"hello\" in namespace \"default\"\n");
    let out = bob.run(&["auth", "can-i", "delete", "svc/hello", "-q"]).await;
    assert_eq!((out.code, out.out.as_str(), out.err.as_str()), (1, "", ""));
    let out = bob.run(&["auth", "can-i", "get", "nodes"]).await;
    assert_eq!((out.code, out.out.as_str()), (1, "no\n"));

    // A cluster admin may do anything, anywhere.
    for args in [&["delete", "nodes"][..], &["list", "services", "-A"], &["create", "tenants"]] {
        let out = admin.run(&[&["auth", "can-i"][..], args].concat()).await;
        assert_eq!(out.ok(), "yes\n", "{args:?}");
    }
    let out = admin.run(&["auth", "can-i", "get", "pods"]).await;
    assert_eq!(out.failed(), "error: the server doesn't have a resource type \"pods\"\n");
}

#[tokio::test]
async fn a_tenants_user_works_in_its_namespaces_and_does_not_see_anothers() {
    let (server, admin) = setup().await;
    let out = admin
        .run(&["create", "tenant", "acme", "--display-name", "Acme Corp", "--max-cpu", "4", "--max-services", "5"])
        .await;
    assert_eq!(out.ok(), "tenant/acme created\n");
    assert_eq!(
        admin.run(&["create", "namespace", "acme-dev", "--tenant", "acme"]).await.ok(),
        "namespace/acme-dev created\n"
    );
    // The password typed twice at the terminal.
    let out = admin
        .run_answering(&["create", "user", "alice", "--tenant", "acme"], &["alice's secret", "alice's secret"])
        .await;
    assert_eq!(out.ok(), "user/alice created\n");
    let out =
        admin.run(&["create", "rolebinding", "devs", "-n", "acme-dev", "--role", "developer", "--user", "alice"]).await;
    assert_eq!(out.ok(), "rolebinding/devs created\n");

    // What the admin made, as the tables show it.
    let tenants = rows(admin.run(&["get", "tenants", "acme", "-o", "wide"]).await.ok());
    assert_eq!(tenants[0], ["NAME", "DISPLAY-NAME", "MAX-CPU", "MAX-MEMORY", "MAX-INSTANCES", "AGE", "MAX-SERVICES"]);
    assert_eq!(tenants[1][..5], ["acme", "Acme", "Corp", "4", "unlimited"]);
    assert_eq!(tenants[1][7], "5");
    let users = rows(admin.run(&["get", "users", "alice"]).await.ok());
    assert_eq!(users[0], ["NAME", "TENANT", "CLUSTER-ROLE", "AGE"]);
    assert_eq!(users[1][..3], ["alice", "acme", "<none>"]);
    let bindings = rows(admin.run(&["get", "rb", "-n", "acme-dev"]).await.ok());
    assert_eq!(bindings[0], ["NAME", "ROLE", "SUBJECTS", "AGE"]);
    assert_eq!(bindings[1][..3], ["devs", "developer", "User/alice"]);
    let described = admin.run(&["describe", "rolebinding", "devs", "-n", "acme-dev"]).await.ok().to_string();
    assert!(described.contains("\nRole:"), "{described}");
    let subjects = described.split("Subjects:\n").nth(1).unwrap_or_else(|| panic!("no subjects:\n{described}"));
    assert_eq!(rows(subjects)[2], ["User", "alice", "<none>"], "{described}");
    // The password is never shown.
    let yaml = admin.run(&["get", "user", "alice", "-o", "yaml"]).await.ok().to_string();
    assert!(!yaml.contains("password") && !yaml.contains("secret"), "{yaml}");

    let alice = Stratus::new(&server.endpoint);
    let out = alice.run_with_stdin(&["login", "-u", "alice", "--password-stdin"], "alice's secret").await;
    assert!(out.ok().contains(" as alice (tenant acme); "), "{}", out.out);
    let out = alice.run_with_stdin(&["apply", "-n", "acme-dev", "-f", "-"], &service("web", "example/web:v1")).await;
    assert_eq!(out.ok(), "service/web created\n");
    let listed = rows(alice.run(&["get", "svc", "-n", "acme-dev"]).await.ok());
    assert_eq!(listed[1][0], "web");
    // Another tenant's namespace is not there for her, as if it did not exist.
    let out = alice.run(&["get", "svc", "-n", "default"]).await;
    assert_eq!(out.failed(), "error: namespace \"default\" not found\n");
    let out = alice.run(&["get", "tenant", "default"]).await;
    assert_eq!(out.failed(), "error: tenants \"default\" not found\n");
}

#[tokio::test]
async fn a_service_account_token_works_until_the_account_is_deleted() {
    let (server, admin) = setup().await;
    assert_eq!(admin.run(&["create", "serviceaccount", "ci"]).await.ok(), "serviceaccount/ci created\n");
    let out = admin.run(&["create", "rolebinding", "ci", "--role", "viewer", "--serviceaccount", "ci"]).await;
    assert_eq!(out.ok(), "rolebinding/ci created\n");
    let bindings = rows(admin.run(&["get", "rolebindings"]).await.ok());
    assert_eq!(bindings[1][..3], ["ci", "viewer", "ServiceAccount/ci"]);

    let out: Output = admin.run(&["create", "token", "serviceaccount/ci", "--duration", "10m"]).await;
    let token = out.ok().strip_suffix('\n').unwrap().to_string();
    assert!(!token.is_empty() && !token.contains(char::is_whitespace), "{token:?}");

    let ci = Stratus::new(&server.endpoint).with_token(Some(&token));
    let me = rows(ci.run(&["whoami"]).await.ok());
    assert_eq!(me[1], ["Username", "system:serviceaccount:default:ci"]);
    assert_eq!(me[2], ["Kind", "ServiceAccount"]);
    let out = ci.run(&["get", "svc"]).await;
    assert_eq!((out.code, out.err.as_str()), (0, "No resources found in default namespace.\n"));
    // A viewer: it reads, and is told no when it writes.
    let out = ci.run_with_stdin(&["apply", "-f", "-"], &service("web", "x")).await;
    assert!(out.failed().starts_with("error: STDIN: service/web: forbidden: "), "{}", out.err);

    let out = admin.run(&["create", "token", "sa/nope"]).await;
    assert_eq!(out.failed(), "error: serviceaccounts \"nope\" not found in namespace \"default\"\n");
    let out = admin.run(&["create", "token", "user/alice"]).await;
    assert!(out.failed().starts_with("error: tokens are made for service accounts only"), "{}", out.err);

    // The account gone, its tokens are refused.
    admin.run(&["delete", "sa", "ci"]).await.ok();
    let out = ci.run(&["get", "svc"]).await;
    assert_eq!(
        out.failed(),
        "error: not logged in or the token has expired (system:serviceaccount:default:ci no longer exists: log in \
         again): run `stratus login`\n"
    );
}

#[tokio::test]
async fn create_refuses_what_it_can_before_asking_the_server() {
    let (_server, admin) = setup().await;
    let out = admin.run_with_stdin(&["create", "user", "x", "--tenant", "default", "--password-stdin"], "short").await;
    assert!(out.failed().starts_with("error: user/x: spec.password: must have at least 8 characters"), "{}", out.err);
    let out = admin.run_answering(&["create", "user", "x"], &["first password", "second password"]).await;
    assert_eq!(out.failed(), "error: the two passwords differ; nothing was created\n");
    let out = admin.run(&["create", "user", "x", "--tenant", "default"]).await;
    assert_eq!(out.failed(), "error: there is no terminal to ask for the password: pipe it in with --password-stdin\n");
    let out = admin.run(&["create", "user", "Bad_Name", "--password-stdin"]).await;
    assert_eq!(out.code, 1, "{}", out.err);

    // Flags clap refuses: exit 2 and its usage message.
    for args in [
        &["create", "tenant", "t", "--max-cpu", "lots"][..],
        &["create", "tenant", "t", "--max-instances", "-1"],
        &["create", "rolebinding", "rb", "--role", "viewer"],
        &["create", "rolebinding", "rb", "--role", "boss", "--user", "a"],
        &["create", "rolebinding", "rb", "--role", "viewer", "--serviceaccount", "ns:"],
        &["create", "user", "x", "--cluster-role", "god"],
        &["create", "token", "sa/ci", "--duration", "0s"],
    ] {
        let out = admin.run(args).await;
        assert_eq!(out.code, 2, "{args:?}: {}", out.err);
        assert!(out.err.starts_with("error: "), "{args:?}: {}", out.err);
    }

    // What the server refuses is shown as other commands show it.
    assert_eq!(admin.run(&["create", "ns", "dup"]).await.ok(), "namespace/dup created\n");
    let out = admin.run(&["create", "namespace", "dup"]).await;
    assert!(out.failed().starts_with("error: namespace/dup: already exists: "), "{}", out.err);
    let out = admin.run(&["create", "serviceaccount", "ci", "-n", "nowhere"]).await;
    let err = out.failed();
    assert!(err.starts_with("error: serviceaccount/ci: ") && err.contains("nowhere"), "{err}");
}

/// Against an HTTPS server: without the CA the CLI refuses it; `login --certificate-authority`
/// keeps the CA in the context, so later commands verify the server with no flag; and the join
/// command of a bootstrap token carries the CA's pin.
#[tokio::test]
async fn an_https_server_is_verified_with_the_ca_the_context_keeps() {
    let server = TestServer::start_tls(Default::default()).await;
    let admin = Stratus::admin(&server);
    make_user(&admin_with_ca(&admin, &server), "carol", "default", "a long enough password").await;

    let cli = Stratus::new(&server.endpoint);
    let out = cli.run_with_stdin(&["login", "-u", "carol", "--password-stdin"], "a long enough password").await;
    assert!(out.failed().contains("no certificate authority was given"), "{}", out.err);

    let ca = cli.dir.path().join("ca.crt");
    std::fs::write(&ca, server.ca.as_ref().unwrap().cert_pem()).unwrap();
    let ca_arg = ca.display().to_string();
    let login = ["--certificate-authority", ca_arg.as_str(), "login", "-u", "carol", "--password-stdin"];
    cli.run_with_stdin(&login, "a long enough password").await.ok();
    let config = Config::load(Some(&cli.config_path())).unwrap();
    assert!(!config.contexts[0].certificate_authority_data.is_empty());
    // No flag now: the context's CA verifies the server.
    assert!(cli.run(&["whoami"]).await.ok().contains("carol"));

    // A client trusting another CA is refused, with what to check.
    let stranger = cli.dir.path().join("stranger.crt");
    std::fs::write(&stranger, stratus_auth::pki::Ca::generate().unwrap().cert_pem()).unwrap();
    let out = cli.run(&["--certificate-authority", stranger.to_str().unwrap(), "whoami"]).await;
    assert!(out.failed().contains("cannot verify the Stratus API"), "{}", out.err);

    // The join command names the server, the token and the pin of the CA.
    let out = admin_with_ca(&admin, &server).run(&["create", "token", "--bootstrap", "--print-join-command"]).await;
    let line = out.ok();
    let pin = stratus_auth::pki::ca_cert_hash(server.ca.as_ref().unwrap().cert_pem()).unwrap();
    assert!(line.starts_with(&format!("stratus-agent --join {} --token ", server.endpoint)), "{line}");
    assert!(line.contains(&format!("--ca-cert-hash {pin} ")), "{line}");
}

/// `admin` verifying `server` with its CA.
fn admin_with_ca(admin: &Stratus, server: &TestServer) -> Stratus {
    let path = admin.dir.path().join("ca.crt");
    std::fs::write(&path, server.ca.as_ref().unwrap().cert_pem()).unwrap();
    let mut cli = Stratus::new(&server.endpoint);
    cli.env = stratus_cli::Environment { certificate_authority: Some(path), ..admin.env.clone() };
    cli
}
