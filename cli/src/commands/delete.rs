//! `stratus delete`: by kind and name, by selector, every object of a kind, or what a manifest
//! names.

use std::io::Write;

use stratus_api::KindInfo;

use super::Ctx;
use crate::Io;
use crate::args::DeleteArgs;
use crate::error::{Error, Result};
use crate::{manifest, target};

/// One object to delete.
struct Doomed {
    info: &'static KindInfo,
    namespace: String,
    name: String,
}

pub(crate) async fn run(ctx: &Ctx, args: DeleteArgs, io: &mut Io) -> Result<()> {
    let doomed = if args.filenames.is_empty() {
        from_arguments(ctx, &args, io).await?
    } else {
        let sources = manifest::read(&args.filenames, &mut io.stdin)?;
        // Only kind, namespace and name matter: a manifest that no longer validates (say,
        // after an upgrade) must still be deletable.
        let items = manifest::load(&sources, &ctx.namespace, false)?;
        if items.is_empty() {
            return Err(Error::Usage("no objects passed to delete".into()));
        }
        items
            .iter()
            .map(|i| Doomed {
                info: i.object.info(),
                namespace: i.object.meta().namespace.clone(),
                name: i.object.meta().name.clone(),
            })
            .collect()
    };

    let mut errors = Vec::new();
    for d in doomed {
        match ctx.client.delete_any(d.info.kind, &d.namespace, &d.name, None).await {
            // The API accepted the deletion; with finalizers the object lingers until they
            // are done, as in kubectl without --wait.
            Ok(_) => {
                writeln!(io.out, "{} {:?} deleted", d.info.singular, d.name)?;
                io.out.flush()?;
            }
            Err(stratus_client::Error::NotFound(_)) if args.ignore_not_found => {}
            Err(stratus_client::Error::NotFound(_)) => errors.push(Error::NotFound {
                plural: d.info.plural,
                name: d.name,
                namespace: d.info.namespaced.then_some(d.namespace),
            }),
            Err(e) => {
                let err = Error::object(format!("{}/{}", d.info.singular, d.name), e);
                if err.is_fatal() {
                    return Err(err);
                }
                errors.push(err);
            }
        }
    }
    Error::from_many(errors)
}

/// `KIND NAME...`, `KIND/NAME...`, `KIND -l SELECTOR` or `KIND --all`.
async fn from_arguments(ctx: &Ctx, args: &DeleteArgs, io: &mut Io) -> Result<Vec<Doomed>> {
    let groups = target::parse(&args.resources, "delete")?;
    let by_selection = args.all || args.selector.is_some();
    let mut doomed = Vec::new();
    for group in &groups {
        let info = group.info;
        if !group.names.is_empty() {
            if by_selection {
                return Err(Error::Usage("names cannot be given together with -l or --all".into()));
            }
            let namespace = ctx.namespace_for(info).to_string();
            doomed.extend(group.names.iter().map(|name| Doomed {
                info,
                namespace: namespace.clone(),
                name: name.clone(),
            }));
            continue;
        }
        if !by_selection {
            // Deleting everything of a kind must be asked for in so many words.
            return Err(Error::Usage(format!(
                "a kind was given but no name; give names, -l SELECTOR or --all (e.g. `stratus delete {} NAME`)",
                info.singular
            )));
        }
        let params = ctx.list_params(info, false, args.selector.as_deref(), None);
        let list = ctx.client.list_all_any(info.kind, &params).await?;
        doomed.extend(list.items.iter().map(|o| Doomed {
            info,
            namespace: o.meta().namespace.clone(),
            name: o.meta().name.clone(),
        }));
    }
    if doomed.is_empty() {
        writeln!(io.err, "{}", ctx.nothing_found(&groups, false))?;
    }
    Ok(doomed)
}
