//! `stratus bench`: load on a service or URL, with a live progress line, a summary of latency,
//! throughput and errors, and a per-second timeline as JSON and as a chart. The load itself is
//! [`crate::bench`]'s.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use stratus_api::Resource;
use stratus_api::v1::{Revision, Service};
use stratus_client::ListParams;

use super::Ctx;
use super::logs::interrupted;
use crate::Io;
use crate::args::BenchArgs;
use crate::bench::engine::{self, InstancesProbe};
use crate::bench::http::{Sender, Target};
use crate::bench::plan::{Load, Plan, Rate, Stage};
use crate::bench::timeline::{self, Instances};
use crate::bench::{progress_line, summary};
use crate::error::{Error, Result};
use crate::output::SERVICE_LABEL;

pub(crate) async fn run(args: BenchArgs, connect: impl FnOnce() -> Result<Ctx>, io: &mut Io) -> Result<()> {
    let plan = plan(&args)?;
    if plan.max_concurrency() > args.max_in_flight {
        return Err(Error::Usage(format!(
            "a concurrency of {} is more than --max-in-flight {}: raise --max-in-flight",
            plan.max_concurrency(),
            args.max_in_flight
        )));
    }
    // Open the output files first: a typo in a path should not cost a whole run.
    let json_file = args.out_json.as_deref().map(create).transpose()?;
    if let Some(path) = &args.chart {
        create(path)?;
    }

    let (url, service) = match service_name(&args.target) {
        Some(name) => {
            let ctx = connect()?;
            let url = service_url(&ctx, name).await?;
            (url, Some((ctx, name.to_string())))
        }
        None => (args.target.clone(), None),
    };
    let target = Target::parse(&url, args.path.as_deref()).map_err(Error::Usage)?;
    let described = describe_target(&target, service.as_ref().map(|(ctx, name)| (ctx.namespace.name.as_str(), name)));
    let probe = service.map(|(ctx, name)| instances_probe(ctx, &name));

    let _ = writeln!(io.err, "Sending {} to {described}", describe_plan(&plan));
    let terminal = io.err_is_terminal;
    let err = &mut io.err;
    let on_sample = |sample: &timeline::Sample, progress| {
        let line = progress_line(&plan, sample, progress);
        // Progress is a courtesy: a closed stderr does not stop the run.
        let _ = if terminal { write!(err, "\r{line}\x1b[K") } else { writeln!(err, "{line}") };
        let _ = err.flush();
    };
    let sender = Sender::new(target.clone(), args.timeout);
    let report = engine::run(&plan, sender, args.max_in_flight as usize, probe, on_sample, interrupted()).await;
    if terminal && !report.timeline.is_empty() {
        let _ = writeln!(io.err);
    }
    if report.interrupted {
        let _ = writeln!(io.err, "Interrupted: requests still outstanding are not counted.");
    }

    io.out.write_all(summary(&described, &plan, &report).as_bytes())?;
    io.out.flush()?;
    if let (Some(path), Some(mut file)) = (&args.out_json, json_file) {
        let json = timeline::to_json(&report.timeline)
            .map_err(|e| Error::Bench(format!("cannot encode the timeline: {e}")))?;
        file.write_all(json.as_bytes())
            .and_then(|()| file.flush())
            .map_err(|source| Error::Write { path: path.display().to_string(), source })?;
        let _ = writeln!(io.err, "Wrote the timeline to {}", path.display());
    }
    if let Some(path) = &args.chart {
        timeline::write_chart(path, &format!("stratus bench {described}"), &report.timeline)
            .map_err(|e| Error::Bench(format!("cannot draw the chart in {}: {e}", path.display())))?;
        let _ = writeln!(io.err, "Wrote the chart to {}", path.display());
    }
    Ok(())
}

/// The stages of the run: those of --stage, else --rate or --concurrency for --duration.
fn plan(args: &BenchArgs) -> Result<Plan> {
    let stages = if args.stages.is_empty() {
        if args.duration.is_zero() {
            return Err(Error::Usage("--duration must be more than zero".into()));
        }
        let load = args.rate.or(args.concurrency).unwrap_or(Load::Rate(Rate::DEFAULT));
        vec![Stage { duration: args.duration, load }]
    } else {
        args.stages.clone()
    };
    Plan::new(stages).ok_or_else(|| Error::Usage("nothing to send: give --rate, --concurrency or --stage".into()))
}

fn create(path: &Path) -> Result<File> {
    File::create(path).map_err(|source| Error::Write { path: path.display().to_string(), source })
}

/// The service TARGET names, if it names one rather than a URL: `NAME` (a DNS label, which
/// no URL with a dot, colon or slash is) or `KIND/NAME` with KIND a name of Service.
fn service_name(target: &str) -> Option<&str> {
    if target.contains("://") {
        return None;
    }
    let name = match target.split_once('/') {
        Some((kind, name)) => {
            let info = crate::target::kind(kind).ok()?;
            (info == &Service::INFO).then_some(name)?
        }
        None => target,
    };
    is_dns_label(name).then_some(name)
}

fn is_dns_label(s: &str) -> bool {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    (1..=63).contains(&s.len()) && s.chars().all(ok_char) && !s.starts_with('-') && !s.ends_with('-')
}

/// Where the service `name` is reached, as its status says.
async fn service_url(ctx: &Ctx, name: &str) -> Result<String> {
    let svc: Service =
        ctx.client.get(&ctx.namespace.name, name).await.map_err(|e| ctx.object_error(&Service::INFO, name, e))?;
    let status = svc.status.unwrap_or_default();
    let url = Some(status.url).filter(|u| !u.is_empty()).or(status.address.map(|a| a.url).filter(|u| !u.is_empty()));
    url.ok_or_else(|| {
        Error::Bench(format!(
            "service/{name} has no URL yet: it is not ready to serve (see `stratus describe service {name}`)"
        ))
    })
}

/// Sums the ready and desired instances of every revision of the service.
fn instances_probe(ctx: Ctx, service: &str) -> InstancesProbe {
    let params = ListParams {
        namespace: ctx.namespace.name.clone(),
        label_selector: format!("{SERVICE_LABEL}={service}"),
        ..Default::default()
    };
    let client = ctx.client;
    Box::new(move || {
        let (client, params) = (client.clone(), params.clone());
        Box::pin(async move {
            let revisions = client.list_all::<Revision>(&params).await.ok()?;
            let count = |n: i32| u32::try_from(n).unwrap_or(0);
            let sum = revisions.items.iter().filter_map(|r| r.status.as_ref()).fold(
                Instances { ready: 0, desired: 0 },
                |acc, st| Instances {
                    ready: acc.ready.saturating_add(count(st.ready_instances)),
                    desired: acc.desired.saturating_add(count(st.desired_instances)),
                },
            );
            Some(sum)
        })
    })
}

/// `http://…/ (service default/hello, via 127.0.0.1:8080)`.
fn describe_target(target: &Target, service: Option<(&str, &String)>) -> String {
    let mut notes = Vec::new();
    if let Some((namespace, name)) = service {
        notes.push(format!("service {namespace}/{name}"));
    }
    if let Some(addr) = target.connects_to() {
        notes.push(format!("via {addr}"));
    }
    if notes.is_empty() { target.url.clone() } else { format!("{} ({})", target.url, notes.join(", ")) }
}

/// `10rps for 30s`, or `3 stages over 2m30s`.
fn describe_plan(plan: &Plan) -> String {
    match plan.stages() {
        [stage] => format!("{} for {}", stage.load, duration(stage.duration)),
        stages => format!("{} stages over {}", stages.len(), duration(plan.total_duration())),
    }
}

fn duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        crate::format::human_duration(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use clap::Parser;

    use super::*;
    use crate::args::{Cli, Command};

    fn args(argv: &[&str]) -> BenchArgs {
        let mut full = vec!["stratus", "bench"];
        full.extend_from_slice(argv);
        match Cli::try_parse_from(full).unwrap().command {
            Command::Bench(args) => args,
            other => panic!("not bench: {other:?}"),
        }
    }

    #[test]
    fn targets_are_service_names_or_urls() {
        assert_eq!(service_name("hello"), Some("hello"));
        assert_eq!(service_name("svc/hello"), Some("hello"));
        assert_eq!(service_name("service/hello-2"), Some("hello-2"));
        for url in ["http://hello", "127.0.0.1:8080", "example.com", "Hello", "rev/hello", "svc/", "-x"] {
            assert_eq!(service_name(url), None, "{url}");
        }
    }

    #[test]
    fn the_plan_is_the_stages_or_one_stage_of_rate_or_concurrency() {
        let plan_of = |argv: &[&str]| plan(&args(argv)).unwrap();
        let p = plan_of(&["x"]);
        assert_eq!(p.stages(), [Stage { duration: Duration::from_secs(30), load: Load::Rate(Rate::DEFAULT) }]);
        let p = plan_of(&["x", "-c", "8", "-d", "5s"]);
        assert_eq!(p.stages(), [Stage { duration: Duration::from_secs(5), load: Load::Concurrency(8) }]);
        let p = plan_of(&["x", "--rate", "2.5", "-d", "1m"]);
        assert_eq!(describe_plan(&p), "2.5rps for 60s");
        let p = plan_of(&["x", "--stage", "30s:10rps", "--stage", "60s:500rps", "--stage", "1m:0"]);
        assert_eq!(p.stages().len(), 3);
        assert_eq!(describe_plan(&p), "3 stages over 2m30s");
        assert!(matches!(plan(&args(&["x", "-d", "0"])), Err(Error::Usage(_))));
    }

    #[test]
    fn contradictory_or_malformed_loads_are_refused_by_the_parser() {
        let parse = |argv: &[&str]| {
            let mut full = vec!["stratus", "bench", "x"];
            full.extend_from_slice(argv);
            Cli::try_parse_from(full).map(|_| ()).map_err(|e| e.to_string())
        };
        assert!(parse(&["--rate", "10", "-c", "5"]).is_err());
        assert!(parse(&["--rate", "10", "--stage", "1s:5"]).is_err());
        assert!(parse(&["-d", "5s", "--stage", "1s:5"]).is_err());
        assert!(parse(&["--rate", "20c"]).unwrap_err().contains("is a concurrency"));
        assert!(parse(&["-c", "many"]).unwrap_err().contains("whole number"));
        assert!(parse(&["-c", "1000000"]).unwrap_err().contains("too high"));
        assert!(parse(&["--timeout", "0s"]).is_err());
        assert!(parse(&["--max-in-flight", "0"]).is_err());
        assert!(parse(&["--stage", "10s"]).unwrap_err().contains("DURATION:LOAD"));
        assert!(parse(&["-c", "20c", "--path", "/?sleep_ms=100"]).is_ok());
    }

    #[test]
    fn the_target_says_which_service_and_where_it_connects() {
        let t = Target::parse("http://hello.default.localhost:8080", Some("/?a=1")).unwrap();
        let name = "hello".to_string();
        assert_eq!(
            describe_target(&t, Some(("default", &name))),
            "http://hello.default.localhost:8080/?a=1 (service default/hello, via 127.0.0.1:8080)"
        );
        let t = Target::parse("http://10.0.0.1/", None).unwrap();
        assert_eq!(describe_target(&t, None), "http://10.0.0.1/");
    }
}
