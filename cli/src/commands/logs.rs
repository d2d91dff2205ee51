//! `stratus logs`: the container output of an instance, or of every instance of a service,
//! as `kubectl logs` prints a pod's (and `kubectl logs -l … --prefix` several pods').

use std::io::Write;

use futures::StreamExt;
use stratus_api::v1::{Instance, Service};
use stratus_api::{KindInfo, Resource};

use super::Ctx;
use crate::Io;
use crate::args::LogsArgs;
use crate::error::{Error, Result};
use crate::target;

pub(crate) async fn run(ctx: &Ctx, args: LogsArgs, io: &mut Io) -> Result<()> {
    let (info, name) = parse(&args.resource)?;
    let prefixed = info == &Service::INFO;
    // In place before anything is printed, so that Ctrl-C never cuts a line in half.
    let interrupted = interrupted();
    tokio::pin!(interrupted);
    let open = ctx.client.logs(info.kind, ctx.namespace_for(info), name, args.follow, args.tail);
    // The handler swallows Ctrl-C from now on, so every wait must also listen for it.
    let mut lines = tokio::select! {
        lines = open => lines?,
        () = &mut interrupted => return Ok(()),
    };
    loop {
        let item = tokio::select! {
            item = lines.next() => item,
            () = &mut interrupted => break,
        };
        let Some(line) = item else { break };
        let line = line?;
        if prefixed {
            writeln!(io.out, "[{}] {}", line.instance, line.line)?;
        } else {
            writeln!(io.out, "{}", line.line)?;
        }
        if args.follow {
            // Someone is watching: each line shows as it comes, not when a buffer fills.
            io.out.flush()?;
        }
    }
    io.out.flush()?;
    Ok(())
}

/// `NAME` (an instance) or `KIND/NAME`, where KIND names Instance or Service in any form.
fn parse(arg: &str) -> Result<(&'static KindInfo, &str)> {
    let malformed = || Error::Usage(format!("{arg:?} is not NAME or KIND/NAME (e.g. service/hello)"));
    let (info, name) = match arg.split_once('/') {
        None => (&Instance::INFO, arg),
        Some((kind, name)) if !kind.is_empty() => (target::kind(kind)?, name),
        Some(_) => return Err(malformed()),
    };
    if name.is_empty() || name.contains('/') {
        return Err(malformed());
    }
    if info != &Instance::INFO && info != &Service::INFO {
        return Err(Error::Usage(format!(
            "logs are kept for instances and services, not for {}: use instance/NAME or service/NAME",
            info.plural
        )));
    }
    Ok((info, name))
}

/// Completes on Ctrl-C (SIGINT). The handler is installed when this is called, not when it is
/// first polled; without one (it could not be installed), Ctrl-C ends the process as usual.
pub(crate) fn interrupted() -> impl Future<Output = ()> {
    #[cfg(unix)]
    let signal = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt());
    async move {
        #[cfg(unix)]
        match signal {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
        #[cfg(not(unix))]
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_bare_name_is_an_instance_and_kinds_go_by_any_of_their_names() {
        assert_eq!(parse("web-1").unwrap(), (&Instance::INFO, "web-1"));
        for arg in ["instance/web-1", "inst/web-1", "instances/web-1", "Instance/web-1"] {
            assert_eq!(parse(arg).unwrap(), (&Instance::INFO, "web-1"), "{arg}");
        }
        for arg in ["service/web", "svc/web", "services/web", "ksvc/web"] {
            assert_eq!(parse(arg).unwrap(), (&Service::INFO, "web"), "{arg}");
        }
    }

    #[test]
    fn other_kinds_and_malformed_names_are_usage_errors() {
        let err = parse("rev/web-00001").unwrap_err();
        assert!(matches!(err, Error::Usage(_)), "{err}");
        assert!(err.to_string().contains("not for revisions"), "{err}");
        assert!(matches!(parse("pods/x"), Err(Error::UnknownKind(k)) if k == "pods"));
        for bad in ["svc/", "svc/a/b", "/x", ""] {
            assert!(matches!(parse(bad), Err(Error::Usage(_))), "{bad}");
        }
    }
}
