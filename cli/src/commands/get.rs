//! `stratus get`: objects as tables, names, JSON or YAML, and with `-w` every later change.

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use stratus_api::v1::Instance;
use stratus_api::{AnyObject, KindInfo};
use stratus_client::{ListParams, WatchEvent};

use super::Ctx;
use crate::Io;
use crate::allocation;
use crate::args::{GetArgs, OutputFormat};
use crate::error::{Error, Result};
use crate::output::{
    self, NodeAllocations, TableOptions, list_json, object_json, qualified_name, sort_events, to_json_text,
    to_yaml_text,
};
use crate::table::{self, Layout};
use crate::target::{self, Group};

/// How long to wait before watching again when the server ended a watch without sending
/// anything, so that a server that keeps closing watches is not hammered.
const REWATCH_DELAY: Duration = Duration::from_secs(1);

/// The objects found for one kind.
struct Found {
    info: &'static KindInfo,
    items: Vec<AnyObject>,
    /// The revision the list was read at (empty for objects fetched by name).
    resource_version: String,
}

pub(crate) async fn run(ctx: &Ctx, args: GetArgs, io: &mut Io) -> Result<()> {
    let groups = target::parse(&args.resources, "get")?;
    let named = groups.iter().any(|g| !g.names.is_empty());
    if named && (args.selector.is_some() || args.field_selector.is_some()) {
        return Err(Error::Usage("names cannot be given together with a selector (-l or --field-selector)".into()));
    }
    if named && args.all_namespaces {
        return Err(Error::Usage("an object cannot be fetched by name across all namespaces; use -n".into()));
    }
    if args.watch {
        return match groups.as_slice() {
            [group] if group.names.len() <= 1 => watch(ctx, group, &args, io).await,
            _ => Err(Error::Usage("watch is only supported on one kind, for one object or for all of them".into())),
        };
    }

    let mut found = Vec::new();
    let mut errors = Vec::new();
    for group in &groups {
        let info = group.info;
        if group.names.is_empty() {
            let params =
                ctx.list_params(info, args.all_namespaces, args.selector.as_deref(), args.field_selector.as_deref());
            let mut list = ctx.client.list_all_any(info.kind, &params).await?;
            if info.kind == "Event" {
                sort_events(&mut list.items);
            }
            found.push(Found { info, items: list.items, resource_version: list.resource_version });
            continue;
        }
        let mut items = Vec::new();
        for name in &group.names {
            match ctx.client.get_any(info.kind, ctx.namespace_for(info), name).await {
                Ok(obj) => items.push(obj),
                Err(e) => {
                    let err = ctx.object_error(info, name, e);
                    if err.is_fatal() {
                        return Err(err);
                    }
                    errors.push(err);
                }
            }
        }
        found.push(Found { info, items, resource_version: String::new() });
    }

    let single_name = matches!(groups.as_slice(), [g] if g.names.len() == 1);
    let lists_nodes = found.iter().any(|f| f.info.kind == "Node" && !f.items.is_empty());
    let allocations = if lists_nodes && is_table(args.output) {
        match node_allocations(ctx).await {
            Ok(allocations) => allocations,
            // The table is worth printing without the totals: say why they are missing.
            Err(e) => {
                writeln!(io.err, "warning: cannot count what the nodes hold: {e}")?;
                NodeAllocations::Unknown
            }
        }
    } else {
        NodeAllocations::Unknown
    };
    print(&found, single_name, &args, &allocations, io.out.as_mut())?;
    let total: usize = found.iter().map(|f| f.items.len()).sum();
    if total == 0 && !named && !matches!(args.output, Some(OutputFormat::Json | OutputFormat::Yaml)) {
        writeln!(io.err, "{}", ctx.nothing_found(&groups, args.all_namespaces))?;
    }
    Error::from_many(errors)
}

/// Whether `format` prints tables (the only form that shows what the nodes hold).
fn is_table(format: Option<OutputFormat>) -> bool {
    matches!(format, Some(OutputFormat::Wide) | None)
}

/// What the Instances bound to each Node hold: one list of the bound Instances of every
/// namespace, summed per node.
async fn node_allocations(ctx: &Ctx) -> Result<NodeAllocations> {
    let params = ListParams { field_selector: "spec.nodeName!=".into(), ..Default::default() };
    let instances = ctx.client.list_all::<Instance>(&params).await?.items;
    Ok(NodeAllocations::Counted(allocation::per_node(&instances)))
}

/// Prints what was found in the `-o` format: tables (one per kind), names, or JSON and YAML,
/// where one object asked for by name prints as itself and anything else as a `List`.
/// `obj` as `get` prints it: a Secret's values only with `--show-values`.
fn shown(obj: &AnyObject, args: &GetArgs) -> AnyObject {
    if args.show_values { obj.clone() } else { output::hide_values(obj) }
}

fn print(
    found: &[Found],
    single_name: bool,
    args: &GetArgs,
    allocations: &NodeAllocations,
    out: &mut (dyn Write + Send),
) -> Result<()> {
    match args.output {
        Some(format @ (OutputFormat::Json | OutputFormat::Yaml)) => {
            let value = if single_name {
                // Not found: nothing to print but the error.
                found.iter().flat_map(|f| f.items.first()).next().map(|o| object_json(&shown(o, args)))
            } else {
                let resource_version = match found {
                    [one] => one.resource_version.as_str(),
                    _ => "",
                };
                let items: Vec<AnyObject> = found.iter().flat_map(|f| &f.items).map(|o| shown(o, args)).collect();
                Some(list_json(&items, resource_version))
            };
            if let Some(value) = value {
                let text = if format == OutputFormat::Json { to_json_text(&value)? } else { to_yaml_text(&value)? };
                out.write_all(text.as_bytes())?;
            }
        }
        Some(OutputFormat::Name) => {
            for obj in found.iter().flat_map(|f| &f.items) {
                writeln!(out, "{}", qualified_name(obj))?;
            }
        }
        Some(OutputFormat::Wide) | None => {
            let opts = TableOptions {
                wide: args.output == Some(OutputFormat::Wide),
                namespace_column: args.all_namespaces,
                qualified_names: found.len() > 1,
            };
            let now = SystemTime::now();
            for (i, f) in found.iter().filter(|f| !f.items.is_empty()).enumerate() {
                if i > 0 {
                    writeln!(out)?;
                }
                let rows: Vec<Vec<String>> = f.items.iter().map(|o| output::row(o, opts, allocations, now)).collect();
                out.write_all(table::render(&output::header(f.info, opts), &rows, args.no_headers).as_bytes())?;
            }
        }
    }
    out.flush()?;
    Ok(())
}

/// `get -w`: the list, then every change from the revision the list was read at, until the
/// user stops it. A watch the server ends is resumed where it stopped; one whose revision has
/// been compacted away (Gone) is replaced by a fresh list, printing only what changed.
async fn watch(ctx: &Ctx, group: &Group, args: &GetArgs, io: &mut Io) -> Result<()> {
    let info = group.info;
    let fields = match group.names.first() {
        Some(name) => Some(format!("metadata.name={name}")),
        None => args.field_selector.clone(),
    };
    let params = ctx.list_params(info, args.all_namespaces, args.selector.as_deref(), fields.as_deref());
    let mut printer = WatchPrinter::new(info, args);
    let out = io.out.as_mut();
    let mut seen = HashMap::new();
    let mut resource_version = relist(ctx, info, &params, &mut printer, &mut seen, out).await?;
    loop {
        let mut stream = match ctx.client.watch_any(info.kind, &params, &resource_version, true).await {
            Ok(stream) => stream,
            Err(stratus_client::Error::Gone(_)) => {
                resource_version = relist(ctx, info, &params, &mut printer, &mut seen, out).await?;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let mut delivered = false;
        while let Some(event) = stream.next().await {
            delivered = true;
            match event {
                Ok(WatchEvent::Added(obj) | WatchEvent::Modified(obj)) => {
                    resource_version = later(resource_version, &obj.meta().resource_version);
                    seen.insert(obj.key(), obj.meta().resource_version.clone());
                    printer.print(ctx, std::slice::from_ref(&obj), out).await?;
                }
                Ok(WatchEvent::Deleted(obj)) => {
                    resource_version = later(resource_version, &obj.meta().resource_version);
                    seen.remove(&obj.key());
                    printer.print(ctx, std::slice::from_ref(&obj), out).await?;
                }
                Ok(WatchEvent::Bookmark(rv)) => resource_version = later(resource_version, &rv),
                Err(stratus_client::Error::Gone(_)) => {
                    resource_version = relist(ctx, info, &params, &mut printer, &mut seen, out).await?;
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
        if !delivered {
            tokio::time::sleep(REWATCH_DELAY).await;
        }
    }
}

/// Lists, prints the objects not already printed at their current version, and returns the
/// revision to watch from.
async fn relist(
    ctx: &Ctx,
    info: &KindInfo,
    params: &ListParams,
    printer: &mut WatchPrinter,
    seen: &mut HashMap<String, String>,
    out: &mut (dyn Write + Send),
) -> Result<String> {
    let mut list = ctx.client.list_all_any(info.kind, params).await?;
    if info.kind == "Event" {
        sort_events(&mut list.items);
    }
    let changed: Vec<AnyObject> =
        list.items.into_iter().filter(|o| seen.get(&o.key()) != Some(&o.meta().resource_version)).collect();
    for o in &changed {
        seen.insert(o.key(), o.meta().resource_version.clone());
    }
    printer.print(ctx, &changed, out).await?;
    Ok(list.resource_version)
}

/// The later of two resource versions. They are store revisions; the API promises nothing
/// about their form, so one that does not parse as a number is taken as newer.
fn later(current: String, candidate: &str) -> String {
    match (current.parse::<i64>(), candidate.parse::<i64>()) {
        (Ok(a), Ok(b)) if b <= a => current,
        _ if candidate.is_empty() => current,
        _ => candidate.to_string(),
    }
}

/// Prints what a watch sees, one object at a time, in the chosen format. Table columns are
/// sized by the first batch and kept, so later rows line up under the header.
///
/// A table of Nodes counts what their Instances hold afresh for every batch of rows, so each
/// row is true as of its node's change. Nodes change when their status does and when the
/// scheduler reserves room on them (once per bind), which keeps this to one list per placement.
struct WatchPrinter {
    info: &'static KindInfo,
    format: Option<OutputFormat>,
    opts: TableOptions,
    no_headers: bool,
    layout: Option<Layout>,
    printed: bool,
    show_values: bool,
}

impl WatchPrinter {
    fn new(info: &'static KindInfo, args: &GetArgs) -> WatchPrinter {
        WatchPrinter {
            info,
            format: args.output,
            opts: TableOptions {
                wide: args.output == Some(OutputFormat::Wide),
                namespace_column: args.all_namespaces,
                qualified_names: false,
            },
            no_headers: args.no_headers,
            layout: None,
            printed: false,
            show_values: args.show_values,
        }
    }

    /// `obj` as printed: a Secret's values only with `--show-values`.
    fn shown(&self, obj: &AnyObject) -> AnyObject {
        if self.show_values { obj.clone() } else { output::hide_values(obj) }
    }

    async fn print(&mut self, ctx: &Ctx, objs: &[AnyObject], out: &mut (dyn Write + Send)) -> Result<()> {
        if objs.is_empty() {
            return Ok(());
        }
        // A watch would repeat a warning with every change; the cells say `<unknown>` instead.
        let allocations = if self.info.kind == "Node" && is_table(self.format) {
            node_allocations(ctx).await.unwrap_or_default()
        } else {
            NodeAllocations::Unknown
        };
        match self.format {
            Some(OutputFormat::Json) => {
                for o in objs {
                    out.write_all(to_json_text(&object_json(&self.shown(o)))?.as_bytes())?;
                }
            }
            Some(OutputFormat::Yaml) => {
                for o in objs {
                    if self.printed {
                        out.write_all(b"---\n")?;
                    }
                    out.write_all(to_yaml_text(&object_json(&self.shown(o)))?.as_bytes())?;
                    self.printed = true;
                }
            }
            Some(OutputFormat::Name) => {
                for o in objs {
                    writeln!(out, "{}", qualified_name(o))?;
                }
            }
            Some(OutputFormat::Wide) | None => {
                let now = SystemTime::now();
                let rows: Vec<Vec<String>> =
                    objs.iter().map(|o| output::row(o, self.opts, &allocations, now)).collect();
                let layout = match &self.layout {
                    Some(layout) => layout,
                    None => {
                        let header = output::header(self.info, self.opts);
                        let layout =
                            Layout::fit(std::iter::once(header.as_slice()).chain(rows.iter().map(Vec::as_slice)));
                        if !self.no_headers {
                            writeln!(out, "{}", layout.line(&header))?;
                        }
                        self.layout.insert(layout)
                    }
                };
                for row in &rows {
                    writeln!(out, "{}", layout.line(row))?;
                }
            }
        }
        out.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watch_resumes_from_the_latest_version_seen() {
        assert_eq!(later("10".into(), "12"), "12");
        assert_eq!(later("12".into(), "10"), "12");
        assert_eq!(later("12".into(), ""), "12");
        assert_eq!(later(String::new(), "3"), "3");
        assert_eq!(later("12".into(), "opaque"), "opaque");
    }
}
