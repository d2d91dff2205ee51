//! `stratus describe`: objects for people to read, each with the events about it.

use std::io::Write;
use std::time::SystemTime;

use stratus_api::AnyObject;

use super::Ctx;
use crate::Io;
use crate::args::DescribeArgs;
use crate::describe::{self, Events};
use crate::error::{Error, Result};
use crate::output::sort_events;
use crate::target;

pub(crate) async fn run(ctx: &Ctx, args: DescribeArgs, io: &mut Io) -> Result<()> {
    let groups = target::parse(&args.resources, "describe")?;
    if args.selector.is_some() && groups.iter().any(|g| !g.names.is_empty()) {
        return Err(Error::Usage("names cannot be given together with a selector (-l)".into()));
    }
    let mut objects = Vec::new();
    let mut errors = Vec::new();
    for group in &groups {
        let info = group.info;
        if group.names.is_empty() {
            let params = ctx.list_params(info, false, args.selector.as_deref(), None);
            objects.extend(ctx.client.list_all_any(info.kind, &params).await?.items);
            continue;
        }
        for name in &group.names {
            match ctx.client.get_any(info.kind, ctx.namespace_for(info), name).await {
                Ok(obj) => objects.push(obj),
                Err(e) => {
                    let err = ctx.object_error(info, name, e);
                    if err.is_fatal() {
                        return Err(err);
                    }
                    errors.push(err);
                }
            }
        }
    }
    let mut first = true;
    for obj in &objects {
        let events = events_about(ctx, obj).await?;
        if !first {
            // kubectl separates described objects with an empty line.
            io.out.write_all(b"\n\n")?;
        }
        first = false;
        let related = match obj {
            AnyObject::Service(svc) => Some(made_by(ctx, svc).await?),
            AnyObject::Node(node) => Some(bound_to(ctx, node).await?),
            _ => None,
        };
        io.out.write_all(describe::render_with(obj, related.as_ref(), &events, SystemTime::now()).as_bytes())?;
    }
    io.out.flush()?;
    if objects.is_empty() && errors.is_empty() {
        writeln!(io.err, "{}", ctx.nothing_found(&groups, false))?;
    }
    Error::from_many(errors)
}

/// The revisions and instances of a service (labelled with its name by the controllers).
async fn made_by(ctx: &Ctx, svc: &stratus_api::v1::Service) -> Result<describe::Related> {
    use stratus_api::Resource;
    let params = stratus_client::ListParams {
        namespace: svc.meta().namespace.clone(),
        label_selector: format!("{}={}", crate::output::SERVICE_LABEL, svc.meta().name),
        ..Default::default()
    };
    let revisions = ctx.client.list_all::<stratus_api::v1::Revision>(&params).await?.items;
    let instances = ctx.client.list_all::<stratus_api::v1::Instance>(&params).await?.items;
    Ok(describe::Related::Service { revisions, instances })
}

/// The Instances bound to a node, in every namespace. As with events, a refusal to list them
/// does not hide the node; it is shown where the allocation would be.
async fn bound_to(ctx: &Ctx, node: &stratus_api::v1::Node) -> Result<describe::Related> {
    use stratus_api::Resource;
    let params = stratus_client::ListParams {
        field_selector: format!("spec.nodeName={}", node.meta().name),
        ..Default::default()
    };
    match ctx.client.list_all::<stratus_api::v1::Instance>(&params).await {
        Ok(list) => Ok(describe::Related::Node(Ok(list.items))),
        Err(e) => match Error::from(e) {
            fatal @ Error::Unreachable { .. } => Err(fatal),
            other => Ok(describe::Related::Node(Err(other.to_string()))),
        },
    }
}

/// The events whose involved object is `obj`: in its namespace, or in every namespace for a
/// cluster-scoped object (whose events have to live somewhere). A refusal to list them does
/// not hide the object; it is shown where the events would be.
async fn events_about(ctx: &Ctx, obj: &AnyObject) -> Result<Events> {
    let meta = obj.meta();
    let params = stratus_client::ListParams {
        namespace: meta.namespace.clone(),
        field_selector: format!("spec.involvedObject.name={},spec.involvedObject.kind={}", meta.name, obj.info().kind),
        ..Default::default()
    };
    match ctx.client.list_all_any("Event", &params).await {
        Ok(list) => {
            let mut items = list.items;
            sort_events(&mut items);
            Ok(Events::List(items))
        }
        Err(e) => match Error::from(e) {
            fatal @ Error::Unreachable { .. } => Err(fatal),
            other => Ok(Events::Unavailable(other.to_string())),
        },
    }
}
