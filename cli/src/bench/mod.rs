//! `stratus bench`'s load generator: plans of stages ([`plan`]), HTTP sending ([`http`]), the
//! open- and closed-loop drivers ([`engine`]), outcome and latency statistics ([`stats`]) and the
//! per-second timeline with its chart ([`timeline`]). The command itself (target resolution,
//! progress display, files) is `commands::bench`.

pub mod engine;
pub mod http;
pub mod plan;
pub mod stats;
pub mod timeline;

use std::fmt::Write as _;

use engine::{Progress, Report};
use plan::Plan;
use stats::ErrorClass;
use timeline::Sample;

use crate::table;

/// A latency for people: microseconds shown while they matter, never more than 4 significant
/// digits.
pub fn format_ms(ms: f64) -> String {
    if ms < 1.0 {
        format!("{ms:.3}ms")
    } else if ms < 100.0 {
        format!("{ms:.2}ms")
    } else {
        format!("{ms:.1}ms")
    }
}

/// The one-line progress report of a second of the run.
pub fn progress_line(plan: &Plan, sample: &Sample, progress: Progress) -> String {
    let stages = plan.stages();
    let mut line = format!("{:>5.0}s", sample.t);
    if let Some(stage) = stages.get(progress.stage) {
        let load = stage.load;
        if stages.len() > 1 {
            let _ = write!(line, "  stage {}/{} {load}", progress.stage + 1, stages.len());
        } else {
            let _ = write!(line, "  {load}");
        }
    }
    let _ = write!(
        line,
        "  offered {:.1}/s  achieved {:.1}/s  in flight {}  p99 {}  errors {}",
        sample.offered_rps,
        sample.achieved_rps,
        sample.in_flight,
        sample.p99_ms.map_or_else(|| "-".to_string(), format_ms),
        progress.total_errors,
    );
    if sample.ready_instances.is_some() || sample.desired_instances.is_some() {
        let count = |n: Option<u32>| n.map_or_else(|| "?".to_string(), |n| n.to_string());
        let _ = write!(line, "  instances {}/{} ready", count(sample.ready_instances), count(sample.desired_instances));
    }
    line
}

/// The report at the end of a run: what was sent, latency percentiles, throughput and errors.
pub fn summary(target: &str, plan: &Plan, report: &Report) -> String {
    let t = &report.total;
    let seconds = report.elapsed.as_secs_f64();
    let per_second = |n: u64| if seconds > 0.0 { n as f64 / seconds } else { 0.0 };
    let percent = |n: u64, of: u64| if of > 0 { n as f64 * 100.0 / of as f64 } else { 0.0 };
    let stages = plan.stages().len();
    let mut out = String::new();
    let mut field = |name: &str, value: String| {
        let _ = writeln!(out, "{name:<12}{value}");
    };
    field("Target", target.to_string());
    field(
        "Duration",
        format!(
            "{seconds:.1}s, {stages} stage{}{}",
            if stages == 1 { "" } else { "s" },
            if report.interrupted { " (interrupted)" } else { "" }
        ),
    );
    field(
        "Requests",
        format!(
            "{} sent, {} answered, {} succeeded ({:.2}%)",
            t.offered - t.errors(ErrorClass::Dropped),
            t.answered(),
            t.succeeded,
            percent(t.succeeded, t.offered),
        ),
    );
    field(
        "Throughput",
        format!("{:.1} req/s succeeded, {:.1} req/s offered", per_second(t.succeeded), per_second(t.offered)),
    );
    out.push('\n');

    let header: Vec<String> = ["LATENCY", "P50", "P90", "P99", "P99.9", "MAX"].map(String::from).into();
    let mut row = vec![format!("{} answers", t.answered())];
    for q in [0.5, 0.9, 0.99, 0.999] {
        row.push(t.latency_ms(q).map_or_else(|| "-".to_string(), format_ms));
    }
    row.push(t.max_latency_ms().map_or_else(|| "-".to_string(), format_ms));
    out.push_str(&table::render(&header, &[row], false));
    out.push('\n');

    let mut header = vec!["ERRORS".to_string()];
    header.extend(ErrorClass::ALL.iter().map(|c| c.label().to_ascii_uppercase()));
    let mut row = vec![format!("{} ({:.2}%)", t.total_errors(), percent(t.total_errors(), t.offered))];
    row.extend(ErrorClass::ALL.iter().map(|&c| t.errors(c).to_string()));
    out.push_str(&table::render(&header, &[row], false));
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use super::*;
    use crate::bench::plan::parse_stage;
    use crate::bench::stats::{Outcome, Tally};

    fn plan(stages: &[&str]) -> Plan {
        Plan::new(stages.iter().map(|s| parse_stage(s).unwrap()).collect()).unwrap()
    }

    #[test]
    fn latencies_read_well_at_every_scale() {
        assert_eq!(format_ms(0.1234), "0.123ms");
        assert_eq!(format_ms(12.345), "12.35ms");
        assert_eq!(format_ms(1234.5), "1234.5ms");
    }

    #[test]
    fn the_summary_has_percentiles_throughput_and_errors_by_class() {
        let mut total = Tally::new();
        for ms in 1..=100 {
            total.offer(false);
            total.record(Outcome::Answered(200), Duration::from_millis(ms));
        }
        total.offer(false);
        total.record(Outcome::Answered(429), Duration::from_millis(1));
        total.offer(false);
        total.record(Outcome::Failed(ErrorClass::Connect), Duration::ZERO);
        total.offer(true);
        let report = Report { total, elapsed: Duration::from_secs(10), timeline: vec![], interrupted: false };
        let text = summary("http://x/", &plan(&["10s:10rps"]), &report);
        assert!(text.contains("Target      http://x/\n"), "{text}");
        assert!(text.contains("Duration    10.0s, 1 stage\n"), "{text}");
        assert!(text.contains("102 sent, 101 answered, 100 succeeded (97.09%)"), "{text}");
        assert!(text.contains("10.0 req/s succeeded, 10.3 req/s offered"), "{text}");
        let lines: Vec<&str> = text.lines().collect();
        let latency = lines.iter().position(|l| l.starts_with("LATENCY")).unwrap();
        assert_eq!(lines[latency], "LATENCY       P50       P90       P99       P99.9     MAX");
        assert_eq!(lines[latency + 1], "101 answers   50.02ms   90.05ms   99.01ms   100.0ms   100.0ms");
        let errors = lines.iter().position(|l| l.starts_with("ERRORS")).unwrap();
        assert_eq!(
            lines[errors].split_whitespace().collect::<Vec<_>>(),
            ["ERRORS", "CONNECT", "TIMEOUT", "4XX", "429", "5XX", "OTHER", "DROPPED"]
        );
        assert_eq!(
            lines[errors + 1].split_whitespace().collect::<Vec<_>>(),
            ["3", "(2.91%)", "1", "0", "0", "1", "0", "0", "1"]
        );
    }

    #[test]
    fn the_progress_line_names_the_stage_and_the_instances_when_known() {
        let p = plan(&["30s:10rps", "30s:20c"]);
        let sample = Sample {
            t: 31.0,
            offered_rps: 40.0,
            achieved_rps: 39.0,
            p99_ms: Some(12.5),
            errors: 0,
            in_flight: 20,
            ready_instances: Some(2),
            desired_instances: Some(3),
        };
        let line = progress_line(&p, &sample, Progress { stage: 1, total_errors: 4 });
        assert_eq!(
            line,
            "   31s  stage 2/2 20 concurrent  offered 40.0/s  achieved 39.0/s  in flight 20  p99 12.50ms  errors 4  \
             instances 2/3 ready"
        );
        let sample = Sample { p99_ms: None, ready_instances: None, desired_instances: None, ..sample };
        let line = progress_line(&plan(&["30s:10rps"]), &sample, Progress { stage: 0, total_errors: 0 });
        assert_eq!(line, "   31s  10rps  offered 40.0/s  achieved 39.0/s  in flight 20  p99 -  errors 0");
    }
}
