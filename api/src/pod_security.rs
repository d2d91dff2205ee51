//! The Pod Security Standards' "restricted" profile, which every Stratus container gets: the
//! part a manifest can ask for, checked here before anything is stored. The node agent applies
//! the rest whatever the manifest says (every capability dropped, no new privileges, the
//! runtime's default seccomp profile, an isolated network) and checks `runAsNonRoot` against
//! the image, which only it can see.
//!
//! Capability names are read as Kubernetes and Docker read them: case-insensitively, with or
//! without the `CAP_` prefix (`cap_net_bind_service` is `NET_BIND_SERVICE`).

use crate::v1::SecurityContext;
use crate::validation::ErrorList;

/// The capabilities a container may add back after all are dropped: binding a port below 1024,
/// and nothing else (the restricted profile's list).
pub const ALLOWED_CAPABILITIES: &[&str] = &["NET_BIND_SERVICE"];

/// A capability's canonical name: upper case, without the `CAP_` prefix.
pub fn capability_name(raw: &str) -> String {
    let upper = raw.to_ascii_uppercase();
    match upper.strip_prefix("CAP_") {
        Some(name) => name.to_owned(),
        None => upper,
    }
}

/// Whether a container may add the capability `raw` names.
pub fn capability_allowed(raw: &str) -> bool {
    ALLOWED_CAPABILITIES.contains(&capability_name(raw).as_str())
}

/// Writes every capability of `sc` by its canonical name (see [`capability_name`]), so that
/// what is stored (and compared) is one spelling.
pub fn normalize(sc: &mut SecurityContext) {
    if let Some(caps) = &mut sc.capabilities {
        for name in caps.add.iter_mut().chain(caps.drop.iter_mut()) {
            *name = capability_name(name);
        }
    }
}

/// Checks a container's `securityContext`, found at `path`
/// (`spec.template.spec.containers[0].securityContext`), against the restricted profile.
pub fn validate(sc: &SecurityContext, path: &str, errs: &mut ErrorList) {
    if sc.run_as_user.is_some_and(|u| u < 0) {
        errs.push(format!("{path}.runAsUser"), "must not be negative");
    }
    if sc.run_as_group.is_some_and(|g| g < 0) {
        errs.push(format!("{path}.runAsGroup"), "must not be negative");
    }
    if sc.run_as_non_root == Some(true) && sc.run_as_user == Some(0) {
        errs.push(format!("{path}.runAsUser"), "0 is root, which runAsNonRoot: true forbids");
    }
    if sc.allow_privilege_escalation == Some(true) {
        errs.push(format!("{path}.allowPrivilegeEscalation"), "privilege escalation is not allowed");
    }
    let added = sc.capabilities.as_ref().map(|c| c.add.as_slice()).unwrap_or_default();
    for (i, raw) in added.iter().enumerate() {
        if !capability_allowed(raw) {
            errs.push(
                format!("{path}.capabilities.add[{i}]"),
                format!(
                    "{raw:?} cannot be added: every capability is dropped and only {} may be added back",
                    ALLOWED_CAPABILITIES.join(", ")
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::Capabilities;

    fn adding(caps: &[&str]) -> SecurityContext {
        SecurityContext {
            capabilities: Some(Capabilities { add: caps.iter().map(|c| c.to_string()).collect(), drop: vec![] }),
            ..Default::default()
        }
    }

    fn errors(sc: &SecurityContext) -> Vec<(String, String)> {
        let mut errs = ErrorList::default();
        validate(sc, "c.securityContext", &mut errs);
        errs.0.into_iter().map(|e| (e.path, e.message)).collect()
    }

    #[test]
    fn capability_names_are_read_case_insensitively_with_or_without_the_prefix() {
        for raw in ["NET_BIND_SERVICE", "net_bind_service", "CAP_NET_BIND_SERVICE", "cap_Net_Bind_Service"] {
            assert_eq!(capability_name(raw), "NET_BIND_SERVICE", "{raw:?}");
            assert!(capability_allowed(raw), "{raw:?}");
        }
        let mut sc = adding(&["cap_net_bind_service"]);
        if let Some(caps) = sc.capabilities.as_mut() {
            caps.drop.push("all".into());
        }
        normalize(&mut sc);
        let caps = sc.capabilities.unwrap_or_default();
        assert_eq!((caps.add, caps.drop), (vec!["NET_BIND_SERVICE".to_string()], vec!["ALL".to_string()]));
    }

    #[test]
    fn only_net_bind_service_may_be_added() {
        assert!(errors(&adding(&["NET_BIND_SERVICE", "cap_net_bind_service"])).is_empty());
        for bad in [
            "SYS_ADMIN",
            "SYS_MODULE",
            "DAC_READ_SEARCH",
            "ALL",
            "all",
            "CAP_SYS_PTRACE",
            "NET_RAW",
            "",
            " NET_BIND_SERVICE",
        ] {
            let errs = errors(&adding(&["NET_BIND_SERVICE", bad]));
            assert_eq!(errs.len(), 1, "{bad:?}: {errs:?}");
            assert_eq!(errs[0].0, "c.securityContext.capabilities.add[1]", "{bad:?}");
            assert!(errs[0].1.contains(&format!("{bad:?} cannot be added")), "{bad:?}: {}", errs[0].1);
            assert!(errs[0].1.contains("only NET_BIND_SERVICE"), "{}", errs[0].1);
        }
    }

    #[test]
    fn root_with_run_as_non_root_negative_ids_and_escalation_are_refused() {
        let sc = SecurityContext {
            run_as_user: Some(0),
            run_as_non_root: Some(true),
            run_as_group: Some(-1),
            allow_privilege_escalation: Some(true),
            ..Default::default()
        };
        let paths: Vec<String> = errors(&sc).into_iter().map(|(p, _)| p).collect();
        assert_eq!(
            paths,
            [
                "c.securityContext.runAsGroup",
                "c.securityContext.runAsUser",
                "c.securityContext.allowPrivilegeEscalation"
            ]
        );
        // Root without runAsNonRoot, and a non-root user with it, are fine.
        assert!(errors(&SecurityContext { run_as_user: Some(0), ..Default::default() }).is_empty());
        let non_root = SecurityContext { run_as_user: Some(1000), run_as_non_root: Some(true), ..Default::default() };
        assert!(errors(&non_root).is_empty());
    }
}
