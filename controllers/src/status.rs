//! Status conditions as Kubernetes and Knative report them: a type, `True`/`False`/`Unknown`,
//! a one-word reason and a message a person can act on.
//!
//! [`set`] keeps `lastTransitionTime` while the status stays the same, so that writing the same
//! condition twice leaves the status byte-for-byte equal and a reconciler that runs twice writes
//! nothing the second time.

use stratus_api::v1::Condition;

use crate::events::now;

pub const TRUE: &str = "True";
pub const FALSE: &str = "False";
pub const UNKNOWN: &str = "Unknown";

/// The condition every kind reports: whether the object does what its spec asks.
pub const READY: &str = "Ready";

/// The condition of `type_` in `conditions`, if reported.
pub fn get<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.r#type == type_)
}

/// The status of the condition of `type_`: `Unknown` when it is not reported.
pub fn status<'a>(conditions: &'a [Condition], type_: &str) -> &'a str {
    get(conditions, type_).map_or(UNKNOWN, |c| c.status.as_str())
}

/// Whether the condition of `type_` is reported `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    status(conditions, type_) == TRUE
}

/// A condition without its transition time, as reconcilers compute it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cond {
    pub type_: &'static str,
    pub status: &'static str,
    pub reason: String,
    pub message: String,
}

impl Cond {
    pub fn new(
        type_: &'static str,
        status: &'static str,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Cond {
        Cond { type_, status, reason: reason.into(), message: message.into() }
    }

    pub fn true_(type_: &'static str) -> Cond {
        Cond::new(type_, TRUE, "", "")
    }

    /// The same status, reason and message under another type (a summary condition such as
    /// `Ready` repeating the one that decides it).
    pub fn as_type(&self, type_: &'static str) -> Cond {
        Cond { type_, ..self.clone() }
    }

    /// This condition as reported now: its transition time is kept from `conditions` when the
    /// status did not change.
    fn to_condition(&self, conditions: &[Condition]) -> Condition {
        let previous = get(conditions, self.type_);
        let last_transition_time = match previous {
            Some(p) if p.status == self.status => p.last_transition_time,
            _ => Some(now()),
        };
        Condition {
            r#type: self.type_.to_string(),
            status: self.status.to_string(),
            reason: self.reason.clone(),
            message: self.message.clone(),
            last_transition_time,
            severity: previous.map(|p| p.severity.clone()).unwrap_or_default(),
        }
    }
}

/// Reports `cond` in `conditions`, replacing the previous condition of its type. Conditions of
/// other types (written by other controllers) are kept, in their order.
pub fn set(conditions: &mut Vec<Condition>, cond: &Cond) {
    let next = cond.to_condition(conditions);
    match conditions.iter_mut().find(|c| c.r#type == cond.type_) {
        Some(existing) => *existing = next,
        None => conditions.push(next),
    }
}

/// The summary of several conditions: the first `False` one, else the first `Unknown` one,
/// else `True`. Reported under `type_`.
pub fn summarize(type_: &'static str, parts: &[&Cond]) -> Cond {
    parts
        .iter()
        .find(|c| c.status == FALSE)
        .or_else(|| parts.iter().find(|c| c.status != TRUE))
        .map_or_else(|| Cond::true_(type_), |c| c.as_type(type_))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transition_time_moves_only_with_the_status() {
        let mut conditions = Vec::new();
        set(&mut conditions, &Cond::new(READY, UNKNOWN, "Deploying", "waiting"));
        let first = conditions[0].last_transition_time;
        assert!(first.is_some());
        let mut earlier = conditions.clone();
        earlier[0].last_transition_time = Some(stratus_api::Timestamp { seconds: 1, nanos: 0 });
        set(&mut earlier, &Cond::new(READY, UNKNOWN, "Deploying", "still waiting"));
        assert_eq!(earlier[0].last_transition_time.map(|t| t.seconds), Some(1), "same status keeps the time");
        assert_eq!(earlier[0].message, "still waiting");
        set(&mut earlier, &Cond::true_(READY));
        assert_ne!(earlier[0].last_transition_time.map(|t| t.seconds), Some(1), "a new status moves it");
        assert_eq!(earlier.len(), 1);
    }

    #[test]
    fn other_types_are_kept_and_summaries_pick_the_worst() {
        let mut conditions = Vec::new();
        set(&mut conditions, &Cond::new("ImageResolved", FALSE, "ContainerMissing", "gone"));
        set(&mut conditions, &Cond::true_(READY));
        assert_eq!(conditions.len(), 2);
        assert_eq!(status(&conditions, "ImageResolved"), FALSE);
        assert_eq!(status(&conditions, "Nope"), UNKNOWN);

        let ok = Cond::true_("A");
        let waiting = Cond::new("B", UNKNOWN, "Deploying", "waiting");
        let failed = Cond::new("C", FALSE, "RevisionFailed", "boom");
        assert_eq!(summarize(READY, &[&ok, &ok]).status, TRUE);
        assert_eq!(summarize(READY, &[&ok, &waiting]).reason, "Deploying");
        let worst = summarize(READY, &[&waiting, &failed]);
        assert_eq!((worst.type_, worst.status, worst.reason.as_str()), (READY, FALSE, "RevisionFailed"));
    }
}
