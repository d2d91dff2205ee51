//! Secrets through the CLI against a real API server: `create secret generic`, a table that
//! counts keys, `describe` with sizes only, `-o yaml` that hides values unless asked, and a
//! printed Secret that cannot be applied back with its placeholders.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Stratus, TestServer};

const VALUE: &str = "s3cr3t-cli-4c1d";

#[tokio::test]
async fn secrets_are_made_listed_and_described_without_showing_a_value() {
    let server = TestServer::start().await;
    let cli = Stratus::admin(&server);
    let out = cli
        .run(&[
            "create",
            "secret",
            "generic",
            "db",
            "--from-literal=user=app",
            &format!("--from-literal=password={VALUE}"),
        ])
        .await;
    assert_eq!(out.ok(), "secret/db created\n");

    let table = cli.run(&["get", "secrets"]).await.ok().to_string();
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&row[..3], ["db", "Opaque", "2"], "{table}");

    let described = cli.run(&["describe", "secret", "db"]).await.ok().to_string();
    assert!(described.contains(&format!("password:  {} bytes", VALUE.len())), "{described}");
    assert!(!described.contains(VALUE), "{described}");

    for format in ["yaml", "json"] {
        let hidden = cli.run(&["get", "secret", "db", "-o", format]).await.ok().to_string();
        assert!(!hidden.contains(VALUE) && hidden.contains(&format!("<hidden: {} bytes>", VALUE.len())), "{hidden}");
        let listed = cli.run(&["get", "secrets", "-o", format]).await.ok().to_string();
        assert!(!listed.contains(VALUE), "{listed}");
        let shown = cli.run(&["get", "secret", "db", "-o", format, "--show-values"]).await.ok().to_string();
        assert!(shown.contains(VALUE), "{shown}");
    }

    // What `get` printed without values does not go back: the placeholders would replace them.
    let hidden = cli.run(&["get", "secret", "db", "-o", "yaml"]).await.ok().to_string();
    let out = cli.run_with_stdin(&["apply", "-f", "-"], &hidden).await;
    assert!(out.failed().contains("is the placeholder `stratus get` prints without --show-values"), "{}", out.err);
    let shown = cli.run(&["get", "secret", "db", "-o", "yaml", "--show-values"]).await.ok().to_string();
    assert!(cli.run(&["get", "secret", "db", "-o", "yaml", "--show-values"]).await.ok().contains(VALUE));
    assert_eq!(cli.run_with_stdin(&["apply", "-f", "-"], &shown).await.ok(), "secret/db unchanged\n");

    // A pair without '=' is refused without echoing it (it may be a value).
    let out = cli.run(&["create", "secret", "generic", "bad", &format!("--from-literal={VALUE}")]).await;
    let err = out.failed();
    assert!(err.contains("--from-literal takes KEY=VALUE") && !err.contains(VALUE), "{err}");
    assert_eq!(cli.run(&["delete", "secret", "db"]).await.ok(), "secret \"db\" deleted\n");
}
