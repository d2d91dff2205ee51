//! `stratus wait`: until objects meet a condition or are gone, or the timeout passes.

use std::io::Write;
use std::time::Duration;

use futures::StreamExt;
use stratus_api::{AnyObject, KindInfo};
use stratus_client::{ListParams, WatchEvent};
use tokio::time::Instant;

use super::Ctx;
use crate::Io;
use crate::args::{WaitArgs, WaitFor};
use crate::error::{Error, Result};
use crate::output::{condition, conditions, observed_generation};
use crate::target;

/// How long to wait before watching again when the server ended a watch without sending
/// anything, so that a server that keeps closing watches is not hammered.
const REWATCH_DELAY: Duration = Duration::from_secs(1);

pub(crate) async fn run(ctx: &Ctx, args: WaitArgs, io: &mut Io) -> Result<()> {
    let groups = target::parse(&args.resources, "wait")?;
    if groups.iter().any(|g| g.names.is_empty()) {
        return Err(Error::Usage(
            "give the names of the objects to wait for (e.g. `stratus wait service hello --for=condition=Ready`)"
                .into(),
        ));
    }
    // One deadline for all: --timeout bounds the whole command, as in kubectl.
    let deadline = Instant::now() + args.timeout;
    let mut errors = Vec::new();
    for group in &groups {
        for name in &group.names {
            let outcome = if args.timeout.is_zero() {
                // kubectl's --timeout=0: look once, do not wait.
                read(ctx, group.info, name, &args.wait_for).await.map(|state| matches!(state, State::Met))
            } else {
                match tokio::time::timeout_at(deadline, wait_one(ctx, group.info, name, &args.wait_for)).await {
                    Ok(result) => result.map(|()| true),
                    Err(_) => Ok(false),
                }
            };
            match outcome {
                Ok(true) => {
                    writeln!(io.out, "{}/{name} condition met", group.info.singular)?;
                    io.out.flush()?;
                }
                Ok(false) => errors.push(Error::TimedOut(format!("{}/{name}", group.info.plural))),
                Err(e) if e.is_fatal() => return Err(e),
                Err(e) => errors.push(e),
            }
        }
    }
    Error::from_many(errors)
}

/// Where one object stands.
enum State {
    Met,
    /// Not yet, as of this resourceVersion of the object.
    Pending(String),
}

/// Reads the object and tells whether it meets the condition (for `--for=delete`: whether it
/// is gone).
async fn read(ctx: &Ctx, info: &'static KindInfo, name: &str, wait_for: &WaitFor) -> Result<State> {
    match ctx.client.get_any(info.kind, ctx.namespace_for(info), name).await {
        Ok(obj) if met(&obj, wait_for) => Ok(State::Met),
        Ok(obj) => Ok(State::Pending(obj.meta().resource_version.clone())),
        Err(stratus_client::Error::NotFound(_)) if *wait_for == WaitFor::Delete => Ok(State::Met),
        Err(e) => Err(ctx.object_error(info, name, e)),
    }
}

/// Waits for one object: reads it, and if it does not meet the condition yet, watches it from
/// the version read, so that no change in between is missed. Returns when the condition is met;
/// the caller bounds the time.
async fn wait_one(ctx: &Ctx, info: &'static KindInfo, name: &str, wait_for: &WaitFor) -> Result<()> {
    let params = ListParams {
        namespace: ctx.namespace_for(info).to_string(),
        field_selector: format!("metadata.name={name}"),
        ..Default::default()
    };
    loop {
        let from = match read(ctx, info, name, wait_for).await? {
            State::Met => return Ok(()),
            State::Pending(resource_version) => resource_version,
        };
        let mut stream = match ctx.client.watch_any(info.kind, &params, &from, false).await {
            Ok(stream) => stream,
            // The version read is already compacted away: read again.
            Err(stratus_client::Error::Gone(_)) => continue,
            Err(e) => return Err(e.into()),
        };
        let mut delivered = false;
        while let Some(event) = stream.next().await {
            delivered = true;
            match event {
                Ok(WatchEvent::Added(obj) | WatchEvent::Modified(obj)) if met(&obj, wait_for) => return Ok(()),
                Ok(WatchEvent::Deleted(_)) if *wait_for == WaitFor::Delete => return Ok(()),
                Ok(WatchEvent::Deleted(_)) => return Err(Error::Deleted(format!("{}/{name}", info.singular))),
                Ok(_) => {}
                Err(stratus_client::Error::Gone(_)) => break,
                Err(e) => return Err(e.into()),
            }
        }
        // The watch ended; read the object again and go on watching.
        if !delivered {
            tokio::time::sleep(REWATCH_DELAY).await;
        }
    }
}

/// Whether `obj` meets the condition. A status written for an older generation says nothing
/// about the current spec, so a condition counts only once the status has caught up.
fn met(obj: &AnyObject, wait_for: &WaitFor) -> bool {
    let WaitFor::Condition { r#type, status } = wait_for else {
        return false;
    };
    let observed = observed_generation(obj);
    if observed != 0 && observed < obj.meta().generation {
        return false;
    }
    condition(conditions(obj), r#type).is_some_and(|c| c.status == *status)
}

#[cfg(test)]
mod tests {
    use stratus_api::Resource;
    use stratus_api::v1::{Condition, ObjectMeta, Service, ServiceStatus};

    use super::*;

    fn service(generation: i64, observed: i64, ready: &str) -> AnyObject {
        Service {
            metadata: Some(ObjectMeta { name: "hello".into(), generation, ..Default::default() }),
            status: Some(ServiceStatus {
                observed_generation: observed,
                conditions: vec![Condition { r#type: "Ready".into(), status: ready.into(), ..Default::default() }],
                ..Default::default()
            }),
            ..Default::default()
        }
        .into_any()
    }

    fn ready(status: &str) -> WaitFor {
        WaitFor::Condition { r#type: "ready".into(), status: status.into() }
    }

    #[test]
    fn a_condition_is_met_by_type_in_any_case_and_exact_status() {
        assert!(met(&service(1, 1, "True"), &ready("True")));
        assert!(!met(&service(1, 1, "False"), &ready("True")));
        assert!(met(&service(1, 1, "False"), &ready("False")));
        assert!(!met(&service(1, 1, "True"), &WaitFor::Delete));
    }

    #[test]
    fn a_status_of_an_older_generation_does_not_count() {
        assert!(!met(&service(2, 1, "True"), &ready("True")));
        assert!(met(&service(2, 2, "True"), &ready("True")));
        // A status that does not say which generation it saw is taken as it is.
        assert!(met(&service(2, 0, "True"), &ready("True")));
    }

    #[test]
    fn an_object_without_the_condition_does_not_meet_it() {
        let svc = Service::default().into_any();
        assert!(!met(&svc, &ready("True")));
    }
}
