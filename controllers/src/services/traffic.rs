//! The Service's status, without I/O: its URL, its latest created and ready revisions, its
//! traffic table resolved to revisions, and the conditions `ConfigurationsReady`,
//! `RoutesReady` and `Ready`. See "Status as Knative reports it" in the
//! [services controller's documentation](super).

use std::collections::BTreeMap;
use std::sync::Arc;

use stratus_api::Resource;
use stratus_api::v1::{Address, Revision, Service, ServiceStatus, TrafficTarget};

use super::template::Plan;
use crate::config::Config;
use crate::status::{self, Cond, FALSE, READY, TRUE, UNKNOWN};

pub(super) const CONFIGURATIONS_READY: &str = "ConfigurationsReady";
const ROUTES_READY: &str = "RoutesReady";

/// The Service's status as its revisions make it now. `revisions` are the Service's, newest
/// first.
pub(super) fn desired_status(
    svc: &Service,
    revisions: &[Arc<Revision>],
    plan: &Plan,
    config: &Config,
) -> ServiceStatus {
    let previous = svc.status.clone().unwrap_or_default();
    let (name, namespace) = (&svc.meta().name, &svc.meta().namespace);
    let by_name: BTreeMap<&str, &Revision> = revisions.iter().map(|r| (r.meta().name.as_str(), r.as_ref())).collect();
    let ready = |n: &str| by_name.get(n).map_or(UNKNOWN, |r| revision_ready(r).status);

    let latest_created = match plan {
        Plan::Current(n) => n.clone(),
        Plan::Create(_) | Plan::NameTaken { .. } => {
            let recorded = previous.latest_created_revision_name.as_str();
            if by_name.contains_key(recorded) {
                recorded.to_string()
            } else {
                revisions.first().map(|r| r.meta().name.clone()).unwrap_or_default()
            }
        }
    };
    // As Knative: the latest created revision once it is ready; until then the one that was
    // (traffic does not move back to an older revision because a newer one failed).
    let latest_ready = if ready(&latest_created) == TRUE {
        latest_created.clone()
    } else if ready(&previous.latest_ready_revision_name) == TRUE {
        previous.latest_ready_revision_name.clone()
    } else {
        revisions.iter().find(|r| revision_ready(r).status == TRUE).map(|r| r.meta().name.clone()).unwrap_or_default()
    };

    let configurations = match plan {
        Plan::NameTaken { message, .. } => Cond::new(CONFIGURATIONS_READY, FALSE, "RevisionNameTaken", message.clone()),
        _ => match by_name.get(latest_created.as_str()) {
            None => Cond::new(CONFIGURATIONS_READY, UNKNOWN, "RevisionMissing", "waiting for the revision to be made"),
            Some(rev) => {
                let cond = revision_ready(rev);
                match cond.status {
                    TRUE => Cond::true_(CONFIGURATIONS_READY),
                    FALSE => {
                        Cond::new(CONFIGURATIONS_READY, FALSE, "RevisionFailed", failed_message(&latest_created, &cond))
                    }
                    _ => Cond::new(
                        CONFIGURATIONS_READY,
                        UNKNOWN,
                        "Deploying",
                        format!("waiting for revision {latest_created} to become ready"),
                    ),
                }
            }
        },
    };

    let spec_traffic = svc.spec.as_ref().map(|s| s.traffic.clone()).unwrap_or_default();
    let mut traffic = Vec::new();
    let mut route_parts = Vec::new();
    for (i, t) in spec_traffic.iter().enumerate() {
        let latest = t.latest_revision.unwrap_or(t.revision_name.is_empty());
        let carries = t.percent.unwrap_or(0) > 0 || !t.tag.is_empty();
        let target = if latest { latest_ready.clone() } else { t.revision_name.clone() };
        let cond = if latest && target.is_empty() {
            // No revision has been ready yet: the route waits for the latest created one.
            match by_name.get(latest_created.as_str()).map(|r| revision_ready(r)) {
                Some(c) if c.status == FALSE => {
                    Cond::new(ROUTES_READY, FALSE, "RevisionFailed", failed_message(&latest_created, &c))
                }
                _ => Cond::new(ROUTES_READY, UNKNOWN, "RevisionNotReady", "waiting for a revision to become ready"),
            }
        } else if let Some(rev) = by_name.get(target.as_str()) {
            let c = revision_ready(rev);
            match c.status {
                _ if !carries => Cond::true_(ROUTES_READY),
                TRUE => Cond::true_(ROUTES_READY),
                FALSE => Cond::new(ROUTES_READY, FALSE, "RevisionFailed", failed_message(&target, &c)),
                _ => Cond::new(
                    ROUTES_READY,
                    UNKNOWN,
                    "RevisionNotReady",
                    format!("waiting for revision {target}, named in spec.traffic[{i}], to become ready"),
                ),
            }
        } else {
            Cond::new(
                ROUTES_READY,
                FALSE,
                "RevisionMissing",
                format!("spec.traffic[{i}] names revision {target}, which is not a revision of service {name}"),
            )
        };
        route_parts.push(cond);
        // Until some revision has been ready, the route points at the latest created one, so
        // that requests wait for it (the gateway holds them while it starts) or learn why it
        // cannot start, rather than finding no route at all.
        let target = if latest && target.is_empty() { latest_created.clone() } else { target };
        if !target.is_empty() && by_name.contains_key(target.as_str()) {
            let url =
                if t.tag.is_empty() { String::new() } else { config.url(&format!("{}-{name}", t.tag), namespace) };
            traffic.push(TrafficTarget {
                revision_name: target,
                latest_revision: Some(latest),
                percent: t.percent,
                tag: t.tag.clone(),
                url,
                configuration_name: String::new(),
            });
        }
    }
    let routes = status::summarize(ROUTES_READY, &route_parts.iter().collect::<Vec<_>>());
    let ready_cond = status::summarize(READY, &[&configurations, &routes]);

    let mut conditions = previous.conditions.clone();
    for c in [&configurations, &routes, &ready_cond] {
        status::set(&mut conditions, c);
    }
    let url = config.url(name, namespace);
    ServiceStatus {
        observed_generation: svc.meta().generation,
        conditions,
        url: url.clone(),
        latest_created_revision_name: latest_created,
        latest_ready_revision_name: latest_ready,
        traffic,
        address: Some(Address { url }),
    }
}

/// A revision's Ready condition as the revisions controller reports it (Unknown until then).
fn revision_ready(rev: &Revision) -> Cond {
    let conditions = rev.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    match status::get(conditions, READY) {
        Some(c) if c.status == TRUE => Cond::true_(READY),
        Some(c) if c.status == FALSE => Cond::new(READY, FALSE, c.reason.clone(), c.message.clone()),
        Some(c) => Cond::new(READY, UNKNOWN, c.reason.clone(), c.message.clone()),
        None => Cond::new(READY, UNKNOWN, "", ""),
    }
}

fn failed_message(revision: &str, cond: &Cond) -> String {
    match (cond.reason.is_empty(), cond.message.is_empty()) {
        (_, true) => format!("revision {revision} failed ({})", cond.reason),
        (true, false) => format!("revision {revision} failed: {}", cond.message),
        (false, false) => format!("revision {revision} failed ({}): {}", cond.reason, cond.message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::fixtures::{latest, revision_of, service, with_ready};

    #[test]
    fn status_resolves_traffic_to_the_latest_ready_revision() {
        let config = crate::config::Config::default();
        let tagged = TrafficTarget {
            revision_name: "hello-00001".into(),
            latest_revision: Some(false),
            percent: Some(0),
            tag: "old".into(),
            ..Default::default()
        };
        let svc = service(vec![latest(100), tagged], "", "two");
        let r1 = Arc::new(with_ready(revision_of(&svc, "hello-00001", 1), TRUE, "", ""));
        let r2 = Arc::new(revision_of(&svc, "hello-00002", 2));
        let revisions = vec![r2.clone(), r1.clone()];

        // The new revision is not ready yet: traffic stays on the old one.
        let st = desired_status(&svc, &revisions, &Plan::Current("hello-00002".into()), &config);
        assert_eq!(st.latest_created_revision_name, "hello-00002");
        assert_eq!(st.latest_ready_revision_name, "hello-00001");
        assert_eq!(st.traffic.len(), 2);
        assert_eq!((st.traffic[0].revision_name.as_str(), st.traffic[0].percent), ("hello-00001", Some(100)));
        assert_eq!(st.traffic[1].url, "http://old-hello.default.localhost:8080");
        assert_eq!(st.url, "http://hello.default.localhost:8080");
        assert_eq!(status::status(&st.conditions, CONFIGURATIONS_READY), UNKNOWN);
        assert_eq!(status::status(&st.conditions, ROUTES_READY), TRUE);
        assert_eq!(status::status(&st.conditions, READY), UNKNOWN);

        // Ready: traffic moves.
        let r2 = Arc::new(with_ready((*r2).clone(), TRUE, "", ""));
        let st = desired_status(&svc, &[r2, r1.clone()], &Plan::Current("hello-00002".into()), &config);
        assert_eq!(st.traffic[0].revision_name, "hello-00002");
        assert_eq!(status::status(&st.conditions, READY), TRUE);

        // Failed: the Service says why, and traffic stays where it was.
        let bad =
            Arc::new(with_ready(revision_of(&svc, "hello-00002", 2), FALSE, "ContainerMissing", "x: manifest unknown"));
        let mut svc_before = svc.clone();
        svc_before.status =
            Some(ServiceStatus { latest_ready_revision_name: "hello-00001".into(), ..Default::default() });
        let st = desired_status(&svc_before, &[bad, r1], &Plan::Current("hello-00002".into()), &config);
        let ready = status::get(&st.conditions, READY).cloned().unwrap_or_default();
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), (FALSE, "RevisionFailed"));
        assert!(ready.message.contains("manifest unknown"), "{}", ready.message);
        assert_eq!(st.traffic[0].revision_name, "hello-00001");
    }

    #[test]
    fn a_traffic_target_naming_no_revision_fails_the_route() {
        let config = crate::config::Config::default();
        let pinned = TrafficTarget {
            revision_name: "hello-09999".into(),
            latest_revision: Some(false),
            percent: Some(100),
            ..Default::default()
        };
        let svc = service(vec![pinned], "", "one");
        let r1 = Arc::new(with_ready(revision_of(&svc, "hello-00001", 1), TRUE, "", ""));
        let st = desired_status(&svc, &[r1], &Plan::Current("hello-00001".into()), &config);
        let routes = status::get(&st.conditions, ROUTES_READY).cloned().unwrap_or_default();
        assert_eq!((routes.status.as_str(), routes.reason.as_str()), (FALSE, "RevisionMissing"));
        assert!(routes.message.contains("hello-09999"));
        assert!(st.traffic.is_empty());
    }
}
