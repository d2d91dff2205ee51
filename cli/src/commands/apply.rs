//! `stratus apply -f`: create or update every object of the manifests.

use std::io::Write;

use stratus_client::Client;

use super::Ctx;
use crate::Io;
use crate::args::ApplyArgs;
use crate::error::{Error, Result};
use crate::manifest::{self, Item};
use crate::output::qualified_name;

pub(crate) async fn run(ctx: &Ctx, args: ApplyArgs, io: &mut Io) -> Result<()> {
    let sources = manifest::read(&args.filenames, &mut io.stdin)?;
    // Every document is checked before the first is sent: no partial apply from a typo.
    let items = manifest::load(&sources, &ctx.namespace, true)?;
    if items.is_empty() {
        return Err(Error::Usage("no objects passed to apply".to_string()));
    }
    apply_items(&ctx.client, items, &mut io.out).await
}

/// Applies the objects in order, printing `service/hello created|configured|unchanged` for each.
/// A refused object does not stop the others (each is reported); an unreachable server does.
pub(crate) async fn apply_items(client: &Client, items: Vec<Item>, out: &mut (dyn Write + Send)) -> Result<()> {
    let mut errors = Vec::new();
    for item in items {
        let name = qualified_name(&item.object);
        match client.apply_any(item.object.clone()).await {
            Ok((_, result)) => {
                writeln!(out, "{name} {result}")?;
                out.flush()?;
            }
            Err(e) => {
                let err = Error::object(item.describe(), e);
                if err.is_fatal() {
                    return Err(err);
                }
                errors.push(err);
            }
        }
    }
    Error::from_many(errors)
}
