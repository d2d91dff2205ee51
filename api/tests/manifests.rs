//! Manifests as users write them, through decode, prepare (annotations, defaults) and validation.
#![allow(clippy::unwrap_used)]

use stratus_api::decode::decode_manifest;
use stratus_api::validation::validate_update;
use stratus_api::{AnyObject, prepare};

fn one(yaml: &str) -> Result<AnyObject, String> {
    let mut docs = decode_manifest(yaml);
    assert_eq!(docs.len(), 1, "expected one document");
    let (_, mut obj) = docs.remove(0).map_err(|e| e.to_string())?;
    prepare(&mut obj).map_err(|e| e.to_string())?;
    Ok(obj)
}

fn err(yaml: &str) -> String {
    match one(yaml) {
        Ok(o) => panic!("accepted: {o:?}"),
        Err(e) => e,
    }
}

/// The Knative "hello world" Service from the Knative serving documentation.
const KNATIVE_HELLO: &str = r#"
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: hello
spec:
  template:
    spec:
      containers:
        - image: ghcr.io/knative/helloworld-go:latest
          ports:
            - containerPort: 8080
          env:
            - name: TARGET
              value: "World"
"#;

/// The shape `gcloud run services replace` takes, as in the Cloud Run YAML reference.
const CLOUD_RUN: &str = r#"
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: my-service
  labels:
    cloud.googleapis.com/location: us-central1
  annotations:
    run.googleapis.com/ingress: all
spec:
  template:
    metadata:
      name: my-service-v2
      annotations:
        autoscaling.knative.dev/minScale: '1'
        autoscaling.knative.dev/maxScale: '10'
        autoscaling.knative.dev/target: '50'
        autoscaling.knative.dev/metric: 'concurrency'
        run.googleapis.com/cpu-throttling: 'false'
        run.googleapis.com/startup-cpu-boost: 'true'
    spec:
      containerConcurrency: 80
      timeoutSeconds: 300
      serviceAccountName: my-sa
      containers:
      - image: us-docker.pkg.dev/cloudrun/container/hello
        ports:
        - name: http1
          containerPort: 8080
        env:
        - name: FOO
          value: bar
        resources:
          limits:
            cpu: 1000m
            memory: 512Mi
        startupProbe:
          timeoutSeconds: 240
          periodSeconds: 240
          failureThreshold: 1
          tcpSocket:
            port: 8080
  traffic:
  - percent: 100
    latestRevision: true
"#;

#[test]
fn knative_hello_world_applies_unchanged() {
    let AnyObject::Service(svc) = one(KNATIVE_HELLO).expect("accepted") else { panic!("not a service") };
    assert_eq!(svc.api_version, "stratus.dev/v1");
    let rs = svc.spec.and_then(|s| s.template).and_then(|t| t.spec).expect("template");
    assert_eq!(rs.containers[0].env[0].value, "World");
    assert_eq!(rs.container_concurrency, Some(80));
}

#[test]
fn cloud_run_manifest_converts_with_annotations() {
    let AnyObject::Service(svc) = one(CLOUD_RUN).expect("accepted") else { panic!("not a service") };
    let spec = svc.spec.expect("spec");
    let rs = spec.template.and_then(|t| t.spec).expect("template");
    let scaling = rs.scaling.expect("scaling");
    assert_eq!(scaling.min_instances, Some(1));
    assert_eq!(scaling.max_instances, Some(10));
    assert_eq!(scaling.target, Some(50.0));
    assert_eq!(scaling.metric, "concurrency");
    assert_eq!(rs.cpu_throttling, Some(false));
    assert_eq!(rs.startup_cpu_boost, Some(true), "run.googleapis.com/startup-cpu-boost is honoured");
    assert_eq!(rs.service_account_name, "my-sa");
    assert_eq!(spec.traffic[0].percent, Some(100));
}

#[test]
fn numeric_quantities_are_accepted() {
    let yaml =
        KNATIVE_HELLO.replace("          env:", "          resources: {limits: {cpu: 2, memory: 1Gi}}\n          env:");
    let AnyObject::Service(svc) = one(&yaml).expect("accepted") else { panic!() };
    let rs = svc.spec.and_then(|s| s.template).and_then(|t| t.spec).expect("template");
    assert_eq!(rs.containers[0].resources.as_ref().map(|r| r.limits["cpu"].as_str()), Some("2"));
}

#[test]
fn several_documents_and_lists() {
    let text = format!(
        "{KNATIVE_HELLO}\n---\napiVersion: stratus.dev/v1\nkind: Namespace\nmetadata: {{name: team-a}}\n---\n---\nkind: List\napiVersion: v1\nitems:\n- apiVersion: stratus.dev/v1\n  kind: Tenant\n  metadata: {{name: acme}}\n"
    );
    let docs = decode_manifest(&text);
    let kinds: Vec<_> = docs.into_iter().map(|d| d.expect("ok").1.info().kind).collect();
    assert_eq!(kinds, ["Service", "Namespace", "Tenant"]);
}

#[test]
fn every_kind_of_bad_input_names_its_field() {
    let cases: &[(&str, &str)] = &[
        (&KNATIVE_HELLO.replace("- image:", "- imag:"), "spec.template.spec.containers[0].imag"),
        (
            &KNATIVE_HELLO.replace("containerPort: 8080", "containerPort: eighty"),
            "spec.template.spec.containers[0].ports[0].containerPort",
        ),
        (
            &KNATIVE_HELLO.replace("containerPort: 8080", "containerPort: 70000"),
            "spec.template.spec.containers[0].ports[0].containerPort: 70000 is not between 1 and 65535",
        ),
        (
            &KNATIVE_HELLO.replace("name: hello", "name: Hello_World"),
            "metadata.name: \"Hello_World\" is not a DNS label",
        ),
        (
            &KNATIVE_HELLO.replace("- image: ghcr.io/knative/helloworld-go:latest", "- name: x"),
            "spec.template.spec.containers[0].image: is required",
        ),
        (
            &KNATIVE_HELLO.replace("          env:", "          resources: {limits: {memory: 12XB}}\n          env:"),
            "spec.template.spec.containers[0].resources.limits.memory: \"12XB\" has an unknown suffix",
        ),
        (
            &KNATIVE_HELLO.replace(
                "              value: \"World\"",
                "              value: \"World\"\n            - name: PORT\n              value: '1'",
            ),
            "spec.template.spec.containers[0].env[1].name: PORT is set by the platform",
        ),
        (
            &KNATIVE_HELLO
                .replace("spec:\n  template:", "spec:\n  traffic: [{percent: 50, latestRevision: true}]\n  template:"),
            "spec.traffic: percentages add up to 50",
        ),
        (
            &KNATIVE_HELLO.replace("metadata:\n  name: hello", "metadata:\n  name: hello\n  labels: {app: 'a b'}"),
            "metadata.labels[app]",
        ),
        (
            &KNATIVE_HELLO.replace(
                "    spec:\n      containers",
                "    metadata: {annotations: {autoscaling.knative.dev/minScale: 'lots'}}\n    spec:\n      containers",
            ),
            "spec.template.metadata.annotations[autoscaling.knative.dev/minScale]: \"lots\" is not a non-negative whole number",
        ),
        ("apiVersion: stratus.dev/v1\nkind: Widget\nmetadata: {name: x}\n", "kind: \"Widget\" is not a kind"),
        ("apiVersion: apps/v1\nkind: Deployment\n", "apiVersion: \"apps/v1\" is not supported"),
        ("kind: Service\n", "apiVersion: is required"),
        ("- just\n- a list\n", "expected an object"),
        (
            "apiVersion: stratus.dev/v1\nkind: Namespace\nmetadata: {name: a, namespace: b}\n",
            "metadata.namespace: Namespace is cluster-scoped",
        ),
        (
            "apiVersion: stratus.dev/v1\nkind: Service\nmetadata: {name: a}\n",
            "spec.template.spec.containers: at least one container is required",
        ),
        (
            "apiVersion: stratus.dev/v1\nkind: Service\nmetadata: {name: a}\nspec: {template: {spec: {containers: [{image: x}], containerConcurrency: -1}}}\n",
            "containerConcurrency: -1 is not between 0 (unlimited) and 1000",
        ),
        (
            "apiVersion: stratus.dev/v1\nkind: Endpoints\nmetadata: {name: a}\nspec: {addresses: [{address: 'n:1', containerAddress: 'n:1'}]}\n",
            "spec.addresses[0].containerAddress: \"n:1\" is not an IPv4 address and port",
        ),
        (
            "apiVersion: stratus.dev/v1\nkind: Node\nmetadata: {name: a}\nstatus: {instanceCidrs: ['10.0.0.0/8', '10.0.0.0/33']}\n",
            "status.instanceCidrs[1]: \"33\" in \"10.0.0.0/33\" is not a prefix length from 8 to 32",
        ),
        (
            "apiVersion: stratus.dev/v1\nkind: Node\nmetadata: {name: a}\nstatus: {instanceCidrs: ['0.0.0.0/0']}\n",
            "status.instanceCidrs[0]: \"0\" in \"0.0.0.0/0\" is not a prefix length from 8 to 32",
        ),
        (
            "apiVersion: stratus.dev/v1\nkind: Node\nmetadata: {name: a}\nstatus: {instanceCidrs: ['127.0.0.0/8']}\n",
            "is in 0.0.0.0/8 or the loopback network",
        ),
        (
            "apiVersion: stratus.dev/v1\nkind: Node\nmetadata: {name: a}\nstatus: {instanceCidrs: ['fd00::/64']}\n",
            "is not an IPv4 address",
        ),
        (
            "apiVersion: stratus.dev/v1\nkind: Node\nmetadata: {name: a}\nstatus: {instanceCidrs: ['10.0.0.0/016']}\n",
            "is not a prefix length from 8 to 32",
        ),
    ];
    for (yaml, want) in cases {
        let got = err(yaml);
        assert!(got.contains(want), "for {yaml}\nwant {want:?}\ngot  {got:?}");
    }
}

#[test]
fn malformed_yaml_is_reported() {
    let docs = decode_manifest("apiVersion: stratus.dev/v1\nkind: [unclosed\n");
    let e = docs.into_iter().next().expect("one result").expect_err("an error");
    assert!(e.to_string().contains("invalid YAML"), "{e}");
}

#[test]
fn a_changed_template_must_not_keep_its_revision_name() {
    let with = |name: &str, target: &str| {
        one(&format!(
            r#"
apiVersion: stratus.dev/v1
kind: Service
metadata: {{name: hello}}
spec:
  template:
    metadata: {{name: {name}}}
    spec:
      containers:
        - image: 127.0.0.1:5000/hello:v1
          env: [{{name: TARGET, value: {target}}}]
"#
        ))
        .unwrap()
    };
    let stored = with("hello-blue", "one");
    // The same template under its name, or a changed one under a new name: fine.
    assert!(validate_update(&with("hello-blue", "one"), &stored).is_ok());
    assert!(validate_update(&with("hello-green", "two"), &stored).is_ok());
    // A changed template under the same name: refused, naming the field.
    let errs = validate_update(&with("hello-blue", "two"), &stored).unwrap_err().to_string();
    assert!(errs.starts_with("spec.template.metadata.name: revision \"hello-blue\" already names"), "{errs}");
}

/// Env from a Secret, as Knative and Cloud Run write it (Cloud Run's `key: latest` included).
const KNATIVE_SECRET_ENV: &str = r#"
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: app
spec:
  template:
    spec:
      containers:
        - image: example.com/app
          env:
            - name: DB_PASSWORD
              valueFrom:
                secretKeyRef:
                  name: db
                  key: password
            - name: API_KEY
              valueFrom:
                secretKeyRef: {name: api, key: latest, optional: true}
            - name: PLAIN
              value: x
"#;

#[test]
fn env_from_secrets_decodes_in_knative_and_native_manifests() {
    for manifest in
        [KNATIVE_SECRET_ENV.to_string(), KNATIVE_SECRET_ENV.replace("serving.knative.dev/v1", "stratus.dev/v1")]
    {
        let Ok(AnyObject::Service(svc)) = one(&manifest) else { panic!("{manifest} is refused") };
        let env = &svc.spec.unwrap().template.unwrap().spec.unwrap().containers[0].env;
        let secret = |i: usize| env[i].value_from.as_ref().and_then(|f| f.secret_key_ref.clone()).unwrap();
        assert_eq!((secret(0).name.as_str(), secret(0).key.as_str(), secret(0).optional), ("db", "password", None));
        assert_eq!(
            (secret(1).name.as_str(), secret(1).key.as_str(), secret(1).optional),
            ("api", "latest", Some(true))
        );
        assert!(env[0].value.is_empty());
        assert_eq!((env[2].value.as_str(), env[2].value_from.is_none()), ("x", true));
    }
}

#[test]
fn env_takes_a_value_or_a_secret_reference_not_both() {
    let env = |item: &str| {
        format!(
            "apiVersion: stratus.dev/v1\nkind: Service\nmetadata: {{name: app}}\n\
             spec: {{template: {{spec: {{containers: [{{image: x, env: [{item}]}}]}}}}}}\n"
        )
    };
    let both = err(&env("{name: A, value: v, valueFrom: {secretKeyRef: {name: s, key: k}}}"));
    assert!(
        both.contains("spec.template.spec.containers[0].env[0].valueFrom: may not be given together with value"),
        "{both}"
    );
    let no_source = err(&env("{name: A, valueFrom: {}}"));
    assert!(no_source.contains("env[0].valueFrom.secretKeyRef: is required"), "{no_source}");
    let bad_ref = err(&env("{name: A, valueFrom: {secretKeyRef: {name: Not_A_Name, key: 'a/b'}}}"));
    assert!(bad_ref.contains("env[0].valueFrom.secretKeyRef.name: \"Not_A_Name\" is not a DNS subdomain"), "{bad_ref}");
    assert!(bad_ref.contains("env[0].valueFrom.secretKeyRef.key: \"a/b\" is not a valid key"), "{bad_ref}");
    let no_key = err(&env("{name: A, valueFrom: {secretKeyRef: {name: s}}}"));
    assert!(no_key.contains("env[0].valueFrom.secretKeyRef.key: is required"), "{no_key}");
}

#[test]
fn secrets_take_kubernetes_keys_and_at_most_a_mebibyte() {
    let secret =
        |data: &str| format!("apiVersion: stratus.dev/v1\nkind: Secret\nmetadata: {{name: db}}\ndata: {data}\n");
    let Ok(AnyObject::Secret(s)) = one(&secret("{password: hunter2, .env: 'A=1', tls.crt: x, a-b_c: y}")) else {
        panic!("a good secret is refused")
    };
    assert_eq!(s.data["password"], "hunter2");
    assert_eq!(s.r#type, "Opaque");
    assert_eq!(s.metadata.as_ref().unwrap().namespace, "default");
    for (key, why) in [("a/b", "is not a valid key"), ("..", "is not a valid key"), ("'sp ace'", "is not a valid key")]
    {
        let e = err(&secret(&format!("{{{key}: v}}")));
        assert!(e.contains("data[") && e.contains(why), "{key}: {e}");
    }
    let long = "k".repeat(254);
    assert!(err(&secret(&format!("{{{long}: v}}"))).contains("is longer than 253 characters"));
    let big = "v".repeat(stratus_api::validation::MAX_SECRET_BYTES);
    let e = err(&secret(&format!("{{k: {big}}}")));
    assert!(e.contains("data: takes 1048577 bytes, more than the 1048576 a Secret may hold"), "{e}");
}
