//! The timeline of a run, one sample a second: as JSON, and as an SVG chart of load, instances
//! and latency on one time axis.

use std::path::Path;
use std::time::Duration;

use plotters::coord::Shift;
use plotters::prelude::*;
use serde::Serialize;

use super::stats::Tally;

/// The instances of the service under load, summed over its revisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Instances {
    pub ready: u32,
    pub desired: u32,
}

/// One window of the timeline (a second, but for the last, which may be shorter).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    /// When the window ended, in seconds from the start of the run.
    pub t: f64,
    /// Requests due per second (sent or dropped).
    pub offered_rps: f64,
    /// Requests answered with 1xx–3xx per second.
    pub achieved_rps: f64,
    /// The 99th percentile latency of the requests answered in the window; null when none was.
    pub p99_ms: Option<f64>,
    /// Requests that failed or were dropped in the window.
    pub errors: u64,
    /// Requests outstanding at the end of the window.
    pub in_flight: usize,
    /// Null when the target is a URL, or the API did not answer in time.
    pub ready_instances: Option<u32>,
    pub desired_instances: Option<u32>,
}

impl Sample {
    /// The sample of `window`, which lasted `span` and ended `elapsed` into the run.
    pub fn new(
        elapsed: Duration,
        span: Duration,
        window: &Tally,
        in_flight: usize,
        instances: Option<Instances>,
    ) -> Sample {
        let seconds = span.as_secs_f64();
        let per_second = |n: u64| if seconds > 0.0 { round(n as f64 / seconds, 1) } else { 0.0 };
        Sample {
            t: round(elapsed.as_secs_f64(), 3),
            offered_rps: per_second(window.offered),
            achieved_rps: per_second(window.succeeded),
            p99_ms: window.latency_ms(0.99).map(|ms| round(ms, 3)),
            errors: window.total_errors(),
            in_flight,
            ready_instances: instances.map(|i| i.ready),
            desired_instances: instances.map(|i| i.desired),
        }
    }
}

fn round(x: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (x * scale).round() / scale
}

/// The timeline as a JSON array, one sample per line.
pub fn to_json(timeline: &[Sample]) -> Result<String, serde_json::Error> {
    let lines = timeline.iter().map(serde_json::to_string).collect::<Result<Vec<_>, _>>()?;
    if lines.is_empty() {
        return Ok("[]\n".to_string());
    }
    Ok(format!("[\n  {}\n]\n", lines.join(",\n  ")))
}

const WIDTH: u32 = 1100;
const HEIGHT: u32 = 760;
const OFFERED: RGBColor = RGBColor(120, 120, 120);
const ACHIEVED: RGBColor = RGBColor(31, 119, 180);
const ERRORS: RGBColor = RGBColor(214, 39, 40);
const READY: RGBColor = RGBColor(44, 160, 44);
const DESIRED: RGBColor = RGBColor(255, 127, 14);
const LATENCY: RGBColor = RGBColor(148, 103, 189);

/// Draws the timeline as an SVG of two panels sharing the time axis: above, offered and
/// achieved rate and errors per second (left axis) with ready and desired instances (right
/// axis); below, the p99 latency.
pub fn write_chart(path: &Path, title: &str, timeline: &[Sample]) -> Result<(), String> {
    let root = SVGBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    draw(&root, title, timeline).map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

type DrawResult = Result<(), DrawingAreaErrorKind<<SVGBackend<'static> as DrawingBackend>::ErrorType>>;

fn draw(root: &DrawingArea<SVGBackend<'_>, Shift>, title: &str, timeline: &[Sample]) -> DrawResult {
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 20))?;
    let (top, bottom) = root.split_vertically(HEIGHT * 55 / 100);
    let t_max = timeline.last().map_or(1.0, |s| s.t).max(1.0);

    // Load and instances.
    let rps_max =
        timeline.iter().flat_map(|s| [s.offered_rps, s.achieved_rps, s.errors as f64]).fold(0.0, f64::max).max(1.0)
            * 1.1;
    let has_instances = timeline.iter().any(|s| s.desired_instances.is_some() || s.ready_instances.is_some());
    let instances_max =
        timeline.iter().flat_map(|s| [s.ready_instances, s.desired_instances]).flatten().max().unwrap_or(0);
    let mut chart = ChartBuilder::on(&top)
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .right_y_label_area_size(if has_instances { 60 } else { 0 })
        .build_cartesian_2d(0.0..t_max, 0.0..rps_max)?
        .set_secondary_coord(0.0..t_max, 0.0..f64::from(instances_max) + 1.0);
    chart.configure_mesh().x_desc("seconds").y_desc("requests/s").light_line_style(WHITE.mix(0.0)).draw()?;
    if has_instances {
        // Whole instances only: a tick at 2.5 instances would say nothing.
        chart
            .configure_secondary_axes()
            .y_desc("instances")
            .y_labels((instances_max as usize + 2).min(11))
            .y_label_formatter(&|v| format!("{v:.0}"))
            .draw()?;
    }
    let series = |f: fn(&Sample) -> Option<f64>| segments(timeline, f);
    for segment in series(|s| Some(s.achieved_rps)) {
        chart.draw_series(LineSeries::new(segment, ACHIEVED.stroke_width(2)))?;
    }
    chart.draw_series(LineSeries::new(Vec::new(), ACHIEVED))?.label("achieved rps (2xx/3xx)").legend(legend(ACHIEVED));
    // Dashed and drawn last of the two, so that it shows where achieved follows it exactly.
    for segment in series(|s| Some(s.offered_rps)) {
        chart.draw_series(DashedLineSeries::new(segment, 6, 4, OFFERED.stroke_width(2)))?;
    }
    chart
        .draw_series(LineSeries::new(Vec::new(), OFFERED.stroke_width(2)))?
        .label("offered rps")
        .legend(legend(OFFERED));
    for segment in series(|s| Some(s.errors as f64)) {
        chart.draw_series(LineSeries::new(segment, ERRORS.stroke_width(1)))?;
    }
    chart.draw_series(LineSeries::new(Vec::new(), ERRORS))?.label("errors").legend(legend(ERRORS));
    if has_instances {
        for segment in series(|s| s.desired_instances.map(f64::from)) {
            chart.draw_secondary_series(LineSeries::new(steps(&segment), DESIRED.stroke_width(2)))?;
        }
        chart
            .draw_secondary_series(LineSeries::new(Vec::new(), DESIRED))?
            .label("desired instances (right)")
            .legend(legend(DESIRED));
        for segment in series(|s| s.ready_instances.map(f64::from)) {
            chart.draw_secondary_series(LineSeries::new(steps(&segment), READY.stroke_width(2)))?;
        }
        chart
            .draw_secondary_series(LineSeries::new(Vec::new(), READY))?
            .label("ready instances (right)")
            .legend(legend(READY));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .draw()?;

    // Latency.
    let p99_max = timeline.iter().filter_map(|s| s.p99_ms).fold(0.0, f64::max).max(1.0) * 1.1;
    let mut chart = ChartBuilder::on(&bottom)
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .right_y_label_area_size(if has_instances { 60 } else { 0 })
        .build_cartesian_2d(0.0..t_max, 0.0..p99_max)?;
    chart.configure_mesh().x_desc("seconds").y_desc("p99 latency (ms)").light_line_style(WHITE.mix(0.0)).draw()?;
    for segment in series(|s| s.p99_ms) {
        chart.draw_series(LineSeries::new(segment, LATENCY.stroke_width(2)))?;
    }
    chart.draw_series(LineSeries::new(Vec::new(), LATENCY))?.label("p99 latency").legend(legend(LATENCY));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .draw()?;
    Ok(())
}

fn legend(color: RGBColor) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
}

/// The runs of consecutive samples where `value` is known, as points (t, value): a gap in the
/// data is a gap in the line, not a line drawn across it.
fn segments(timeline: &[Sample], value: fn(&Sample) -> Option<f64>) -> Vec<Vec<(f64, f64)>> {
    let mut out: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut current = Vec::new();
    for s in timeline {
        match value(s) {
            Some(v) => current.push((s.t, v)),
            None if !current.is_empty() => out.push(std::mem::take(&mut current)),
            None => {}
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// A step line through `points`: a count holds its value until the next sample.
fn steps(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(points.len() * 2);
    for (i, &(t, v)) in points.iter().enumerate() {
        if i > 0 {
            out.push((t, points[i - 1].1));
        }
        out.push((t, v));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::bench::stats::Outcome;

    fn sample(t: f64, p99_ms: Option<f64>, instances: Option<(u32, u32)>) -> Sample {
        Sample {
            t,
            offered_rps: 10.0,
            achieved_rps: 9.0,
            p99_ms,
            errors: 1,
            in_flight: 2,
            ready_instances: instances.map(|i| i.0),
            desired_instances: instances.map(|i| i.1),
        }
    }

    #[test]
    fn a_sample_gives_rates_per_second_of_its_window() {
        let mut w = Tally::new();
        for _ in 0..5 {
            w.offer(false);
            w.record(Outcome::Answered(200), Duration::from_millis(20));
        }
        w.offer(true);
        let s = Sample::new(Duration::from_millis(3500), Duration::from_millis(500), &w, 3, None);
        assert_eq!((s.t, s.offered_rps, s.achieved_rps, s.errors, s.in_flight), (3.5, 12.0, 10.0, 1, 3));
        assert!((s.p99_ms.unwrap() - 20.0).abs() < 0.05);
        let idle = Sample::new(Duration::from_secs(1), Duration::from_secs(1), &Tally::new(), 0, None);
        assert_eq!(idle.p99_ms, None);
    }

    #[test]
    fn the_json_has_one_object_per_sample_with_nulls_for_what_is_unknown() {
        let timeline = [sample(1.0, Some(12.5), Some((1, 2))), sample(2.0, None, None)];
        let json = to_json(&timeline).unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed[0]["ready_instances"], 1);
        assert_eq!(parsed[0]["desired_instances"], 2);
        assert_eq!(parsed[0]["p99_ms"], 12.5);
        assert!(parsed[1]["p99_ms"].is_null() && parsed[1]["ready_instances"].is_null());
        assert_eq!(json.lines().count(), 4);
        assert_eq!(to_json(&[]).unwrap(), "[]\n");
    }

    #[test]
    fn unknown_values_break_the_line() {
        let timeline = [
            sample(1.0, Some(1.0), None),
            sample(2.0, None, None),
            sample(3.0, Some(3.0), None),
            sample(4.0, Some(4.0), None),
        ];
        let s = segments(&timeline, |s| s.p99_ms);
        assert_eq!(s, vec![vec![(1.0, 1.0)], vec![(3.0, 3.0), (4.0, 4.0)]]);
        assert_eq!(steps(&[(1.0, 1.0), (2.0, 3.0)]), vec![(1.0, 1.0), (2.0, 1.0), (2.0, 3.0)]);
    }

    #[test]
    fn the_chart_is_an_svg_with_a_line_per_series() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chart.svg");
        let timeline: Vec<Sample> = (1..=5).map(|t| sample(f64::from(t), Some(5.0), Some((1, 2)))).collect();
        write_chart(&path, "bench", &timeline).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{svg}");
        assert!(svg.matches("<polyline").count() >= 6, "{svg}");
        assert!(svg.contains("ready instances"));
        // No samples at all still makes a (blank) chart rather than failing.
        write_chart(&path, "bench", &[]).unwrap();
    }
}
