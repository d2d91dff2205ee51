//! Knative and Cloud Run compatibility: a `serving.knative.dev/v1` Service (the format
//! `gcloud run services replace` takes) becomes a Stratus Service, and the scaling annotations
//! both formats may carry become fields of `spec.template.spec.scaling`.

use std::collections::BTreeMap;

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
    if let Some(raw) = annotations.get(CPU_THROTTLING) {
        match raw.trim() {
            "true" => fill(&mut spec.cpu_throttling, true, &at(CPU_THROTTLING), &mut errs),
            "false" => fill(&mut spec.cpu_throttling, false, &at(CPU_THROTTLING), &mut errs),
            other => errs.push(at(CPU_THROTTLING), format!("{other:?} is not true or false")),
        }
    }
    errs.into_result()
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
