//! Knative and Cloud Run compatibility: a `serving.knative.dev/v1` Service (the format
//! `gcloud run services replace` takes) becomes a Stratus Service, and the scaling annotations
//! both formats may carry become fields of `spec.template.spec.scaling`.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::v1::{RevisionSpec, Scaling};
use crate::validation::ErrorList;

pub const KNATIVE_API_VERSION: &str = "serving.knative.dev/v1";

const MIN_SCALE: &[&str] = &["autoscaling.knative.dev/minScale", "autoscaling.knative.dev/min-scale"];
const MAX_SCALE: &[&str] = &["autoscaling.knative.dev/maxScale", "autoscaling.knative.dev/max-scale"];
const INITIAL_SCALE: &[&str] = &["autoscaling.knative.dev/initialScale", "autoscaling.knative.dev/initial-scale"];
const TARGET: &str = "autoscaling.knative.dev/target";
const METRIC: &str = "autoscaling.knative.dev/metric";
const UTILIZATION: &str = "autoscaling.knative.dev/target-utilization-percentage";
const CLASS: &str = "autoscaling.knative.dev/class";
const CPU_THROTTLING: &str = "run.googleapis.com/cpu-throttling";
const STARTUP_CPU_BOOST: &str = "run.googleapis.com/startup-cpu-boost";
/// The annotation that overrides the autoscaler's stable window of one revision, e.g. `"10s"`.
pub const WINDOW: &str = "autoscaling.knative.dev/window";
/// The shortest and longest stable window the annotation may ask for.
pub const MIN_WINDOW: Duration = Duration::from_secs(1);
pub const MAX_WINDOW: Duration = Duration::from_secs(3600);
/// How long a new revision may take to become ready before it is failed and scaled to zero
/// (a Go duration such as `120s`); the cluster's default applies without it.
pub const PROGRESS_DEADLINE: &str = "serving.knative.dev/progress-deadline";
/// The longest progress deadline an annotation may ask for.
pub const MAX_PROGRESS_DEADLINE: Duration = Duration::from_secs(24 * 3600);

/// The progress deadline `annotations` ask for: `None` without the annotation, an error naming
/// what is wrong with one that is not a positive duration of at most a day.
pub fn progress_deadline(annotations: &BTreeMap<String, String>) -> Option<Result<Duration, String>> {
    let raw = annotations.get(PROGRESS_DEADLINE)?;
    Some(match crate::duration::parse(raw.trim()) {
        Ok(d) if d.is_zero() => Err(format!("{raw:?} is not a positive duration")),
        Ok(d) if d > MAX_PROGRESS_DEADLINE => Err(format!("{raw:?} is longer than a day (24h)")),
        Ok(d) => Ok(d),
        Err(e) => Err(e),
    })
}

/// Applies the Knative and Cloud Run annotations of a revision template (`annotations`, found
/// at `path`) to its spec. An annotation fills a field left unset; one that contradicts an
/// explicitly set field, or that does not parse, is an error naming the annotation.
pub fn apply_annotations(
    spec: &mut RevisionSpec,
    annotations: &BTreeMap<String, String>,
    path: &str,
) -> Result<(), ErrorList> {
    let mut errs = ErrorList::default();
    let at = |key: &str| format!("{path}[{key}]");
    let scaling = spec.scaling.get_or_insert_with(Scaling::default);

    for (keys, field) in [(MIN_SCALE, 0), (MAX_SCALE, 1), (INITIAL_SCALE, 2)] {
        for key in keys {
            let Some(raw) = annotations.get(*key) else { continue };
            match raw.trim().parse::<i32>() {
                Ok(v) if v >= 0 => {
                    let slot = match field {
                        0 => &mut scaling.min_instances,
                        1 => &mut scaling.max_instances,
                        _ => &mut scaling.initial_scale,
                    };
                    // Knative's maxScale 0 means "no limit"; leave the default in place.
                    if field == 1 && v == 0 {
                        continue;
                    }
                    fill(slot, v, &at(key), &mut errs);
                }
                _ => errs.push(at(key), format!("{raw:?} is not a non-negative whole number")),
            }
        }
    }
    if let Some(raw) = annotations.get(TARGET) {
        match raw.trim().parse::<f64>() {
            Ok(v) if v.is_finite() && v > 0.0 => fill(&mut scaling.target, v, &at(TARGET), &mut errs),
            _ => errs.push(at(TARGET), format!("{raw:?} is not a positive number")),
        }
    }
    if let Some(raw) = annotations.get(UTILIZATION) {
        match raw.trim().parse::<f64>() {
            Ok(v) if v > 0.0 && v <= 100.0 => {
                fill(&mut scaling.target_utilization_percentage, v.round() as i32, &at(UTILIZATION), &mut errs)
            }
            _ => errs.push(at(UTILIZATION), format!("{raw:?} is not a percentage between 1 and 100")),
        }
    }
    if let Some(raw) = annotations.get(METRIC) {
        match raw.as_str() {
            "concurrency" | "rps" | "cpu" => {
                if scaling.metric.is_empty() {
                    scaling.metric = raw.clone();
                } else if scaling.metric != *raw {
                    errs.push(at(METRIC), format!("{raw:?} contradicts spec scaling metric {:?}", scaling.metric));
                }
            }
            other => errs.push(at(METRIC), format!("{other:?} is not one of concurrency, rps, cpu")),
        }
    }
    if let Some(raw) = annotations.get(CLASS)
        && raw != "kpa.autoscaling.knative.dev"
    {
        errs.push(
            at(CLASS),
            format!("{raw:?} is not supported: Stratus scales with the KPA (kpa.autoscaling.knative.dev)"),
        );
    }
    if let Some(raw) = annotations.get(WINDOW)
        && parse_window(raw).is_none()
    {
        errs.push(
            at(WINDOW),
            format!(
                "{raw:?} is not a duration between {}s and {}s in whole units, such as 10s or 2m",
                MIN_WINDOW.as_secs(),
                MAX_WINDOW.as_secs()
            ),
        );
    }
    if let Some(Err(why)) = progress_deadline(annotations) {
        errs.push(at(PROGRESS_DEADLINE), why);
    }
    if let Some(raw) = annotations.get(CPU_THROTTLING) {
        match raw.trim() {
            "true" => fill(&mut spec.cpu_throttling, true, &at(CPU_THROTTLING), &mut errs),
            "false" => fill(&mut spec.cpu_throttling, false, &at(CPU_THROTTLING), &mut errs),
            other => errs.push(at(CPU_THROTTLING), format!("{other:?} is not true or false")),
        }
    }
    if let Some(raw) = annotations.get(STARTUP_CPU_BOOST) {
        match raw.trim() {
            "true" => fill(&mut spec.startup_cpu_boost, true, &at(STARTUP_CPU_BOOST), &mut errs),
            "false" => fill(&mut spec.startup_cpu_boost, false, &at(STARTUP_CPU_BOOST), &mut errs),
            other => errs.push(at(STARTUP_CPU_BOOST), format!("{other:?} is not true or false")),
        }
    }
    errs.into_result()
}

/// A Go-style duration such as `10s`, `1m30s`, `500ms` or `1h`, between [`MIN_WINDOW`] and
/// [`MAX_WINDOW`]; `None` otherwise.
pub fn parse_window(s: &str) -> Option<Duration> {
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let part = match &rest[..unit] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.checked_mul(60)?),
            "h" => Duration::from_secs(n.checked_mul(3600)?),
            _ => return None,
        };
        rest = &rest[unit..];
        total = total.checked_add(part)?;
    }
    (MIN_WINDOW..=MAX_WINDOW).contains(&total).then_some(total)
}

fn fill<T: PartialEq + Copy + std::fmt::Debug>(slot: &mut Option<T>, value: T, path: &str, errs: &mut ErrorList) {
    match slot {
        None => *slot = Some(value),
        Some(existing) if *existing == value => {}
        Some(existing) => errs.push(path, format!("{value:?} contradicts the value {existing:?} set in the spec")),
    }
}

/// Prepares an update of a Service whose template annotations changed. A spec field that an
/// annotation filled in holds that annotation's old value; when the annotation changes (or
/// goes away) and the field was left as it was stored, the field is released so that the new
/// annotation, or the default, decides — as editing `autoscaling.knative.dev/maxScale` on an
/// exported manifest should. A field the update itself changed is kept.
pub fn release_changed_annotations(new: &mut crate::AnyObject, stored: &crate::AnyObject) {
    let (crate::AnyObject::Service(new), crate::AnyObject::Service(stored)) = (new, stored) else { return };
    let Some(old_template) = stored.spec.as_ref().and_then(|s| s.template.as_ref()) else { return };
    let Some(template) = new.spec.as_mut().and_then(|s| s.template.as_mut()) else { return };
    let empty = BTreeMap::new();
    let old_ann = old_template.metadata.as_ref().map(|m| &m.annotations).unwrap_or(&empty);
    let new_ann = template.metadata.as_ref().map(|m| m.annotations.clone()).unwrap_or_default();
    let changed = |keys: &[&str]| keys.iter().any(|k| new_ann.get(*k) != old_ann.get(*k));
    let old = old_template.spec.clone().unwrap_or_default();
    let old_s = old.scaling.clone().unwrap_or_default();
    let Some(spec) = template.spec.as_mut() else { return };
    if changed(&[CPU_THROTTLING]) && spec.cpu_throttling == old.cpu_throttling {
        spec.cpu_throttling = None;
    }
    if changed(&[STARTUP_CPU_BOOST]) && spec.startup_cpu_boost == old.startup_cpu_boost {
        spec.startup_cpu_boost = None;
    }
    let s = spec.scaling.get_or_insert_with(Scaling::default);
    if changed(MIN_SCALE) && s.min_instances == old_s.min_instances {
        s.min_instances = None;
    }
    if changed(MAX_SCALE) && s.max_instances == old_s.max_instances {
        s.max_instances = None;
    }
    if changed(INITIAL_SCALE) && s.initial_scale == old_s.initial_scale {
        s.initial_scale = None;
    }
    if changed(&[TARGET]) && s.target == old_s.target {
        s.target = None;
    }
    if changed(&[UTILIZATION]) && s.target_utilization_percentage == old_s.target_utilization_percentage {
        s.target_utilization_percentage = None;
    }
    if changed(&[METRIC]) && s.metric == old_s.metric {
        s.metric.clear();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn with(key: &str, value: &str) -> BTreeMap<String, String> {
        [(key.to_string(), value.to_string())].into()
    }

    #[test]
    fn the_window_is_checked_at_admission() {
        let path = "spec.template.metadata.annotations";
        assert!(apply_annotations(&mut RevisionSpec::default(), &with(WINDOW, "10s"), path).is_ok());
        for bad in ["soon", "10", "500ms", "2h", "1.5s"] {
            let errs = apply_annotations(&mut RevisionSpec::default(), &with(WINDOW, bad), path).unwrap_err();
            assert!(errs.to_string().contains("[autoscaling.knative.dev/window]"), "{bad}: {errs}");
        }
    }

    #[test]
    fn the_progress_deadline_is_a_positive_duration_checked_at_admission() {
        assert_eq!(progress_deadline(&BTreeMap::new()), None);
        assert_eq!(progress_deadline(&with(PROGRESS_DEADLINE, "90s")), Some(Ok(Duration::from_secs(90))));
        assert_eq!(progress_deadline(&with(PROGRESS_DEADLINE, "10m")), Some(Ok(Duration::from_secs(600))));
        for bad in ["0s", "soon", "600", "48h", "-5s"] {
            let annotations = with(PROGRESS_DEADLINE, bad);
            assert!(matches!(progress_deadline(&annotations), Some(Err(_))), "{bad}");
            let errs =
                apply_annotations(&mut RevisionSpec::default(), &annotations, "spec.template.metadata.annotations")
                    .unwrap_err();
            assert!(
                errs.to_string().contains("spec.template.metadata.annotations[serving.knative.dev/progress-deadline]"),
                "{errs}"
            );
        }
    }
}
