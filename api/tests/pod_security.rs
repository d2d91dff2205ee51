//! The restricted profile through the whole input path: a manifest (Stratus-native or Knative)
//! decoded, prepared and validated, as `stratus apply` and the API server handle it.
#![allow(clippy::unwrap_used)]

use stratus_api::decode::decode_manifest;
use stratus_api::{AnyObject, prepare};

fn prepared(yaml: &str) -> Result<AnyObject, String> {
    let mut docs = decode_manifest(yaml);
    assert_eq!(docs.len(), 1, "expected one document");
    let (_, mut obj) = docs.remove(0).map_err(|e| e.to_string())?;
    prepare(&mut obj).map_err(|e| e.to_string())?;
    Ok(obj)
}

/// A Service of `api_version` whose one container adds `caps` (a YAML list).
fn service(api_version: &str, caps: &str) -> String {
    format!(
        r#"
apiVersion: {api_version}
kind: Service
metadata: {{name: hello}}
spec:
  template:
    spec:
      containers:
        - image: 127.0.0.1:5000/hello:v1
          securityContext:
            runAsNonRoot: true
            runAsUser: 1000
            capabilities:
              add: {caps}
              drop: [ALL]
"#
    )
}

const BOTH: [&str; 2] = ["stratus.dev/v1", "serving.knative.dev/v1"];

#[test]
fn adding_a_dangerous_capability_is_refused_naming_the_field() {
    for api_version in BOTH {
        for cap in ["SYS_ADMIN", "SYS_MODULE", "DAC_READ_SEARCH", "ALL", "CAP_SYS_ADMIN", "sys_module"] {
            let err = prepared(&service(api_version, &format!("[NET_BIND_SERVICE, {cap}]"))).unwrap_err();
            let path = "spec.template.spec.containers[0].securityContext.capabilities.add[1]";
            assert!(err.starts_with(&format!("{path}: ")), "{api_version} {cap}: {err}");
            assert!(err.contains("cannot be added"), "{api_version} {cap}: {err}");
        }
    }
}

#[test]
fn net_bind_service_is_accepted_in_any_spelling_and_stored_canonically() {
    for api_version in BOTH {
        let obj = prepared(&service(api_version, "[cap_net_bind_service]")).unwrap();
        let AnyObject::Service(svc) = obj else { panic!("not a service") };
        let container = svc.spec.and_then(|s| s.template).and_then(|t| t.spec).unwrap().containers.remove(0);
        let caps = container.security_context.and_then(|s| s.capabilities).unwrap();
        assert_eq!(caps.add, ["NET_BIND_SERVICE"], "{api_version}");
        assert_eq!(caps.drop, ["ALL"], "{api_version}");
    }
}

#[test]
fn an_instance_is_held_to_the_same_rules() {
    let yaml = r#"
apiVersion: stratus.dev/v1
kind: Instance
metadata: {name: i1, namespace: default}
spec:
  containers:
    - image: 127.0.0.1:5000/hello:v1
      securityContext: {capabilities: {add: [SYS_PTRACE]}}
"#;
    let err = prepared(yaml).unwrap_err();
    assert!(err.starts_with("spec.containers[0].securityContext.capabilities.add[0]: "), "{err}");
}

/// An object stored before the rules keeps its securityContext through later writes: the rules
/// hold for what changes, not for what was already there.
#[test]
fn an_unchanged_security_context_of_the_stored_object_is_not_held_to_the_rules() {
    use stratus_api::prepare_replacing;
    use stratus_api::validation::validate_replacing;
    let decode = |yaml: &str| decode_manifest(yaml).remove(0).unwrap().1;
    for api_version in BOTH {
        // As it was stored, before the rules: no prepare.
        let stored = decode(&service(api_version, "[SYS_ADMIN]"));
        let mut same = decode(&service(api_version, "[sys_admin]"));
        prepare_replacing(&mut same, &stored).unwrap_or_else(|e| panic!("{api_version}: {e}"));
        validate_replacing(&same, &stored).unwrap();

        // A change to the securityContext, even another spelling of the same dangerous thing
        // plus one more, is held to the rules, and so is a new object.
        let mut changed = decode(&service(api_version, "[SYS_ADMIN, NET_RAW]"));
        let err = prepare_replacing(&mut changed, &stored).unwrap_err().to_string();
        assert!(err.contains("capabilities.add[0]: \"SYS_ADMIN\" cannot be added"), "{api_version}: {err}");
        assert!(err.contains("capabilities.add[1]: \"NET_RAW\" cannot be added"), "{api_version}: {err}");
        assert!(prepared(&service(api_version, "[SYS_ADMIN]")).is_err());
        // Other rules still hold for the unchanged container.
        let mut broken = decode(&service(api_version, "[SYS_ADMIN]"));
        if let AnyObject::Service(svc) = &mut broken {
            svc.spec.as_mut().unwrap().template.as_mut().unwrap().spec.as_mut().unwrap().containers[0].image.clear();
        }
        let err = prepare_replacing(&mut broken, &stored).unwrap_err().to_string();
        assert_eq!(err, "spec.template.spec.containers[0].image: is required", "{api_version}");
    }

    // A second container is new, whatever the first's.
    let instance = |containers: &str| {
        decode(&format!(
            r#"
apiVersion: stratus.dev/v1
kind: Instance
metadata: {{name: hello-1, namespace: default}}
spec:
  containers: {containers}
"#
        ))
    };
    let one = "[{image: a, securityContext: {capabilities: {add: [SYS_ADMIN]}}}]";
    let two = "[{image: a, securityContext: {capabilities: {add: [SYS_ADMIN]}}}, \
               {image: b, securityContext: {capabilities: {add: [SYS_ADMIN]}}}]";
    let stored = instance(one);
    validate_replacing(&instance(one), &stored).unwrap();
    let err = validate_replacing(&instance(two), &stored).unwrap_err().to_string();
    assert!(err.starts_with("spec.containers[1].securityContext.capabilities.add[0]: "), "{err}");
}
