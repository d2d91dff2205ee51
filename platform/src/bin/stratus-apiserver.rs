//! `stratus-apiserver`: flags, tracing, then the API server alone through
//! [`stratus_platform::Builder::serve_api`].

/// mimalloc, not glibc's malloc: at 5,000 nodes a fifth of the control plane's CPU went to
/// glibc's allocator (`_int_malloc`, `malloc_consolidate`, `unlink_chunk`); with mimalloc the
/// same run placed 1.03–1.42× as many Instances per second, 1.30× in the median of nine
/// pairs of runs (docs/benchmarks.md). Built without transparent huge pages (`no_thp`), which
/// would round resident memory up by 2 MiB pages.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use stratus_apiserver::StoreOptions;
use stratus_platform::Builder;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum StoreKind {
    Embedded,
    Etcd,
}

/// The Stratus API server: resources over gRPC and HTTP/JSON on one port.
#[derive(Parser, Debug)]
#[command(
    name = "stratus-apiserver",
    version,
    about = "The Stratus API server: resources over gRPC and HTTP/JSON on one port, stored in etcd or the embedded store",
    long_about = None
)]
struct Args {
    /// Address to serve gRPC and HTTP on.
    #[arg(long, env = "STRATUS_LISTEN", default_value = stratus_apiserver::DEFAULT_LISTEN)]
    listen: String,
    /// Where resources are stored.
    #[arg(long, env = "STRATUS_STORE", value_enum, default_value = "embedded")]
    store: StoreKind,
    /// Directory of the embedded store (and of its encryption key, `encryption-key`).
    #[arg(long, env = "STRATUS_DATA_DIR", default_value = ".stratus/data", global = true)]
    data_dir: PathBuf,
    /// The keys Secrets are encrypted with at rest (YAML, mode 0600): the first encrypts, all
    /// decrypt. Default: DATA_DIR/encryption-key, made on first start with the embedded store.
    /// API servers sharing etcd must all be given the same file; without one, they refuse
    /// Secrets.
    #[arg(long, env = "STRATUS_ENCRYPTION_KEY_FILE", value_name = "PATH", global = true)]
    encryption_key_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
    /// etcd client URLs, comma-separated (with --store etcd); `https://` with --etcd-cacert.
    #[arg(long, env = "STRATUS_ETCD_ENDPOINTS", value_delimiter = ',', default_value = "http://127.0.0.1:2379")]
    etcd_endpoints: Vec<String>,
    /// Speak TLS to etcd, trusting only this CA bundle (PEM) for etcd's certificate.
    #[arg(long, env = "STRATUS_ETCD_CACERT", value_name = "PATH")]
    etcd_cacert: Option<PathBuf>,
    /// The client certificate (PEM) presented to an etcd that asks for one
    /// (`--client-cert-auth`). Needs --etcd-key and --etcd-cacert.
    #[arg(long, env = "STRATUS_ETCD_CERT", value_name = "PATH", requires_all = ["etcd_key", "etcd_cacert"])]
    etcd_cert: Option<PathBuf>,
    /// The private key (PEM) of --etcd-cert.
    #[arg(long, env = "STRATUS_ETCD_KEY", value_name = "PATH", requires = "etcd_cert")]
    etcd_key: Option<PathBuf>,
    /// On first start, create the cluster admin `admin` (tenant `default`) with a random
    /// password written to this file (mode 0600; it must not exist yet). Without it, a new
    /// cluster has no user and refuses every request.
    #[arg(long, env = "STRATUS_BOOTSTRAP_ADMIN", value_name = "PASSWORD_FILE")]
    bootstrap_admin: Option<PathBuf>,
    /// The issuer (`iss`) of the tokens this server signs: the URL clients reach the API at.
    #[arg(long, env = "STRATUS_ISSUER", default_value = "https://stratus.local")]
    issuer: String,
    /// How long a token from `stratus login` lasts, e.g. 12h.
    #[arg(long, default_value = "12h", value_parser = duration)]
    login_token_ttl: Duration,
    /// The longest any token may last; a retired signing key verifies this long after its
    /// retirement.
    #[arg(long, default_value = "720h", value_parser = duration)]
    max_token_ttl: Duration,
    /// How often a new signing key is made.
    #[arg(long, default_value = "24h", value_parser = duration)]
    signing_key_rotation: Duration,
    /// Write the audit log (a JSON line per write and per refused request) to this file.
    #[arg(long, env = "STRATUS_AUDIT_LOG", value_name = "PATH")]
    audit_log: Option<PathBuf>,
    /// Rotate the audit log past this many megabytes (five old files are kept).
    #[arg(long, default_value_t = 100)]
    audit_log_max_mb: u64,
    /// A host name the API is reached by, besides IP addresses and localhost (repeat; `*.example.com`
    /// for every subdomain). Requests naming another Host are refused (DNS rebinding).
    #[arg(long = "allowed-host", value_name = "HOST")]
    allowed_hosts: Vec<String>,
    /// The largest minInstances a revision may ask for.
    #[arg(long, default_value_t = 100)]
    max_min_instances: i32,
    /// The largest maxInstances a revision may ask for.
    #[arg(long, default_value_t = 1000)]
    max_max_instances: i32,
    /// The largest initialScale a revision may ask for.
    #[arg(long, default_value_t = 100)]
    max_initial_scale: i32,
    /// Where the cluster CA (made on first start) and the issued serving certificate are
    /// kept; default: DATA_DIR/pki.
    #[arg(long, env = "STRATUS_PKI_DIR", value_name = "DIR")]
    pki_dir: Option<PathBuf>,
    /// Another DNS name or IP address the API is reached by, for its certificate (repeat).
    /// localhost, the loopback addresses, this host's name and the --listen address are always in.
    #[arg(long = "tls-san", value_name = "NAME")]
    tls_sans: Vec<String>,
    /// How long an issued serving certificate is valid; it is renewed at two thirds of this.
    #[arg(long, default_value = "2160h", value_parser = duration)]
    serving_cert_validity: Duration,
    /// Serve this certificate (PEM chain) instead of one issued by the cluster CA; read again
    /// when it changes. Needs --tls-key-file and --tls-ca-file.
    #[arg(long, value_name = "PATH", requires_all = ["tls_key_file", "tls_ca_file"])]
    tls_cert_file: Option<PathBuf>,
    /// The key of --tls-cert-file (PEM).
    #[arg(long, value_name = "PATH", requires = "tls_cert_file")]
    tls_key_file: Option<PathBuf>,
    /// The CA bundle (PEM) clients verify --tls-cert-file with.
    #[arg(long, value_name = "PATH", requires = "tls_cert_file")]
    tls_ca_file: Option<PathBuf>,
    /// The client certificate (PEM; common name system:apiserver, from the cluster CA) presented
    /// to node agents, which answer logs to no one else. Not needed when the API server holds the
    /// cluster CA (no --tls-cert-file): it issues itself one. Needs --agent-client-key and
    /// --agent-ca-file.
    #[arg(long, value_name = "PATH", requires_all = ["agent_client_key", "agent_ca_file"])]
    agent_client_cert: Option<PathBuf>,
    /// The key of --agent-client-cert (PEM).
    #[arg(long, value_name = "PATH", requires = "agent_client_cert")]
    agent_client_key: Option<PathBuf>,
    /// The cluster CA (PEM) agents' certificates must chain to; each must name its node.
    #[arg(long, value_name = "PATH", requires = "agent_client_cert")]
    agent_ca_file: Option<PathBuf>,
    /// An origin whose web pages may call the API, e.g. https://console.example.com (repeat).
    #[arg(long = "allowed-origin", value_name = "ORIGIN")]
    allowed_origins: Vec<String>,
    /// The cluster's image registry (host:port, plain HTTP) that uploaded images are stored in,
    /// as HOST:PORT/NAMESPACE/NAME:TAG; node agents pull them from there. Empty: no uploads.
    #[arg(long, env = "STRATUS_REGISTRY", default_value = "127.0.0.1:5000")]
    registry: String,
    /// The largest image archive an upload may send, in bytes (default 2 GiB). Archives are
    /// spooled under DATA_DIR/uploads while they arrive.
    #[arg(long, env = "STRATUS_MAX_IMAGE_UPLOAD", default_value_t = stratus_apiserver::images::DEFAULT_MAX_BYTES)]
    max_image_upload: u64,
    /// Repair the embedded store's log and exit: cut it at its first damaged record, keeping
    /// everything before it, and print what was dropped. For a server that refuses to start
    /// because its log is damaged; the writes after the damage are lost.
    #[arg(long)]
    repair: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Put a new key first in the encryption key file (made if missing), keeping the old keys
    /// for reading. Restart the API servers with the file: each re-encrypts every Secret with
    /// the new key as it starts; after that the old keys may be deleted from the file.
    RotateEncryptionKey,
}

fn duration(s: &str) -> Result<Duration, String> {
    let d = stratus_api::duration::parse(s).map_err(|e| e.to_string())?;
    if d.is_zero() { Err("must be longer than zero".into()) } else { Ok(d) }
}

/// `--repair`: cuts the embedded store's log at its damage, and prints what was dropped.
async fn repair(args: &Args) -> anyhow::Result<()> {
    if !matches!(args.store, StoreKind::Embedded) {
        anyhow::bail!("--repair repairs the embedded store; etcd has its own tools (etcdctl snapshot restore)");
    }
    let dir = &args.data_dir;
    let repaired = stratus_store::embedded::EmbeddedStore::repair(dir)
        .await
        .with_context(|| format!("cannot repair the store in {}", dir.display()))?;
    match repaired {
        None => println!("the store's log in {} has no damage; nothing was changed", dir.display()),
        Some(r) => {
            println!("{}: damaged record at offset {} ({})", r.path.display(), r.offset, r.damage);
            println!("kept everything before it: the store is at revision {}", r.kept_revision);
            let revisions = match r.dropped_revisions {
                Some((low, high)) if low == high => format!(", revision {low}"),
                Some((low, high)) => format!(", revisions {low} to {high}"),
                None => String::new(),
            };
            println!(
                "dropped {} bytes: the damaged frame and {} readable frames after it ({} records{revisions})",
                r.dropped_bytes, r.dropped_frames, r.dropped_records
            );
        }
    }
    Ok(())
}

/// Where the flags say resources are stored.
fn store_options(args: &Args) -> StoreOptions {
    match args.store {
        StoreKind::Embedded => StoreOptions::Embedded { data_dir: args.data_dir.clone() },
        StoreKind::Etcd => StoreOptions::Etcd {
            endpoints: args.etcd_endpoints.clone(),
            tls: args.etcd_cacert.clone().map(|ca_cert| stratus_apiserver::EtcdTlsFiles {
                ca_cert,
                client: args.etcd_cert.clone().zip(args.etcd_key.clone()),
            }),
        },
    }
}

/// Whether starting failed because the embedded store's log is damaged.
fn corrupt_log(e: &anyhow::Error) -> bool {
    e.chain()
        .any(|cause| matches!(cause.downcast_ref::<stratus_store::Error>(), Some(stratus_store::Error::Corrupt(_))))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    stratus_support::init_tracing();
    let traces = stratus_support::otel::init("stratus-apiserver")?;
    stratus_support::raise_open_file_limit();
    let args = Args::parse();
    if args.repair {
        return repair(&args).await;
    }
    if let Some(Command::RotateEncryptionKey) = args.command {
        let file = args
            .encryption_key_file
            .clone()
            .unwrap_or_else(|| args.data_dir.join(stratus_platform::ENCRYPTION_KEY_FILE));
        let name = stratus_apiserver::encryption::rotate_file(&file)?;
        println!(
            "{name} is now the primary key in {}; restart the API servers with it to re-encrypt every secret",
            file.display()
        );
        return Ok(());
    }
    let store = store_options(&args);
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let listen = listener.local_addr().context("the listener has no address")?;
    let tls = match (args.tls_cert_file, args.tls_key_file, args.tls_ca_file) {
        (Some(cert), Some(key), Some(ca)) => {
            stratus_platform::tls::ServingTls::Files { cert, key, ca, recheck: Duration::from_secs(30) }
        }
        _ => stratus_platform::tls::ServingTls::Issued {
            pki_dir: args.pki_dir.unwrap_or_else(|| args.data_dir.join("pki")),
            names: stratus_platform::tls::ServingTls::default_names(listen, &args.tls_sans),
            validity: args.serving_cert_validity,
        },
    };
    let tokens = stratus_apiserver::auth::tokens::TokenConfig {
        issuer: args.issuer,
        login_ttl: args.login_token_ttl,
        max_ttl: args.max_token_ttl,
        rotation: args.signing_key_rotation,
        ..Default::default()
    };
    let audit = args.audit_log.map(|path| stratus_apiserver::audit::AuditConfig {
        max_bytes: args.audit_log_max_mb.saturating_mul(1024 * 1024),
        ..stratus_apiserver::audit::AuditConfig::new(path)
    });
    let guard = stratus_apiserver::guard::GuardConfig { hosts: args.allowed_hosts, origins: args.allowed_origins };
    let bounds = stratus_apiserver::registry::ScalingBounds {
        max_min_instances: args.max_min_instances,
        max_max_instances: args.max_max_instances,
        max_initial_scale: args.max_initial_scale,
    };
    let agent_tls = match (args.agent_client_cert, args.agent_client_key, args.agent_ca_file) {
        (Some(cert), Some(key), Some(ca)) => Some(stratus_apiserver::AgentClientFiles { cert, key, ca }),
        _ => None,
    };
    let images = (!args.registry.is_empty()).then(|| stratus_apiserver::images::ImagesConfig {
        max_bytes: args.max_image_upload,
        ..stratus_apiserver::images::ImagesConfig::new(&args.registry, args.data_dir.join("uploads"))
    });
    let config = stratus_apiserver::Config { tokens, guard, audit, bounds, agent_tls, images, ..Default::default() };
    let mut builder = Builder::serve_api(store, listener).api_config(config).api_tls(tls);
    if let Some(file) = &args.encryption_key_file {
        builder = builder.encryption_key_file(file);
    }
    if let Some(file) = &args.bootstrap_admin {
        builder = builder.bootstrap_admin(file);
    }
    let platform = builder.start().await.map_err(|e| {
        let e = anyhow::Error::from(e);
        if !corrupt_log(&e) {
            return e;
        }
        e.context(format!(
            "the store's log in {0} is damaged; `stratus-apiserver --repair --data-dir {0}` cuts it at the damage \
             (the writes after it are lost)",
            args.data_dir.display()
        ))
    })?;
    if let (Some(file), Some(_)) = (&args.bootstrap_admin, &platform.admin_password) {
        tracing::info!(file = %file.display(), "created the cluster admin \"admin\"; its password is in the file");
    }
    platform.run_until(stratus_support::shutdown_signal()).await?;
    if let Some(traces) = traces {
        traces.shutdown().await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use stratus_store::Store;

    use super::*;

    #[tokio::test]
    async fn a_damaged_log_stops_the_start_naming_repair_and_repair_cuts_it() {
        let dir = std::env::temp_dir().join(format!("stratus-repair-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = stratus_store::embedded::EmbeddedStore::open(&dir).await.unwrap();
        for key in ["/a", "/b", "/c"] {
            store.create(key, bytes_of(&format!("the value of {key}")), 0).await.unwrap();
        }
        store.close().await.unwrap();
        let log = dir.join("store.wal");
        let mut data = std::fs::read(&log).unwrap();
        let at = data.windows(15).position(|w| w == b"the value of /b").unwrap();
        data[at] ^= 1;
        std::fs::write(&log, &data).unwrap();

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let started = Builder::serve_api(StoreOptions::Embedded { data_dir: dir.clone() }, listener).start().await;
        let e = anyhow::Error::from(started.err().expect("a damaged log stops the start"));
        assert!(corrupt_log(&e), "{e:#}");
        assert!(format!("{e:#}").contains("damaged frame at offset"), "{e:#}");

        let args =
            Args::try_parse_from(["stratus-apiserver", "--repair", "--data-dir", dir.to_str().unwrap()]).unwrap();
        assert!(args.repair);
        repair(&args).await.unwrap();
        let store = stratus_store::embedded::EmbeddedStore::open(&dir).await.expect("opens after the repair");
        assert!(store.get("/a").await.unwrap().is_some(), "what came before the damage is kept");
        assert!(store.get("/b").await.unwrap().is_none() && store.get("/c").await.unwrap().is_none());
        store.close().await.unwrap();
        repair(&args).await.expect("a repaired log has nothing left to repair");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn bytes_of(s: &str) -> bytes::Bytes {
        bytes::Bytes::copy_from_slice(s.as_bytes())
    }

    fn parse(flags: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(["stratus-apiserver", "--store", "etcd"].iter().chain(flags))
    }

    #[test]
    fn the_etcd_tls_flags_reach_the_store_options() {
        let args = parse(&[
            "--etcd-endpoints",
            "https://10.0.0.1:2379",
            "--etcd-cacert",
            "ca.crt",
            "--etcd-cert",
            "c.crt",
            "--etcd-key",
            "c.key",
        ])
        .unwrap();
        let StoreOptions::Etcd { endpoints, tls: Some(tls) } = store_options(&args) else { panic!("no TLS") };
        assert_eq!(endpoints, ["https://10.0.0.1:2379"]);
        assert_eq!(tls.ca_cert, PathBuf::from("ca.crt"));
        assert_eq!(tls.client, Some((PathBuf::from("c.crt"), PathBuf::from("c.key"))));

        let args = parse(&["--etcd-cacert", "ca.crt"]).unwrap();
        assert!(matches!(store_options(&args), StoreOptions::Etcd { tls: Some(t), .. } if t.client.is_none()));
        assert!(matches!(store_options(&parse(&[]).unwrap()), StoreOptions::Etcd { tls: None, .. }));
        // A certificate needs its key and the CA; a key needs its certificate.
        let bad: [&[&str]; 3] = [
            &["--etcd-cert", "c.crt", "--etcd-cacert", "ca.crt"],
            &["--etcd-cert", "c.crt", "--etcd-key", "k"],
            &["--etcd-key", "k"],
        ];
        for flags in bad {
            assert!(parse(flags).is_err(), "{flags:?}");
        }
    }
}
