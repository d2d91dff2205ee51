//! The command line: every command, flag and help text, in kubectl's shape.

use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use clap_complete::Shell;
use stratus_api::identity::roles;

use crate::bench::plan::{Load, MAX_CONCURRENCY, Stage, parse_load, parse_stage};
use crate::format::parse_duration;

const ABOUT: &str = "stratus controls Stratus, a self-hosted Cloud Run: it deploys containers from manifests, \
scales them with traffic, and shows what runs.";

const EXAMPLES: &str = "\
Examples:
  # Start a local control plane on this machine (it logs this CLI in as admin)
  stratus up

  # Or log in to a remote one
  stratus login --server https://stratus.example.com:7070 --username alice

  # Deploy a service and wait until it serves
  stratus apply -f manifests/hello.yaml
  stratus wait service hello --for=condition=Ready

  # See what runs
  stratus get services
  stratus get revisions,instances -o wide
  stratus describe service hello
  stratus logs service/hello -f

Where requests go: --server, else $STRATUS_SERVER, else the current context of ~/.stratus/config
($STRATUS_CONFIG), else https://127.0.0.1:7070. Several API servers may be given, separated by
commas (https://a:7070,https://b:7070): requests go to the next when one cannot be reached. The token presented is $STRATUS_TOKEN, else the
current context's (from `stratus login`), which only goes to that context's server.";

#[derive(Debug, Parser)]
#[command(name = "stratus", version, about = ABOUT, after_help = EXAMPLES, max_term_width = 100, arg_required_else_help = true)]
pub struct Cli {
    /// The API server to talk to, or several separated by commas (calls go to the next when one cannot be reached) [default: $STRATUS_SERVER, the current context's server, or https://127.0.0.1:7070]
    #[arg(long, global = true, value_name = "URL", help_heading = "Global Options")]
    pub server: Option<String>,

    /// The CA bundle (PEM) that verifies the server's certificate [default: $STRATUS_CERTIFICATE_AUTHORITY, or the context's]
    #[arg(long, global = true, value_name = "PATH", help_heading = "Global Options")]
    pub certificate_authority: Option<std::path::PathBuf>,

    /// The namespace to work in [default: the current context's namespace, or default]
    #[arg(short = 'n', long, global = true, value_name = "NAMESPACE", help_heading = "Global Options")]
    pub namespace: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or update objects from manifests
    #[command(after_help = APPLY_EXAMPLES)]
    Apply(ApplyArgs),

    /// Display one or many objects
    #[command(after_help = GET_EXAMPLES, override_usage = "stratus get KIND[,KIND...] [NAME...] [OPTIONS]\n       stratus get KIND/NAME... [OPTIONS]")]
    Get(GetArgs),

    /// Show details of objects, with their conditions and events
    #[command(after_help = DESCRIBE_EXAMPLES, override_usage = "stratus describe KIND [NAME...] [OPTIONS]\n       stratus describe KIND/NAME... [OPTIONS]")]
    Describe(DescribeArgs),

    /// Delete objects by kind and name, by selector, or from manifests
    #[command(
        after_help = DELETE_EXAMPLES,
        override_usage = "stratus delete KIND NAME... [OPTIONS]\n       stratus delete KIND/NAME... [OPTIONS]\n       \
                          stratus delete KIND (-l SELECTOR | --all) [OPTIONS]\n       stratus delete -f FILE... [OPTIONS]"
    )]
    Delete(DeleteArgs),

    /// Wait until objects meet a condition or are deleted
    #[command(after_help = WAIT_EXAMPLES, override_usage = "stratus wait KIND NAME... --for=CONDITION [OPTIONS]\n       stratus wait KIND/NAME... --for=CONDITION [OPTIONS]")]
    Wait(WaitArgs),

    /// Print the container output of an instance, or of every instance of a service
    #[command(after_help = LOGS_EXAMPLES, override_usage = "stratus logs [KIND/]NAME [-f] [--tail N] [OPTIONS]")]
    Logs(LogsArgs),

    /// Send load to a service or URL and report latency, throughput, errors and instances
    #[command(
        after_help = BENCH_EXAMPLES,
        override_usage = "stratus bench TARGET [--rate N | --concurrency N | --stage DURATION:LOAD...] [OPTIONS]"
    )]
    Bench(BenchArgs),

    /// Show live requests per second, latency, concurrency, CPU and memory of services,
    /// instances or nodes
    #[command(after_help = TOP_EXAMPLES, override_usage = "stratus top services|instances|nodes [OPTIONS]")]
    Top(TopArgs),

    /// Run Stratus on this machine in the foreground: API server and node agent
    #[command(after_help = UP_EXAMPLES)]
    Up(UpArgs),

    /// Remove every container Stratus runs on this machine (and with --purge, its data)
    #[command(after_help = DOWN_EXAMPLES)]
    Down(DownArgs),

    /// Create a tenant, namespace, user, service account, role binding or token
    #[command(subcommand, after_help = CREATE_EXAMPLES)]
    Create(CreateCommand),

    /// Log in with a user name and password, and keep the token in the current context
    #[command(after_help = LOGIN_EXAMPLES, override_usage = "stratus login [--server URL] [--username NAME] [--password-stdin]")]
    Login(LoginArgs),

    /// Forget the token of the current context
    #[command(after_help = LOGOUT_EXAMPLES)]
    Logout,

    /// Show who the server takes you for: user, tenant, cluster role, when the token expires
    #[command(after_help = WHOAMI_EXAMPLES)]
    Whoami(WhoamiArgs),

    /// Ask what you may do, or print your token
    #[command(subcommand, after_help = AUTH_EXAMPLES)]
    Auth(AuthCommand),

    /// Show or change the contexts of the config file
    #[command(subcommand, after_help = CONFIG_EXAMPLES)]
    Config(ConfigCommand),

    /// Show what your tenant used and owes: usage, invoices, budgets; recount an invoice
    #[command(subcommand, after_help = BILLING_EXAMPLES)]
    Billing(BillingCommand),

    /// Upload an image (a `docker save` archive) to the cluster's registry, or list the namespace's
    #[command(subcommand, after_help = IMAGE_EXAMPLES)]
    Image(ImageCommand),

    /// List the kinds of objects Stratus knows, with their short names
    #[command(after_help = API_RESOURCES_EXAMPLES)]
    ApiResources,

    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    #[command(after_help = COMPLETION_EXAMPLES)]
    Completion(CompletionArgs),
}

const APPLY_EXAMPLES: &str = "\
Every document is decoded and validated before anything is sent: if one is invalid, each problem
is reported with its file, document number and field, and nothing is applied. Knative Services
(serving.knative.dev/v1) are accepted as they are.

Examples:
  # Apply a manifest
  stratus apply -f manifests/hello.yaml

  # Apply every *.yaml, *.yml and *.json file of a directory, in name order
  stratus apply -f manifests/

  # Apply what is piped in, into the namespace team-a
  cat hello.yaml | stratus apply -n team-a -f -";

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// A manifest file, a directory of them, or - for stdin (repeatable)
    #[arg(short = 'f', long = "filename", value_name = "FILE", required = true)]
    pub filenames: Vec<String>,
}

const GET_EXAMPLES: &str = "\
Kinds: services (svc, ksvc), revisions (rev), instances (inst), endpoints (ep), events (ev), leases,
nodes (no), namespaces (ns), tenants, users, serviceaccounts (sa), rolebindings (rb). See
`stratus api-resources`.

Examples:
  # List the services of the current namespace
  stratus get services

  # One service, as YAML (which `stratus apply -f` reads back)
  stratus get service hello -o yaml

  # The revisions of a service, in every namespace, with more columns
  stratus get rev -A -l stratus.dev/service=hello -o wide

  # Instances on one node, then every change to them as it happens
  stratus get instances --field-selector spec.nodeName=node-1 -w

  # Several kinds at once, or objects named kind/name
  stratus get svc,rev
  stratus get svc/hello rev/hello-00001";

#[derive(Debug, Args)]
pub struct GetArgs {
    /// KIND [NAME...], KIND1,KIND2 [NAME...], or KIND/NAME...
    #[arg(value_name = "RESOURCE")]
    pub resources: Vec<String>,

    /// List across all namespaces
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,

    /// Filter by labels, e.g. app=web,tier!=db,env in (a,b)
    #[arg(short = 'l', long, value_name = "SELECTOR")]
    pub selector: Option<String>,

    /// Filter by fields, e.g. spec.nodeName=node-1,status.phase!=Running
    #[arg(long, value_name = "SELECTOR")]
    pub field_selector: Option<String>,

    /// Output format
    #[arg(short = 'o', long, value_name = "FORMAT")]
    pub output: Option<OutputFormat>,

    /// After listing, watch for changes and print them
    #[arg(short = 'w', long)]
    pub watch: bool,

    /// Print tables without their header
    #[arg(long)]
    pub no_headers: bool,

    /// With -o yaml or json, print Secrets' values (otherwise each shows as `<hidden: N bytes>`)
    #[arg(long)]
    pub show_values: bool,
}

#[derive(Debug, Args)]
pub struct TopArgs {
    /// What to show: services (svc), instances (inst) or nodes (no)
    #[arg(value_name = "KIND")]
    pub kind: TopKind,

    /// Show these only (all of the kind when none is named)
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,

    /// Services or instances of every namespace
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,

    /// Instances only: filter by labels, e.g. stratus.dev/service=web
    #[arg(short = 'l', long, value_name = "SELECTOR")]
    pub selector: Option<String>,

    /// Order rows by this column, biggest first (name: alphabetical)
    #[arg(long, value_name = "COLUMN", default_value = "name")]
    pub sort_by: TopSort,

    /// Time between redraws on a terminal
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    pub interval: Duration,

    /// Print once and exit, even on a terminal
    #[arg(long)]
    pub once: bool,

    /// Print tables without their header
    #[arg(long)]
    pub no_headers: bool,
}

/// `stratus top KIND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TopKind {
    #[value(alias = "svc", alias = "service", alias = "ksvc")]
    Services,
    #[value(alias = "inst", alias = "instance")]
    Instances,
    #[value(alias = "no", alias = "node")]
    Nodes,
}

/// `stratus top --sort-by`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TopSort {
    Name,
    Cpu,
    Memory,
    /// Services only: requests per second
    Rps,
}

/// `-o`: how `get` prints objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// The table with more columns
    Wide,
    /// The objects as YAML (a List for several)
    Yaml,
    /// The objects as JSON (a List for several)
    Json,
    /// kind/name of each object
    Name,
}

const DESCRIBE_EXAMPLES: &str = "\
Examples:
  # A service: its template, scaling, traffic, conditions and recent events
  stratus describe service hello

  # Every instance of a revision
  stratus describe instances -l stratus.dev/revision=hello-00001

  # A node
  stratus describe node/node-1";

#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// KIND [NAME...] or KIND/NAME...; without a name, every object of the kind
    #[arg(value_name = "RESOURCE", required = true)]
    pub resources: Vec<String>,

    /// Describe the objects whose labels match, e.g. app=web
    #[arg(short = 'l', long, value_name = "SELECTOR")]
    pub selector: Option<String>,
}

const DELETE_EXAMPLES: &str = "\
Examples:
  # Delete a service (its revisions and instances follow)
  stratus delete service hello

  # Delete what a manifest created
  stratus delete -f manifests/hello.yaml

  # Delete every service labelled app=demo, and do not fail if one is already gone
  stratus delete svc -l app=demo --ignore-not-found";

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// KIND NAME..., or KIND/NAME...
    #[arg(value_name = "RESOURCE", conflicts_with = "filenames")]
    pub resources: Vec<String>,

    /// Delete the objects of a manifest file, a directory of them, or - for stdin (repeatable)
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub filenames: Vec<String>,

    /// Delete the objects of the kind whose labels match
    #[arg(short = 'l', long, value_name = "SELECTOR", conflicts_with = "filenames")]
    pub selector: Option<String>,

    /// Delete every object of the kind in the namespace
    #[arg(long, conflicts_with_all = ["filenames", "selector"])]
    pub all: bool,

    /// Succeed when an object is already gone
    #[arg(long)]
    pub ignore_not_found: bool,
}

const WAIT_EXAMPLES: &str = "\
Exits 0 once every object meets the condition, 1 on timeout. A condition counts only once the
status describes the current spec (status.observedGeneration), so waiting right after an apply
does not return on the previous revision's readiness.

Examples:
  # Wait until a service is ready to serve
  stratus wait service hello --for=condition=Ready --timeout=2m

  # Wait until a revision reports Ready=False
  stratus wait rev/hello-00002 --for=condition=Ready=False

  # Wait until a service is gone
  stratus wait svc hello --for=delete";

#[derive(Debug, Args)]
pub struct WaitArgs {
    /// KIND NAME... or KIND/NAME...
    #[arg(value_name = "RESOURCE", required = true)]
    pub resources: Vec<String>,

    /// condition=TYPE, condition=TYPE=STATUS (STATUS True unless given), or delete
    #[arg(long = "for", value_name = "CONDITION", value_parser = parse_wait_for)]
    pub wait_for: WaitFor,

    /// How long to wait before giving up, e.g. 30s, 2m, 1h30m
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// What `wait --for` waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitFor {
    /// The condition of this type has this status (`True`, `False` or `Unknown`).
    Condition {
        r#type: String,
        status: String,
    },
    Delete,
}

fn parse_wait_for(s: &str) -> Result<WaitFor, String> {
    if s.eq_ignore_ascii_case("delete") {
        return Ok(WaitFor::Delete);
    }
    let Some(rest) = s.strip_prefix("condition=") else {
        return Err(format!("{s:?} is not condition=TYPE, condition=TYPE=STATUS or delete"));
    };
    let (r#type, status) = rest.split_once('=').unwrap_or((rest, "True"));
    if r#type.is_empty() || status.is_empty() {
        return Err(format!("{s:?} is not condition=TYPE or condition=TYPE=STATUS"));
    }
    // Condition statuses are capitalised on the wire; accept any case on the command line.
    let status = match status.to_ascii_lowercase().as_str() {
        "true" => "True",
        "false" => "False",
        "unknown" => "Unknown",
        _ => return Err(format!("the status in {s:?} must be True, False or Unknown")),
    };
    Ok(WaitFor::Condition { r#type: r#type.to_string(), status: status.to_string() })
}

const LOGS_EXAMPLES: &str = "\
KIND is instance (the default; also inst) or service (also svc). The lines of a service's
instances are prefixed with [INSTANCE], the instance that wrote them; with -f, the instances
running when the command starts are followed, not those started later. Ctrl-C ends -f.

Examples:
  # The output of one instance
  stratus logs hello-00001-x7k2p

  # The last 20 lines of every instance of a service, then new lines as they come
  stratus logs service/hello --tail 20 -f

  # An instance in another namespace
  stratus logs inst/worker-00003-a1b2c -n team-a";

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// An instance's NAME, or KIND/NAME: instance/NAME, service/NAME
    #[arg(value_name = "[KIND/]NAME")]
    pub resource: String,

    /// Keep printing new lines as they are written, until Ctrl-C
    #[arg(short = 'f', long)]
    pub follow: bool,

    /// Print only the last N lines of each container [default: all]
    #[arg(long, value_name = "N")]
    pub tail: Option<u64>,
}

const TOP_EXAMPLES: &str = "\
SERVICES: requests per second, median and 99th percentile latency (to response headers) and
requests in flight, over the last complete 5-second slot the gateways reported; instances ready
of all; CPU and memory used by its instances. INSTANCES: CPU and memory each uses, against its
limits. NODES: CPU and memory the instances on each use, against what the node can give.

CPU and memory are sampled by the node agents every few seconds; a node's figures add up its
instances' (the agent's own use is not counted). On a terminal the table is redrawn in place
every --interval until interrupted; otherwise (or with --once) it is printed once.

Examples:
  # Watch the services of the current namespace
  stratus top services

  # The instances of every namespace, biggest CPU users first, printed once
  stratus top instances -A --sort-by cpu --once

  # How full the nodes are
  stratus top nodes";

const BENCH_EXAMPLES: &str = "\
TARGET is a service of the namespace (its status.url is asked of the API) or an http:// URL.
Names under .localhost are loopback: requests go to 127.0.0.1 with the name as Host header.

Open loop (--rate, or a stage such as 30s:100rps): requests are due at fixed times whatever the
answers, and latency runs from when a request was due, so a server (or generator) that falls
behind shows as latency rather than hiding it. Closed loop (--concurrency, or 30s:20c): that many
requests outstanding, each sent when the previous one of its worker is answered. A load of 0 is
idle. Latency percentiles are of answered requests (any status); achieved rate counts 1xx-3xx.
Errors: connect, timeout, 4xx (not 429), 429, 5xx, other (connection lost mid-answer), dropped
(due while --max-in-flight requests were outstanding, never sent).

Progress goes to stderr every second; the summary to stdout. With a service as TARGET, the
timeline also has its ready and desired instances (summed over its revisions). Ctrl-C stops
early and still reports.

Examples:
  # 50 requests per second for 30 seconds to the service hello
  stratus bench hello --rate 50

  # 20 concurrent requests for a minute, each asking the app to take 100 ms
  stratus bench hello -c 20 -d 1m --path '/?sleep_ms=100'

  # Ramp up, hold, go idle, and watch the autoscaler: timeline as JSON and as a chart
  stratus bench hello --stage 30s:10rps --stage 60s:500rps --stage 60s:0 \\
      --out-json bench.json --chart bench.svg

  # Any URL
  stratus bench http://127.0.0.1:8080/health --rate 200 -d 10s";

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// A service name (or service/NAME) of the namespace, or an http:// URL
    #[arg(value_name = "TARGET")]
    pub target: String,

    /// Open loop: send this many requests per second, e.g. 100 or 2.5 [default: 10]
    #[arg(short = 'r', long, value_name = "RPS", value_parser = parse_rate, conflicts_with_all = ["concurrency", "stages"])]
    pub rate: Option<Load>,

    /// Closed loop: keep this many requests outstanding
    #[arg(short = 'c', long, value_name = "N", value_parser = parse_concurrency, conflicts_with = "stages")]
    pub concurrency: Option<Load>,

    /// How long to send --rate or --concurrency, e.g. 30s, 2m
    #[arg(short = 'd', long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration, conflicts_with = "stages")]
    pub duration: Duration,

    /// A stage of DURATION:LOAD, LOAD being a rate (100rps, 100) or a concurrency (20c); 0 is
    /// idle. Repeat for stages one after the other
    #[arg(long = "stage", value_name = "DURATION:LOAD", value_parser = parse_stage)]
    pub stages: Vec<Stage>,

    /// The path and query to request, replacing the URL's, e.g. '/?sleep_ms=100'
    #[arg(long, value_name = "PATH")]
    pub path: Option<String>,

    /// How long a request may take, answer included, before it counts as a timeout
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_positive_duration)]
    pub timeout: Duration,

    /// The most requests outstanding at once; requests due beyond that are dropped
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_in_flight: u32,

    /// Write the timeline (one JSON object per second) to FILE
    #[arg(long, value_name = "FILE")]
    pub out_json: Option<std::path::PathBuf>,

    /// Draw the timeline (load, instances and p99 latency over time) as an SVG chart in FILE
    #[arg(long, value_name = "FILE.svg")]
    pub chart: Option<std::path::PathBuf>,
}

fn parse_rate(s: &str) -> Result<Load, String> {
    match parse_load(s)? {
        Load::Concurrency(_) => Err(format!("{s:?} is a concurrency: use --concurrency, or a rate such as 100")),
        rate => Ok(rate),
    }
}

fn parse_concurrency(s: &str) -> Result<Load, String> {
    let n = s.strip_suffix('c').unwrap_or(s);
    match parse_load(&format!("{n}c")) {
        Ok(load) => Ok(load),
        Err(_) if n.parse::<u64>().is_ok() => Err(format!("concurrency {s} is too high: at most {MAX_CONCURRENCY}")),
        Err(_) => Err(format!("invalid concurrency {s:?}: use a whole number such as 20")),
    }
}

fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err(format!("{s:?} is no time: give more than zero")),
        d => Ok(d),
    }
}

const UP_EXAMPLES: &str = "\
Runs in the foreground until Ctrl-C (or SIGTERM), then stops cleanly; the data stays in the data
directory for the next start.

Traces: with OTEL_EXPORTER_OTLP_ENDPOINT=http://HOST:4317 every request through the gateway,
API call and reconcile is sent as OpenTelemetry spans to that collector (OTEL_TRACES_SAMPLER and
OTEL_TRACES_SAMPLER_ARG choose which; docs/observability.md).

Examples:
  # Start on 127.0.0.1:7070 with the data in ~/.stratus/data
  stratus up

  # Start elsewhere and deploy the example services once the server answers
  stratus up --listen 127.0.0.1:8080 --data-dir /tmp/stratus -f manifests/";

#[derive(Debug, Args)]
pub struct DownArgs {
    /// Only the containers of this node [default: every node's]
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,

    /// Also delete the data directory of `stratus up` (every object stored)
    #[arg(long)]
    pub purge: bool,

    /// The data directory to purge [default: $STRATUS_DATA_DIR, or ~/.stratus/data]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<std::path::PathBuf>,

    /// The Docker engine [default: $DOCKER_HOST, or the local socket]
    #[arg(long, value_name = "URL", env = "DOCKER_HOST")]
    pub docker_host: Option<String>,
}

const DOWN_EXAMPLES: &str = "\
Stopping `stratus up` leaves workloads running, so that the next `stratus up` adopts them;
`stratus down` is how they go away. Stop `stratus up` first.

Examples:
  # Remove every Stratus container
  stratus down

  # ... and forget every object (services, revisions, ...) too
  stratus down --purge
";

#[derive(Debug, Args)]
pub struct UpArgs {
    /// The address to serve the API on
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7070")]
    pub listen: String,

    /// Where the embedded store keeps its data [default: $STRATUS_DATA_DIR, or ~/.stratus/data]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<std::path::PathBuf>,

    /// Manifests to apply once the server answers (a file, a directory, or -; repeatable)
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub filenames: Vec<String>,

    /// Do not run a node agent for this machine (only the control plane)
    #[arg(long)]
    pub no_agent: bool,

    /// Where the gateway serves the services' traffic
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub gateway_listen: String,

    /// Where the gateway serves the services' traffic over HTTPS, with certificates of the
    /// cluster CA (DATA_DIR/pki/ca.crt) for every host under the domain
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8443")]
    pub gateway_https_listen: String,

    /// The domain services are reached under: http://SERVICE.NAMESPACE.DOMAIN
    #[arg(long, value_name = "DOMAIN", env = "STRATUS_DOMAIN", default_value = "localhost")]
    pub domain: String,

    /// The name of this machine's node [default: the hostname]
    #[arg(long, value_name = "NAME", env = "STRATUS_NODE_NAME")]
    pub node_name: Option<String>,

    /// Where the node agent serves its metrics and logs
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7071")]
    pub agent_listen: String,

    /// Where the gateway serves /metrics, /healthz and /readyz (plain HTTP)
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8081")]
    pub gateway_admin_listen: String,

    /// Where the controllers serve /metrics and /healthz (plain HTTP)
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7072")]
    pub controllers_metrics_listen: String,

    /// The Docker engine the agent drives [default: $DOCKER_HOST, or the local socket]
    #[arg(long, value_name = "URL", env = "DOCKER_HOST")]
    pub docker_host: Option<String>,

    /// Run every container as a non-root user, as if each said runAsNonRoot: true
    #[arg(long, env = "STRATUS_REQUIRE_NON_ROOT")]
    pub require_non_root: bool,

    /// The image registry (HOST:PORT, plain HTTP) uploaded images are stored in (`stratus image push`)
    #[arg(long, value_name = "HOST:PORT", env = "STRATUS_REGISTRY", default_value = "127.0.0.1:5000")]
    pub registry: String,
}

const CREATE_EXAMPLES: &str = "\
Examples:
  # A tenant with a quota, a namespace of it, and its first admin (the password is asked for)
  stratus create tenant acme --display-name \"Acme Corp\" --max-cpu 8 --max-memory 16Gi
  stratus create namespace acme-prod --tenant acme
  stratus create user alice --tenant acme --cluster-role tenant-admin

  # Let bob deploy in acme-prod, and every user of acme read it
  stratus create rolebinding deployers -n acme-prod --role developer --user bob
  stratus create rolebinding readers -n acme-prod --role viewer --tenant acme

  # A service account for CI, allowed to deploy, and a token for it
  stratus create serviceaccount ci -n acme-prod
  stratus create rolebinding ci -n acme-prod --role developer --serviceaccount ci
  stratus create token serviceaccount/ci -n acme-prod --duration 24h";

#[derive(Debug, Subcommand)]
pub enum CreateCommand {
    /// Create a tenant: a set of namespaces and users, with a quota
    #[command(after_help = CREATE_TENANT_EXAMPLES)]
    Tenant(CreateTenantArgs),
    /// Create a namespace, in your tenant or another
    #[command(visible_alias = "ns", after_help = CREATE_NAMESPACE_EXAMPLES)]
    Namespace(CreateNamespaceArgs),
    /// Create a user who logs in with a password
    #[command(after_help = CREATE_USER_EXAMPLES)]
    User(CreateUserArgs),
    /// Create a service account: an identity for automation, which logs in with tokens
    #[command(name = "serviceaccount", visible_alias = "sa", after_help = CREATE_SERVICEACCOUNT_EXAMPLES)]
    ServiceAccount(CreateServiceAccountArgs),
    /// Grant a role in a namespace to users, service accounts or every user of a tenant
    #[command(
        name = "rolebinding",
        visible_alias = "rb",
        after_help = CREATE_ROLEBINDING_EXAMPLES,
        override_usage = "stratus create rolebinding NAME --role ROLE (--user NAME | --serviceaccount [NAMESPACE:]NAME | --tenant NAME)... [-n NAMESPACE]"
    )]
    RoleBinding(CreateRoleBindingArgs),
    /// Create a Secret from literal values (`generic`, as kubectl)
    #[command(subcommand, after_help = CREATE_SECRET_EXAMPLES)]
    Secret(CreateSecretCommand),
    /// Print a new token for a service account
    #[command(after_help = CREATE_TOKEN_EXAMPLES, override_usage = "stratus create token [serviceaccount/]NAME [-n NAMESPACE] [--duration DURATION]")]
    Token(CreateTokenArgs),
}

/// `stratus create secret`: the kinds of Secret made from flags.
#[derive(Debug, Subcommand)]
pub enum CreateSecretCommand {
    /// A Secret of literal values
    #[command(after_help = CREATE_SECRET_EXAMPLES)]
    Generic(CreateSecretArgs),
}

const CREATE_SECRET_EXAMPLES: &str = "\
Containers take a value with env: [{name: DB_PASSWORD, valueFrom: {secretKeyRef: {name: db, key: password}}}].
The values are encrypted at rest; `stratus get secret NAME -o yaml --show-values` prints them.

Examples:
  # A Secret db with two keys in the current namespace
  stratus create secret generic db --from-literal=user=app --from-literal=password=s3cr3t";

#[derive(Debug, Args)]
pub struct CreateSecretArgs {
    /// The Secret's name
    pub name: String,

    /// A key and its value, KEY=VALUE (repeat)
    #[arg(long = "from-literal", value_name = "KEY=VALUE", required = true)]
    pub from_literal: Vec<String>,

    /// The Secret's type [default: Opaque]
    #[arg(long = "type", value_name = "TYPE")]
    pub secret_type: Option<String>,
}

const CREATE_TENANT_EXAMPLES: &str = "\
Quotas are for all the tenant's namespaces together; a quota not given is unlimited.

Examples:
  stratus create tenant acme
  stratus create tenant acme --display-name \"Acme Corp\" --max-cpu 8 --max-memory 16Gi --max-instances 50";

#[derive(Debug, Args)]
pub struct CreateTenantArgs {
    /// The tenant's name
    pub name: String,

    /// A name for people, e.g. \"Acme Corp\"
    #[arg(long, value_name = "TEXT")]
    pub display_name: Option<String>,

    /// The most CPU the tenant's instances may request, e.g. 8 or 500m
    #[arg(long, value_name = "QUANTITY", value_parser = parse_quantity)]
    pub max_cpu: Option<String>,

    /// The most memory the tenant's instances may request, e.g. 16Gi
    #[arg(long, value_name = "QUANTITY", value_parser = parse_quantity)]
    pub max_memory: Option<String>,

    /// The most instances the tenant may run
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(0..))]
    pub max_instances: Option<i32>,

    /// The most services the tenant may have
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(0..))]
    pub max_services: Option<i32>,
}

const CREATE_NAMESPACE_EXAMPLES: &str = "\
Examples:
  # A namespace of your own tenant
  stratus create namespace team-a

  # A namespace of the tenant acme (a cluster admin's doing)
  stratus create namespace acme-prod --tenant acme";

#[derive(Debug, Args)]
pub struct CreateNamespaceArgs {
    /// The namespace's name
    pub name: String,

    /// The tenant it belongs to [default: yours]
    #[arg(long, value_name = "TENANT")]
    pub tenant: Option<String>,
}

const CREATE_USER_EXAMPLES: &str = "\
The password is asked for twice at the terminal, or read from the first line of stdin with
--password-stdin; it must have at least 8 characters. The user logs in with `stratus login`.
Roles in a namespace are granted with `stratus create rolebinding`.

Examples:
  # A user of your own tenant
  stratus create user bob

  # The admin of the tenant acme, the password taken from a file
  stratus create user alice --tenant acme --cluster-role tenant-admin --password-stdin < alice.pw";

#[derive(Debug, Args)]
pub struct CreateUserArgs {
    /// The user's name, which they log in with
    pub name: String,

    /// The tenant the user belongs to [default: yours]
    #[arg(long, value_name = "TENANT")]
    pub tenant: Option<String>,

    /// A role over more than one namespace: tenant-admin (every namespace of the tenant) or
    /// cluster-admin (everything) [default: none]
    #[arg(long, value_name = "ROLE", value_parser = clap::builder::PossibleValuesParser::new(roles::USER_CLUSTER))]
    pub cluster_role: Option<String>,

    /// A name for people, e.g. \"Alice Martin\"
    #[arg(long, value_name = "TEXT")]
    pub display_name: Option<String>,

    /// Read the password from the first line of stdin instead of asking
    #[arg(long)]
    pub password_stdin: bool,
}

const CREATE_SERVICEACCOUNT_EXAMPLES: &str = "\
Examples:
  # A service account for CI in the namespace acme-prod; grant it a role with a rolebinding
  stratus create serviceaccount ci -n acme-prod

  # One that administers every namespace of its namespace's tenant
  stratus create serviceaccount provisioner -n acme-ops --cluster-role tenant-admin";

#[derive(Debug, Args)]
pub struct CreateServiceAccountArgs {
    /// The service account's name
    pub name: String,

    /// A role over more than one namespace: tenant-admin, cluster-admin, or a component's
    /// (system:controllers, system:gateway, system:agent) [default: none]
    #[arg(long, value_name = "ROLE", value_parser = clap::builder::PossibleValuesParser::new(roles::ACCOUNT_CLUSTER))]
    pub cluster_role: Option<String>,

    /// For system:agent: the node the agent is
    #[arg(long, value_name = "NODE")]
    pub node: Option<String>,
}

const CREATE_ROLEBINDING_EXAMPLES: &str = "\
Roles: viewer (read workloads and their logs), developer (a viewer who also deploys services),
admin (a developer who also manages role bindings and service accounts), invoker (calls private
services through the gateway). Subjects may be repeated and mixed.

Examples:
  # bob and carol deploy in acme-prod
  stratus create rolebinding deployers -n acme-prod --role developer --user bob --user carol

  # Every user of the tenant acme reads acme-prod
  stratus create rolebinding readers -n acme-prod --role viewer --tenant acme

  # The service account ci of the namespace acme-ci deploys in acme-prod
  stratus create rolebinding ci -n acme-prod --role developer --serviceaccount acme-ci:ci";

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("subjects").required(true).multiple(true))]
pub struct CreateRoleBindingArgs {
    /// The role binding's name
    pub name: String,

    /// The role granted in the namespace
    #[arg(long, value_name = "ROLE", value_parser = clap::builder::PossibleValuesParser::new(roles::NAMESPACED))]
    pub role: String,

    /// A user to grant the role to (repeatable)
    #[arg(long = "user", value_name = "NAME", group = "subjects")]
    pub users: Vec<String>,

    /// A service account to grant the role to, NAME of the binding's namespace or
    /// NAMESPACE:NAME (repeatable)
    #[arg(long = "serviceaccount", value_name = "[NAMESPACE:]NAME", group = "subjects", value_parser = parse_service_account)]
    pub service_accounts: Vec<(Option<String>, String)>,

    /// A tenant whose every user gets the role (repeatable)
    #[arg(long = "tenant", value_name = "NAME", group = "subjects")]
    pub tenants: Vec<String>,
}

const CREATE_TOKEN_EXAMPLES: &str = "\
Prints only the token, for scripts: present it with STRATUS_TOKEN, or as `Authorization: Bearer`.
Needs the admin role in the service account's namespace.

Examples:
  # A token for the service account ci, valid for an hour
  stratus create token serviceaccount/ci -n acme-prod

  # ... for a day, used by the next command
  STRATUS_TOKEN=$(stratus create token sa/ci -n acme-prod --duration 24h) stratus get svc -n acme-prod

  # A bootstrap token for joining three nodes within the next two hours
  stratus create token --bootstrap --ttl 2h --uses 3";

#[derive(Debug, Args)]
pub struct CreateTokenArgs {
    /// The service account: NAME, or serviceaccount/NAME
    #[arg(value_name = "[serviceaccount/]NAME", required_unless_present = "bootstrap", conflicts_with = "bootstrap")]
    pub service_account: Option<String>,

    /// How long the token lasts, e.g. 30m, 24h [default: 1h]
    #[arg(long, visible_alias = "ttl", value_name = "DURATION", value_parser = parse_positive_duration)]
    pub duration: Option<Duration>,

    /// A bootstrap token instead, for joining nodes (`stratus-agent --join … --token …`);
    /// cluster admins only. It is good only for getting a node's certificate.
    #[arg(long)]
    pub bootstrap: bool,

    /// With --bootstrap: how many nodes may join with it [default: 1]
    #[arg(long, value_name = "N", requires = "bootstrap")]
    pub uses: Option<u32>,

    /// With --bootstrap: print the whole `stratus-agent --join …` command, with the CA's pin
    /// (--ca-cert-hash, from the context's certificate authority), instead of the token alone
    #[arg(long, requires = "bootstrap")]
    pub print_join_command: bool,
}

/// `--serviceaccount`: `NAME` (of the binding's namespace) or `NAMESPACE:NAME`.
fn parse_service_account(s: &str) -> Result<(Option<String>, String), String> {
    let (namespace, name) = match s.split_once(':') {
        Some((ns, name)) => (Some(ns.to_string()), name),
        None => (None, s),
    };
    if name.is_empty() || name.contains(':') || namespace.as_deref() == Some("") {
        return Err(format!("{s:?} is not NAME or NAMESPACE:NAME"));
    }
    Ok((namespace, name.to_string()))
}

/// A quantity such as `500m`, `8` or `16Gi`, checked here so that a typo is told before the
/// server is asked.
fn parse_quantity(s: &str) -> Result<String, String> {
    match s.parse::<stratus_api::quantity::Quantity>() {
        Ok(q) if q.is_negative() || q.is_zero() => Err(format!("{s:?} must be greater than zero")),
        Ok(_) => Ok(s.to_string()),
        Err(e) => Err(format!("{s:?} is not a quantity such as 500m, 8 or 16Gi: {e}")),
    }
}

const LOGIN_EXAMPLES: &str = "\
The password is asked for at the terminal, or read from the first line of stdin with
--password-stdin. The token is kept in the current context of the config file if it is for that
server, else in a context named after the server, which becomes the current one. Tokens of users
last 12 hours. `stratus up` logs in as admin by itself.

Examples:
  # Log in to the local control plane
  stratus login --username admin

  # Log in to a remote one, the password from a file
  stratus login --server https://stratus.example.com:7070 -u alice --password-stdin < alice.pw";

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The user to log in as [default: the current context's user]
    #[arg(short = 'u', long, value_name = "NAME")]
    pub username: Option<String>,

    /// Read the password from the first line of stdin instead of asking
    #[arg(long)]
    pub password_stdin: bool,
}

const LOGOUT_EXAMPLES: &str = "\
The token is deleted from the config file; a copy kept elsewhere stays valid until it expires.

Examples:
  stratus logout";

const WHOAMI_EXAMPLES: &str = "\
Examples:
  stratus whoami
  stratus whoami -o json";

#[derive(Debug, Args)]
pub struct WhoamiArgs {
    /// Print as JSON or YAML instead of a table
    #[arg(short = 'o', long, value_name = "FORMAT")]
    pub output: Option<DataFormat>,
}

const BILLING_EXAMPLES: &str = "\
Usage is billed as Cloud Run bills it: vCPU-seconds and GiB-seconds rounded up to 100 ms, and
requests (request-based billing, the default), or the instance's whole life with no request fee
(instance-based: cpuThrottling false); a free tier per tenant and period. Amounts are printed
exactly as the invoice holds them. Without --tenant, your own tenant's (see `stratus whoami`).

Examples:
  # What your services used in the last day, hour by hour
  stratus billing usage --since 24h

  # The running period's invoice, line by line, and as CSV for a spreadsheet
  stratus billing invoice --current
  stratus billing invoice --current -o csv > invoice.csv

  # Every invoice of tenant acme (cluster admins)
  stratus billing invoices --tenant acme

  # How much of each budget is spent
  stratus billing budgets

  # Recompute acme's December invoice from the raw usage reports (cluster admins)
  stratus billing recount --period 2026-12 --tenant acme";

const BILLING_USAGE_EXAMPLES: &str = "\
Each row is one ledger entry: one service's usage in one billing mode during one hour (late reports
of closed hours are folded into a later hour as adjustments). The last row sums them.

Examples:
  # The last day
  stratus billing usage --since 24h

  # Since the start of December, as JSON
  stratus billing usage --since 2026-12-01T00:00:00Z -o json";

const BILLING_INVOICES_EXAMPLES: &str = "\
Examples:
  # Your tenant's invoices, newest period first
  stratus billing invoices

  # Tenant acme's (cluster admins)
  stratus billing invoices --tenant acme -o json";

const BILLING_INVOICE_EXAMPLES: &str = "\
The running period's invoice is preliminary (phase Open) and rewritten as usage arrives; it
becomes Final once the period is over. Amounts are exact; only the total is rounded.

Examples:
  # This period's invoice so far
  stratus billing invoice --current

  # A past invoice, for a spreadsheet
  stratus billing invoice acme.2026-11 -o csv > acme-2026-11.csv";

const BILLING_BUDGETS_EXAMPLES: &str = "\
Budgets are made with `stratus apply` (kind Budget: spec.amount, spec.thresholds in percent, an
optional signed webhook); crossing a threshold emits one Event.

Examples:
  # How much of each budget is spent in this period
  stratus billing budgets";

const BILLING_RECOUNT_EXAMPLES: &str = "\
Sums every UsageReport of the period (reports folded into a later hour count in that hour's
period) per service and mode, prices them with the PriceList \"default\" and compares the result
with the invoice, line by line. Exits 1 when anything differs.

Examples:
  # Check acme's December invoice
  stratus billing recount --period 2026-12 --tenant acme

  # Check every tenant's
  stratus billing recount --period 2026-12";

/// `stratus billing`: usage, invoices and budgets of a tenant.
#[derive(Debug, Subcommand)]
pub enum BillingCommand {
    /// The metered usage (ledger entries) per service, billing mode and hour, newest first, with totals
    #[command(
        after_help = BILLING_USAGE_EXAMPLES,
        override_usage = "stratus billing usage [--tenant TENANT] [--since DURATION|RFC3339] [-o table|json]"
    )]
    Usage(BillingUsageArgs),
    /// The invoices of a tenant: period, phase (Open or Final), total and currency
    #[command(after_help = BILLING_INVOICES_EXAMPLES, override_usage = "stratus billing invoices [--tenant TENANT] [-o table|json]")]
    Invoices(BillingListArgs),
    /// One invoice's lines (service, mode, item, quantity, unit, unit price, amount), subtotal,
    /// free tier and total
    #[command(
        after_help = BILLING_INVOICE_EXAMPLES,
        override_usage = "stratus billing invoice (NAME | --current) [--tenant TENANT] [-o table|json|csv]"
    )]
    Invoice(BillingInvoiceArgs),
    /// Each budget with its amount, what is spent, the percentage used and the thresholds crossed
    #[command(after_help = BILLING_BUDGETS_EXAMPLES, override_usage = "stratus billing budgets [--tenant TENANT] [-o table|json]")]
    Budgets(BillingListArgs),
    /// Recompute a period's invoices from the usage reports and compare them (cluster admins);
    /// exits 1 when they differ
    #[command(after_help = BILLING_RECOUNT_EXAMPLES, override_usage = "stratus billing recount --period PERIOD [--tenant TENANT]")]
    Recount(BillingRecountArgs),
}

#[derive(Debug, Args)]
pub struct BillingUsageArgs {
    /// The tenant [default: yours]
    #[arg(long, value_name = "TENANT")]
    pub tenant: Option<String>,
    /// Only hours from this long ago (e.g. 24h, 90m) or since this time (RFC 3339, e.g. 2026-12-01T00:00:00Z)
    #[arg(long, value_name = "DURATION|RFC3339")]
    pub since: Option<String>,
    /// Output format
    #[arg(short = 'o', long, value_name = "FORMAT", default_value = "table")]
    pub output: BillingFormat,
}

#[derive(Debug, Args)]
pub struct BillingListArgs {
    /// The tenant [default: yours]
    #[arg(long, value_name = "TENANT")]
    pub tenant: Option<String>,
    /// Output format
    #[arg(short = 'o', long, value_name = "FORMAT", default_value = "table")]
    pub output: BillingFormat,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("which").required(true).args(["name", "current"]))]
pub struct BillingInvoiceArgs {
    /// The invoice, named TENANT.PERIOD (e.g. acme.2026-12)
    #[arg(value_name = "NAME")]
    pub name: Option<String>,
    /// The invoice of the running period (preliminary until the period ends)
    #[arg(long)]
    pub current: bool,
    /// The tenant, with --current [default: yours]
    #[arg(long, value_name = "TENANT")]
    pub tenant: Option<String>,
    /// Output format
    #[arg(short = 'o', long, value_name = "FORMAT", default_value = "table")]
    pub output: InvoiceFormat,
}

#[derive(Debug, Args)]
pub struct BillingRecountArgs {
    /// The period, as in invoice names: 2026-12 for a calendar month
    #[arg(long, value_name = "PERIOD")]
    pub period: String,
    /// Only this tenant [default: every tenant with usage or an invoice in the period]
    #[arg(long, value_name = "TENANT")]
    pub tenant: Option<String>,
}

/// `-o` of the billing commands that print tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BillingFormat {
    Table,
    Json,
}

/// `-o` of `stratus billing invoice`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InvoiceFormat {
    Table,
    Json,
    /// One line per invoice line, then the subtotal, free tier and total
    Csv,
}

/// `-o` of commands that print one record rather than objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DataFormat {
    Json,
    Yaml,
}

const AUTH_EXAMPLES: &str = "\
Examples:
  # May I deploy services in acme-prod?
  stratus auth can-i create services -n acme-prod

  # The token this CLI presents, for curl
  curl -H \"Authorization: Bearer $(stratus auth print-access-token)\" \\
      http://127.0.0.1:7070/apis/stratus.dev/v1/namespaces/default/services";

#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Ask whether you may do VERB on a kind of object (or one object): prints yes or no, and
    /// exits 0 or 1
    #[command(after_help = CAN_I_EXAMPLES, override_usage = "stratus auth can-i VERB KIND[/NAME] [-n NAMESPACE | -A] [-q]")]
    CanI(CanIArgs),
    /// Print the token this CLI presents: $STRATUS_TOKEN, else the current context's
    #[command(after_help = PRINT_ACCESS_TOKEN_EXAMPLES)]
    PrintAccessToken,
}

const CAN_I_EXAMPLES: &str = "\
Verbs: get, list, watch, create, update, patch, delete, logs, invoke, create-token. When the
answer is no, the reason is printed on stderr.

Examples:
  # May I create services in the current namespace?
  stratus auth can-i create services

  # May I delete the service hello in team-a?
  stratus auth can-i delete service/hello -n team-a

  # May I list services in every namespace? (in a script: only the exit code)
  stratus auth can-i list services -A -q && echo yes";

#[derive(Debug, Args)]
pub struct CanIArgs {
    /// get, list, watch, create, update, patch, delete, logs, invoke, create-token
    pub verb: String,

    /// KIND, or KIND/NAME for one object
    #[arg(value_name = "KIND[/NAME]")]
    pub resource: String,

    /// Ask about every namespace
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,

    /// Print nothing; answer with the exit code only
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

const PRINT_ACCESS_TOKEN_EXAMPLES: &str = "\
Examples:
  stratus auth print-access-token
  export STRATUS_TOKEN=$(stratus auth print-access-token)";

const CONFIG_EXAMPLES: &str = "\
The config file is ~/.stratus/config, or $STRATUS_CONFIG.

Examples:
  # Add a context for a remote control plane, with team-a as its namespace, and use it
  stratus config set-context prod --server http://stratus.example.com:7070 -n team-a
  stratus config use-context prod

  # List the contexts; the current one is starred
  stratus config get-contexts";

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// List the contexts; the current one is starred
    #[command(after_help = "Examples:\n  stratus config get-contexts")]
    GetContexts,
    /// Print the name of the current context
    #[command(after_help = "Examples:\n  stratus config current-context")]
    CurrentContext,
    /// Make a context the current one
    #[command(after_help = "Examples:\n  stratus config use-context prod")]
    UseContext {
        /// The context's name
        name: String,
    },
    /// Create a context, or change one: its server is set with --server, its namespace with -n
    #[command(after_help = "Examples:\n  \
        # A context for a remote control plane, working in namespace team-a\n  \
        stratus config set-context prod --server http://stratus.example.com:7070 -n team-a\n\n  \
        # Change only the namespace of an existing context\n  \
        stratus config set-context prod -n team-b")]
    SetContext {
        /// The context's name
        name: String,
    },
    /// Remove a context
    #[command(after_help = "Examples:\n  stratus config delete-context prod")]
    DeleteContext {
        /// The context's name
        name: String,
    },
    /// Print the config file, tokens replaced by REDACTED unless --raw
    #[command(after_help = "Examples:\n  stratus config view\n  stratus config view --raw")]
    View {
        /// Print the tokens too
        #[arg(long)]
        raw: bool,
    },
}

const API_RESOURCES_EXAMPLES: &str = "\
Examples:
  stratus api-resources";

const COMPLETION_EXAMPLES: &str = "\
Examples:
  # bash: load in this shell, or install for every new one
  source <(stratus completion bash)
  stratus completion bash > ~/.local/share/bash-completion/completions/stratus

  # zsh
  stratus completion zsh > \"${fpath[1]}/_stratus\"

  # fish
  stratus completion fish > ~/.config/fish/completions/stratus.fish";

#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell to complete for
    pub shell: Shell,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn wait_for_takes_conditions_and_delete() {
        let cond = |t: &str, s: &str| WaitFor::Condition { r#type: t.into(), status: s.into() };
        assert_eq!(parse_wait_for("condition=Ready").unwrap(), cond("Ready", "True"));
        assert_eq!(parse_wait_for("condition=Ready=false").unwrap(), cond("Ready", "False"));
        assert_eq!(parse_wait_for("delete").unwrap(), WaitFor::Delete);
        for bad in ["ready", "condition=", "condition==True", "condition=Ready=maybe"] {
            assert!(parse_wait_for(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn global_flags_go_anywhere() {
        let cli = Cli::try_parse_from(["stratus", "get", "svc", "-n", "team", "--server", "http://s:1"]).unwrap();
        assert_eq!(cli.namespace.as_deref(), Some("team"));
        assert_eq!(cli.server.as_deref(), Some("http://s:1"));
        let cli =
            Cli::try_parse_from(["stratus", "-n", "team", "config", "set-context", "dev", "--server", "http://d"])
                .unwrap();
        assert_eq!(cli.namespace.as_deref(), Some("team"));
        assert!(matches!(cli.command, Command::Config(ConfigCommand::SetContext { ref name }) if name == "dev"));
        assert_eq!(cli.server.as_deref(), Some("http://d"));
    }

    #[test]
    fn timeouts_parse_as_durations() {
        let cli = Cli::try_parse_from(["stratus", "wait", "svc", "a", "--for=delete", "--timeout=1h30m"]).unwrap();
        let Command::Wait(w) = cli.command else { panic!("not wait") };
        assert_eq!(w.timeout, Duration::from_secs(5400));
        assert!(Cli::try_parse_from(["stratus", "wait", "svc", "a", "--for=delete", "--timeout=soon"]).is_err());
    }

    #[test]
    fn login_takes_the_server_and_user_and_where_the_password_comes_from() {
        let cli =
            Cli::try_parse_from(["stratus", "login", "--server", "http://s:1", "-u", "alice", "--password-stdin"])
                .unwrap();
        assert_eq!(cli.server.as_deref(), Some("http://s:1"));
        let Command::Login(args) = cli.command else { panic!("not login") };
        assert_eq!((args.username.as_deref(), args.password_stdin), (Some("alice"), true));
        let Command::Login(args) = Cli::try_parse_from(["stratus", "login"]).unwrap().command else { panic!() };
        assert_eq!((args.username, args.password_stdin), (None, false));
    }

    #[test]
    fn a_role_binding_takes_subjects_of_every_kind_and_needs_one() {
        let argv = [
            "stratus",
            "create",
            "rolebinding",
            "rb",
            "-n",
            "team",
            "--role",
            "developer",
            "--user",
            "alice",
            "--serviceaccount",
            "ops:ci",
            "--serviceaccount",
            "deployer",
            "--tenant",
            "acme",
            "--user",
            "bob",
        ];
        let cli = Cli::try_parse_from(argv).unwrap();
        assert_eq!(cli.namespace.as_deref(), Some("team"));
        let Command::Create(CreateCommand::RoleBinding(rb)) = cli.command else { panic!("not a rolebinding") };
        assert_eq!(rb.role, "developer");
        assert_eq!(rb.users, ["alice", "bob"]);
        assert_eq!(rb.service_accounts, [(Some("ops".to_string()), "ci".to_string()), (None, "deployer".to_string())]);
        assert_eq!(rb.tenants, ["acme"]);
        // `rb` is the short name, as for `get`.
        assert!(Cli::try_parse_from(["stratus", "create", "rb", "x", "--role", "viewer", "--tenant", "t"]).is_ok());
        for bad in [
            &["stratus", "create", "rolebinding", "rb", "--role", "viewer"][..],
            &["stratus", "create", "rolebinding", "rb", "--role", "owner", "--user", "a"],
            &["stratus", "create", "rolebinding", "rb", "--user", "a"],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn service_accounts_are_name_or_namespace_colon_name() {
        assert_eq!(parse_service_account("ci").unwrap(), (None, "ci".into()));
        assert_eq!(parse_service_account("ops:ci").unwrap(), (Some("ops".into()), "ci".into()));
        for bad in ["", ":ci", "ops:", "a:b:c"] {
            assert!(parse_service_account(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn create_flags_are_checked_before_anything_is_sent() {
        let parse = |args: &[&str]| Cli::try_parse_from([&["stratus", "create"][..], args].concat());
        let cli = parse(&["token", "sa/ci", "--duration", "1h30m"]).unwrap();
        let Command::Create(CreateCommand::Token(t)) = cli.command else { panic!("not a token") };
        assert_eq!(t.duration, Some(Duration::from_secs(5400)));
        assert!(parse(&["token", "sa/ci", "--duration", "0"]).is_err());
        let cli =
            parse(&["tenant", "acme", "--max-cpu", "500m", "--max-memory", "16Gi", "--max-instances", "0"]).unwrap();
        let Command::Create(CreateCommand::Tenant(t)) = cli.command else { panic!("not a tenant") };
        assert_eq!(
            (t.max_cpu.as_deref(), t.max_memory.as_deref(), t.max_instances),
            (Some("500m"), Some("16Gi"), Some(0))
        );
        for bad in [
            &["tenant", "t", "--max-cpu", "lots"][..],
            &["tenant", "t", "--max-memory", "0"],
            &["tenant", "t", "--max-services", "-1"],
            &["user", "u", "--cluster-role", "system:agent"],
            &["serviceaccount", "sa", "--cluster-role", "root"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert!(parse(&["sa", "agent", "--cluster-role", "system:agent", "--node", "n1"]).is_ok());
        assert!(parse(&["ns", "team", "--tenant", "acme"]).is_ok());
    }

    #[test]
    fn can_i_takes_a_verb_and_a_kind_or_object() {
        let cli = Cli::try_parse_from(["stratus", "auth", "can-i", "delete", "svc/hello", "-n", "team", "-q"]).unwrap();
        assert_eq!(cli.namespace.as_deref(), Some("team"));
        let Command::Auth(AuthCommand::CanI(c)) = cli.command else { panic!("not can-i") };
        assert_eq!(
            (c.verb.as_str(), c.resource.as_str(), c.all_namespaces, c.quiet),
            ("delete", "svc/hello", false, true)
        );
        assert!(Cli::try_parse_from(["stratus", "auth", "can-i", "list"]).is_err());
        let cli = Cli::try_parse_from(["stratus", "whoami", "-o", "yaml"]).unwrap();
        assert!(matches!(cli.command, Command::Whoami(WhoamiArgs { output: Some(DataFormat::Yaml) })));
    }

    #[test]
    fn every_command_has_examples_in_its_help() {
        let mut cli = Cli::command();
        cli.build();
        // clap's own `help` command, and its children (`stratus help apply`), have none.
        let ours = || cli.get_subcommands().filter(|s| s.get_name() != "help");
        let commands = ours().chain(ours().flat_map(|s| s.get_subcommands())).filter(|s| s.get_name() != "help");
        for sub in commands {
            let help = sub.get_after_help().map(|h| h.to_string()).unwrap_or_default();
            assert!(help.contains("  stratus "), "{} has no examples", sub.get_name());
        }
    }
}

const IMAGE_EXAMPLES: &str = "\
An uploaded image is stored in the cluster's registry as REGISTRY/NAMESPACE/NAME:TAG; deploy it
by that name. No registry of your own is needed.

Examples:
  # Upload an image of the local Docker engine (runs `docker save` and streams its output)
  stratus image push my-app:v1

  # Upload an archive made earlier, under another name and tag, into namespace team-a
  docker save -o app.tar my-app:v1
  stratus image push app.tar --name web --tag 2024-06 -n team-a

  # The namespace's images, and deploying one
  stratus image list
  stratus apply -f - <<EOF
  apiVersion: stratus.dev/v1
  kind: Service
  metadata: {name: web}
  spec: {template: {spec: {containers: [{image: 127.0.0.1:5000/default/web:2024-06}]}}}
  EOF";

/// `stratus image`: uploaded images.
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Upload a `docker save` archive (a FILE), or an IMAGE of the local Docker engine, to the
    /// cluster's registry under the namespace; progress goes to stderr
    #[command(
        after_help = IMAGE_PUSH_EXAMPLES,
        override_usage = "stratus image push (FILE | IMAGE) [--name NAME] [--tag TAG] [-n NAMESPACE]"
    )]
    Push(ImagePushArgs),
    /// The images uploaded to the namespace: name, tag, image reference and digest
    #[command(after_help = IMAGE_LIST_EXAMPLES, override_usage = "stratus image list [-n NAMESPACE] [-o table|json]")]
    List(ImageListArgs),
}

const IMAGE_PUSH_EXAMPLES: &str = "\
FILE is a tar archive as `docker save` writes it (either layout: the classic one or the OCI one
of Docker 25 and later); anything that is not an existing file is taken for an IMAGE of the local
engine, sent through `docker save IMAGE` without a file in between. NAME and TAG default to the
archive's own (its first RepoTags entry: 127.0.0.1:5000/hello:v1 is stored as hello:v1).

Examples:
  stratus image push hello.tar
  stratus image push 127.0.0.1:5000/hello:v1 --name hello --tag v1 -n team-a";

const IMAGE_LIST_EXAMPLES: &str = "\
Examples:
  # The images uploaded to the current namespace, and to team-a as JSON
  stratus image list
  stratus image list -n team-a -o json";

#[derive(Debug, Args)]
pub struct ImagePushArgs {
    /// A `docker save` archive, or an image of the local Docker engine
    #[arg(value_name = "FILE|IMAGE")]
    pub source: String,
    /// The name to store the image under [default: the archive's]
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// The tag to store the image under [default: the archive's, or latest]
    #[arg(long, value_name = "TAG")]
    pub tag: Option<String>,
}

#[derive(Debug, Args)]
pub struct ImageListArgs {
    /// Output format
    #[arg(short = 'o', long, value_name = "FORMAT", default_value = "table", value_parser = ["table", "json"])]
    pub output: String,
}
