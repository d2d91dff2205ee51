//! `stratus top services|instances|nodes`: live traffic and resource use, as `kubectl top`
//! shows pods and nodes, redrawn in place on a terminal.
//!
//! Traffic (requests per second, latency, requests in flight) is the API server's
//! `TrafficMetrics.ListServiceTraffic`: the last complete slot of what the gateways report.
//! CPU and memory are the `status.usage` the node agents sample into each Instance; a node's
//! use is the sum of its instances'.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::time::Duration;

use stratus_api::Resource;
use stratus_api::v1::{Instance, Node, ResourceUsage, Service, ServiceTraffic};
use stratus_client::ListParams;

use super::Ctx;
use crate::allocation::{self, Allocatable};
use crate::args::{TopArgs, TopKind, TopSort};
use crate::error::{Error, Result};
use crate::{Io, table};

/// The shortest `--interval`: a redraw costs the server a few lists.
const MIN_INTERVAL: Duration = Duration::from_millis(500);
/// A usage sample older than this is not shown: its agent stopped reporting.
const STALE_USAGE_SECONDS: i64 = 120;

pub(crate) async fn run(ctx: &Ctx, args: TopArgs, io: &mut Io) -> Result<()> {
    check(&args)?;
    let redraw = io.out_is_terminal && !args.once;
    let mut drawn = false;
    loop {
        let text = match render(ctx, &args).await {
            Ok(text) => text,
            // A redraw that fails (a server restarting) says so in place and tries again; the
            // first one fails the command, as any other command's request would.
            Err(e) if drawn => format!("error: {e}\n"),
            Err(e) => return Err(e),
        };
        if !redraw {
            io.out.write_all(text.as_bytes())?;
            return Ok(());
        }
        let now =
            crate::format::rfc3339(&stratus_api::Timestamp { seconds: stratus_api::time::now_seconds(), nanos: 0 });
        // Home, clear to the end of the screen, then the table: no flicker of an empty screen.
        write!(io.out, "\x1b[H\x1b[2JEvery {}: stratus top   {now}\n\n{text}", humantime(args.interval))?;
        io.out.flush()?;
        drawn = true;
        tokio::time::sleep(args.interval).await;
    }
}

fn check(args: &TopArgs) -> Result<()> {
    if args.interval < MIN_INTERVAL {
        return Err(Error::Usage(format!("--interval {:?} is too short: at least {MIN_INTERVAL:?}", args.interval)));
    }
    if args.selector.is_some() && args.kind != TopKind::Instances {
        return Err(Error::Usage("-l/--selector applies to `stratus top instances` only".into()));
    }
    if args.sort_by == TopSort::Rps && args.kind != TopKind::Services {
        return Err(Error::Usage("--sort-by rps applies to `stratus top services` only".into()));
    }
    Ok(())
}

fn humantime(d: Duration) -> String {
    if d.subsec_millis() == 0 { format!("{}s", d.as_secs()) } else { format!("{}ms", d.as_millis()) }
}

/// One table of `args.kind`, as text.
async fn render(ctx: &Ctx, args: &TopArgs) -> Result<String> {
    let (header, mut rows) = match args.kind {
        TopKind::Services => services(ctx, args).await?,
        TopKind::Instances => instances(ctx, args).await?,
        TopKind::Nodes => nodes(ctx, args).await?,
    };
    let info = match args.kind {
        TopKind::Services => Service::INFO,
        TopKind::Instances => Instance::INFO,
        TopKind::Nodes => Node::INFO,
    };
    if !args.names.is_empty() {
        let shown: BTreeSet<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        if let Some(missing) = args.names.iter().find(|n| !shown.contains(n.as_str())) {
            return Err(ctx.not_found(&info, missing));
        }
    } else if rows.is_empty() {
        let scope = if info.namespaced && !args.all_namespaces {
            format!(" in {} namespace", ctx.namespace.name)
        } else {
            String::new()
        };
        return Ok(format!("No resources found{scope}.\n"));
    }
    rows.sort_by(|a, b| order(args.sort_by, a, b));
    let with_namespace = info.namespaced && args.all_namespaces;
    let mut head: Vec<String> = header.iter().map(|h| (*h).to_string()).collect();
    if with_namespace {
        head.insert(0, "NAMESPACE".into());
    }
    let cells: Vec<Vec<String>> = rows
        .into_iter()
        .map(|r| {
            let mut cells = vec![r.name];
            cells.extend(r.cells);
            if with_namespace {
                cells.insert(0, r.namespace);
            }
            cells
        })
        .collect();
    Ok(table::render(&head, &cells, args.no_headers))
}

/// One row, with what it is sorted by.
#[derive(Debug, Default)]
struct Row {
    namespace: String,
    name: String,
    /// The cells after the name.
    cells: Vec<String>,
    cpu_millis: i64,
    memory_bytes: i64,
    rps: f64,
}

fn order(by: TopSort, a: &Row, b: &Row) -> Ordering {
    let by_name = (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name));
    let biggest_first = match by {
        TopSort::Name => Ordering::Equal,
        TopSort::Cpu => b.cpu_millis.cmp(&a.cpu_millis),
        TopSort::Memory => b.memory_bytes.cmp(&a.memory_bytes),
        TopSort::Rps => b.rps.total_cmp(&a.rps),
    };
    biggest_first.then(by_name)
}

/// An Instance's latest usage sample, unless it is stale or its instance has finished.
fn usage(inst: &Instance, now: i64) -> Option<&ResourceUsage> {
    let status = inst.status.as_ref()?;
    if matches!(status.phase.as_str(), "Succeeded" | "Failed") {
        return None;
    }
    let usage = status.usage.as_ref()?;
    let sampled = usage.sampled_at.as_ref()?.seconds;
    (now - sampled <= STALE_USAGE_SECONDS).then_some(usage)
}

/// Whether `inst` still counts: not finished.
fn live(inst: &Instance) -> bool {
    !inst.status.as_ref().is_some_and(|s| matches!(s.phase.as_str(), "Succeeded" | "Failed"))
}

/// CPU as `kubectl top` writes it: millicores (`12m`).
fn cpu(millis: i64) -> String {
    format!("{millis}m")
}

/// Memory as `kubectl top` writes it: mebibytes, rounded down (`14Mi`); kibibytes below one
/// (`412Ki`), so that a small process does not read as using nothing.
fn memory(bytes: i64) -> String {
    if bytes >= 1024 * 1024 { format!("{}Mi", bytes / (1024 * 1024)) } else { format!("{}Ki", bytes / 1024) }
}

fn percent(used: i64, of: Option<i128>) -> String {
    allocation::percent(i128::from(used), of).map_or_else(|| "-".into(), |p| format!("{p}%"))
}

/// Milliseconds as a latency: `0.8ms`, `12ms`, `1.25s`; `-` when nothing was answered.
fn latency(ms: Option<f64>) -> String {
    match ms {
        None => "-".into(),
        Some(ms) if ms < 10.0 => format!("{ms:.1}ms"),
        Some(ms) if ms < 1000.0 => format!("{ms:.0}ms"),
        Some(ms) => format!("{:.2}s", ms / 1000.0),
    }
}

fn instance_params(ctx: &Ctx, args: &TopArgs) -> ListParams {
    ListParams {
        namespace: if args.all_namespaces { String::new() } else { ctx.namespace.name.clone() },
        label_selector: args.selector.clone().unwrap_or_default(),
        ..Default::default()
    }
}

/// What the instances of one Service add up to.
#[derive(Default)]
struct Totals {
    ready: u32,
    live: u32,
    cpu_millis: i64,
    memory_bytes: i64,
}

async fn services(ctx: &Ctx, args: &TopArgs) -> Result<(&'static [&'static str], Vec<Row>)> {
    let namespace = if args.all_namespaces { "" } else { ctx.namespace.name.as_str() };
    let traffic = ctx.client.service_traffic(namespace).await?;
    let instances = ctx.client.list_all::<Instance>(&instance_params(ctx, args)).await?;
    let now = stratus_api::time::now_seconds();
    let mut totals: HashMap<(String, String), Totals> = HashMap::new();
    for inst in instances.items.iter().filter(|i| live(i)) {
        let ns = inst.metadata.as_ref().map(|m| m.namespace.clone()).unwrap_or_default();
        let service = inst.spec.as_ref().map(|s| s.service_name.clone()).unwrap_or_default();
        let t = totals.entry((ns, service)).or_default();
        t.live += 1;
        t.ready += u32::from(inst.status.as_ref().is_some_and(|s| s.ready));
        if let Some(u) = usage(inst, now) {
            t.cpu_millis += u.cpu_millis;
            t.memory_bytes += u.memory_bytes;
        }
    }
    let wanted: BTreeSet<&str> = args.names.iter().map(String::as_str).collect();
    let rows = traffic
        .items
        .into_iter()
        .filter(|s| wanted.is_empty() || wanted.contains(s.name.as_str()))
        .map(|s: ServiceTraffic| {
            let t = totals.remove(&(s.namespace.clone(), s.name.clone())).unwrap_or_default();
            Row {
                cells: vec![
                    format!("{:.1}", s.requests_per_second),
                    latency(s.p50_ms),
                    latency(s.p99_ms),
                    format!("{:.1}", s.concurrency),
                    format!("{}/{}", t.ready, t.live),
                    cpu(t.cpu_millis),
                    memory(t.memory_bytes),
                ],
                namespace: s.namespace,
                name: s.name,
                cpu_millis: t.cpu_millis,
                memory_bytes: t.memory_bytes,
                rps: s.requests_per_second,
            }
        })
        .collect();
    Ok((&["NAME", "RPS", "P50", "P99", "IN-FLIGHT", "READY", "CPU(cores)", "MEMORY(bytes)"], rows))
}

async fn instances(ctx: &Ctx, args: &TopArgs) -> Result<(&'static [&'static str], Vec<Row>)> {
    let instances = ctx.client.list_all::<Instance>(&instance_params(ctx, args)).await?;
    let now = stratus_api::time::now_seconds();
    let wanted: BTreeSet<&str> = args.names.iter().map(String::as_str).collect();
    let rows = instances
        .items
        .iter()
        .filter(|i| live(i))
        .filter_map(|inst| {
            let meta = inst.metadata.as_ref()?;
            if !wanted.is_empty() && !wanted.contains(meta.name.as_str()) {
                return None;
            }
            let spec = inst.spec.clone().unwrap_or_default();
            let limits = allocation::held(inst).map(|h| h.limits).unwrap_or_default();
            let nonzero = |v: i128| (v > 0).then_some(v);
            let (cpu_millis, memory_bytes, cells) = match usage(inst, now) {
                Some(u) => (
                    u.cpu_millis,
                    u.memory_bytes,
                    vec![
                        cpu(u.cpu_millis),
                        percent(u.cpu_millis, nonzero(limits.cpu_millis)),
                        memory(u.memory_bytes),
                        percent(u.memory_bytes, nonzero(limits.memory_bytes)),
                    ],
                ),
                None => (0, 0, vec!["-".into(), "-".into(), "-".into(), "-".into()]),
            };
            let mut row_cells = vec![or_none(&spec.service_name), or_none(&spec.node_name)];
            row_cells.extend(cells);
            Some(Row {
                namespace: meta.namespace.clone(),
                name: meta.name.clone(),
                cells: row_cells,
                cpu_millis,
                memory_bytes,
                rps: 0.0,
            })
        })
        .collect();
    Ok((&["NAME", "SERVICE", "NODE", "CPU(cores)", "CPU%", "MEMORY(bytes)", "MEMORY%"], rows))
}

fn or_none(s: &str) -> String {
    if s.is_empty() { "<none>".into() } else { s.to_string() }
}

async fn nodes(ctx: &Ctx, args: &TopArgs) -> Result<(&'static [&'static str], Vec<Row>)> {
    let nodes = ctx.client.list_all::<Node>(&ListParams::default()).await?;
    let instances = ctx.client.list_all::<Instance>(&ListParams::default()).await?;
    let now = stratus_api::time::now_seconds();
    let mut used: BTreeMap<&str, (i64, i64, u32)> = BTreeMap::new();
    for inst in &instances.items {
        let Some(node) = allocation::node_held(inst) else { continue };
        let entry = used.entry(node).or_default();
        entry.2 += 1;
        if let Some(u) = usage(inst, now) {
            entry.0 += u.cpu_millis;
            entry.1 += u.memory_bytes;
        }
    }
    let wanted: BTreeSet<&str> = args.names.iter().map(String::as_str).collect();
    let rows = nodes
        .items
        .iter()
        .filter_map(|node| {
            let name = node.metadata.as_ref()?.name.clone();
            if !wanted.is_empty() && !wanted.contains(name.as_str()) {
                return None;
            }
            let room = Allocatable::of(node);
            let (cpu_millis, memory_bytes, count) = used.get(name.as_str()).copied().unwrap_or_default();
            Some(Row {
                cells: vec![
                    cpu(cpu_millis),
                    percent(cpu_millis, room.cpu_millis),
                    memory(memory_bytes),
                    percent(memory_bytes, room.memory_bytes),
                    count.to_string(),
                ],
                namespace: String::new(),
                name,
                cpu_millis,
                memory_bytes,
                rps: 0.0,
            })
        })
        .collect();
    Ok((&["NAME", "CPU(cores)", "CPU%", "MEMORY(bytes)", "MEMORY%", "INSTANCES"], rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, cpu_millis: i64, memory_bytes: i64, rps: f64) -> Row {
        Row { name: name.into(), cpu_millis, memory_bytes, rps, ..Row::default() }
    }

    #[test]
    fn rows_sort_biggest_first_then_by_name() {
        let mut rows = vec![row("b", 10, 1, 0.5), row("a", 10, 3, 2.0), row("c", 30, 2, 1.0)];
        let names = |rows: &[Row]| rows.iter().map(|r| r.name.clone()).collect::<Vec<_>>().join(",");
        rows.sort_by(|a, b| order(TopSort::Cpu, a, b));
        assert_eq!(names(&rows), "c,a,b");
        rows.sort_by(|a, b| order(TopSort::Memory, a, b));
        assert_eq!(names(&rows), "a,c,b");
        rows.sort_by(|a, b| order(TopSort::Rps, a, b));
        assert_eq!(names(&rows), "a,c,b");
        rows.sort_by(|a, b| order(TopSort::Name, a, b));
        assert_eq!(names(&rows), "a,b,c");
    }

    #[test]
    fn figures_are_written_as_kubectl_top_writes_them() {
        assert_eq!(cpu(12), "12m");
        assert_eq!(memory(14 * 1024 * 1024 + 5), "14Mi");
        assert_eq!(memory(412 * 1024 + 5), "412Ki");
        assert_eq!(percent(50, Some(200)), "25%");
        assert_eq!(percent(50, None), "-");
        assert_eq!(latency(None), "-");
        assert_eq!(latency(Some(0.84)), "0.8ms");
        assert_eq!(latency(Some(12.4)), "12ms");
        assert_eq!(latency(Some(1250.0)), "1.25s");
    }
}
