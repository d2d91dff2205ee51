//! What every kind has in common, and [`AnyObject`], an object of any kind.

use std::sync::LazyLock;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::v1::{self, ObjectMeta, object};

/// Static facts about one kind: its names and scope.
#[derive(Debug, PartialEq, Eq)]
pub struct KindInfo {
    /// The kind as written in manifests, e.g. `Service`.
    pub kind: &'static str,
    /// The lowercase plural used in URLs and by `stratus get`, e.g. `services`.
    pub plural: &'static str,
    pub singular: &'static str,
    pub short_names: &'static [&'static str],
    /// Whether objects of this kind live in a namespace.
    pub namespaced: bool,
}

impl KindInfo {
    /// Whether `name` names this kind: its kind, plural, singular or a short name, in any case.
    pub fn matches(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        name == self.kind.to_ascii_lowercase()
            || name == self.plural
            || name == self.singular
            || self.short_names.contains(&name.as_str())
    }
}

/// An object of any kind: the `oneof` of `stratus.v1.Object`.
pub type AnyObject = object::Kind;

/// A kind of the Stratus API.
pub trait Resource:
    prost::Message + Default + Clone + PartialEq + Serialize + DeserializeOwned + Send + Sync + 'static
{
    const INFO: KindInfo;

    fn meta(&self) -> &ObjectMeta;
    fn meta_mut(&mut self) -> &mut ObjectMeta;
    fn into_any(self) -> AnyObject;
    /// The object inside `any`, or `any` back when it is of another kind.
    fn from_any(any: AnyObject) -> Result<Self, Box<AnyObject>>;
}

static EMPTY_META: LazyLock<ObjectMeta> = LazyLock::new(ObjectMeta::default);

/// Implements [`Resource`] and the methods of [`AnyObject`] for every kind. A kind's `spec`
/// fields are what its writers ask for (compared and copied by updates; a change bumps the
/// generation), its `status` fields what controllers report: for most kinds the one field of
/// each name, for a Secret (shaped as Kubernetes') `data` and `type` and no status.
macro_rules! kinds {
    ($( $variant:ident => $ty:ident { plural: $plural:literal, singular: $singular:literal,
        short: [$($short:literal),*], namespaced: $ns:literal,
        spec: [$($spec:ident),+], status: [$($status:ident),*] } ),+ $(,)?) => {
        $(
            impl Resource for v1::$ty {
                const INFO: KindInfo = KindInfo {
                    kind: stringify!($ty),
                    plural: $plural,
                    singular: $singular,
                    short_names: &[$($short),*],
                    namespaced: $ns,
                };

                fn meta(&self) -> &ObjectMeta {
                    self.metadata.as_ref().unwrap_or(&EMPTY_META)
                }

                fn meta_mut(&mut self) -> &mut ObjectMeta {
                    self.metadata.get_or_insert_with(ObjectMeta::default)
                }

                fn into_any(self) -> AnyObject {
                    AnyObject::$variant(self)
                }

                fn from_any(any: AnyObject) -> Result<Self, Box<AnyObject>> {
                    match any {
                        AnyObject::$variant(o) => Ok(o),
                        other => Err(Box::new(other)),
                    }
                }
            }
        )+

        /// Every kind, in the order `stratus get` lists them.
        pub static KINDS: &[&KindInfo] = &[$(&<v1::$ty as Resource>::INFO),+];

        impl AnyObject {
            pub fn info(&self) -> &'static KindInfo {
                match self { $(AnyObject::$variant(_) => &<v1::$ty as Resource>::INFO),+ }
            }

            pub fn meta(&self) -> &ObjectMeta {
                match self { $(AnyObject::$variant(o) => o.meta()),+ }
            }

            pub fn meta_mut(&mut self) -> &mut ObjectMeta {
                match self { $(AnyObject::$variant(o) => o.meta_mut()),+ }
            }

            /// Sets `apiVersion` and `kind` to this kind's.
            pub fn set_type_meta(&mut self) {
                match self {
                    $(AnyObject::$variant(o) => {
                        o.api_version = crate::API_VERSION.to_string();
                        o.kind = stringify!($ty).to_string();
                    }),+
                }
            }

            /// The protobuf encoding of the object (without the `oneof` wrapper), as stored.
            pub fn encode_to_vec(&self) -> Vec<u8> {
                match self { $(AnyObject::$variant(o) => prost::Message::encode_to_vec(o)),+ }
            }

            /// Decodes what [`AnyObject::encode_to_vec`] wrote for a kind.
            pub fn decode(info: &KindInfo, bytes: &[u8]) -> Result<AnyObject, String> {
                $(
                    if info == &<v1::$ty as Resource>::INFO {
                        return prost::Message::decode(bytes)
                            .map(AnyObject::$variant)
                            .map_err(|e| format!("stored {} does not decode: {e}", info.kind));
                    }
                )+
                Err(format!("unknown kind {}", info.kind))
            }

            /// The JSON form: `{"apiVersion":…, "kind":…, "metadata":…, "spec":…}`, the proto3
            /// JSON mapping except that 64-bit integers (`metadata.generation`,
            /// `status.observedGeneration`, …) are numbers, as Kubernetes prints them and Go
            /// clients decode them. Every JSON the API serves, over HTTP and in the CLI's JSON and
            /// YAML, is made here; [`AnyObject::from_json`] reads numbers and strings alike.
            pub fn to_json(&self) -> serde_json::Value {
                let (message, value) = match self {
                    $(AnyObject::$variant(o) => (concat!(".stratus.v1.", stringify!($ty)), serde_json::to_value(o))),+
                };
                // Serialising generated types into a Value cannot fail: every map key is a string.
                let mut value = value.unwrap_or(serde_json::Value::Null);
                crate::json_numbers::int64_as_numbers(message, &mut value);
                value
            }

            /// Parses the JSON form of an object of kind `info`, naming the field path of the
            /// first error (e.g. `spec.template.spec.containers[0].imag: unknown field`).
            pub fn from_json(info: &KindInfo, value: serde_json::Value)
                -> Result<AnyObject, crate::validation::FieldError> {
                $(
                    if info == &<v1::$ty as Resource>::INFO {
                        return serde_path_to_error::deserialize::<_, v1::$ty>(value)
                            .map(AnyObject::$variant)
                            .map_err(crate::validation::FieldError::from_serde);
                    }
                )+
                Err(crate::validation::FieldError::new("kind", format!("unknown kind {:?}", info.kind)))
            }

            /// Whether the specs of two objects of the same kind are equal.
            pub fn spec_eq(&self, other: &AnyObject) -> bool {
                match (self, other) {
                    $((AnyObject::$variant(a), AnyObject::$variant(b)) => true $(&& a.$spec == b.$spec)+,)+
                    _ => false,
                }
            }

            /// Whether the statuses of two objects of the same kind are equal.
            pub fn status_eq(&self, other: &AnyObject) -> bool {
                match (self, other) {
                    $((AnyObject::$variant(_a), AnyObject::$variant(_b)) => true $(&& _a.$status == _b.$status)*,)+
                    _ => false,
                }
            }

            /// Replaces this object's status with `other`'s (same kind; otherwise nothing).
            pub fn copy_status_from(&mut self, other: &AnyObject) {
                match (self, other) {
                    $((AnyObject::$variant(_a), AnyObject::$variant(_b)) => { $(_a.$status = _b.$status.clone();)* })+
                    _ => {}
                }
            }

            /// Replaces this object's spec with `other`'s (same kind; otherwise nothing).
            pub fn copy_spec_from(&mut self, other: &AnyObject) {
                match (self, other) {
                    $((AnyObject::$variant(a), AnyObject::$variant(b)) => { $(a.$spec = b.$spec.clone();)+ })+
                    _ => {}
                }
            }

            pub fn clear_status(&mut self) {
                match self { $(AnyObject::$variant(_o) => { $(_o.$status = Default::default();)* })+ }
            }
        }
    };
}

kinds! {
    Namespace => Namespace { plural: "namespaces", singular: "namespace", short: ["ns"], namespaced: false, spec: [spec], status: [status] },
    Tenant => Tenant { plural: "tenants", singular: "tenant", short: [], namespaced: false, spec: [spec], status: [status] },
    Service => Service { plural: "services", singular: "service", short: ["svc", "ksvc"], namespaced: true, spec: [spec], status: [status] },
    Revision => Revision { plural: "revisions", singular: "revision", short: ["rev"], namespaced: true, spec: [spec], status: [status] },
    Instance => Instance { plural: "instances", singular: "instance", short: ["inst"], namespaced: true, spec: [spec], status: [status] },
    Node => Node { plural: "nodes", singular: "node", short: ["no"], namespaced: false, spec: [spec], status: [status] },
    Lease => Lease { plural: "leases", singular: "lease", short: [], namespaced: true, spec: [spec], status: [status] },
    Endpoints => Endpoints { plural: "endpoints", singular: "endpoints", short: ["ep"], namespaced: true, spec: [spec], status: [status] },
    Event => Event { plural: "events", singular: "event", short: ["ev"], namespaced: true, spec: [spec], status: [status] },
    User => User { plural: "users", singular: "user", short: [], namespaced: false, spec: [spec], status: [status] },
    ServiceAccount => ServiceAccount { plural: "serviceaccounts", singular: "serviceaccount", short: ["sa"], namespaced: true, spec: [spec], status: [status] },
    RoleBinding => RoleBinding { plural: "rolebindings", singular: "rolebinding", short: ["rb"], namespaced: true, spec: [spec], status: [status] },
    Secret => Secret { plural: "secrets", singular: "secret", short: [], namespaced: true, spec: [data, r#type], status: [] },
    PriceList => PriceList { plural: "pricelists", singular: "pricelist", short: [], namespaced: false, spec: [spec], status: [status] },
    UsageReport => UsageReport { plural: "usagereports", singular: "usagereport", short: [], namespaced: false, spec: [spec], status: [status] },
    LedgerEntry => LedgerEntry { plural: "ledgerentries", singular: "ledgerentry", short: [], namespaced: false, spec: [spec], status: [status] },
    Invoice => Invoice { plural: "invoices", singular: "invoice", short: [], namespaced: false, spec: [spec], status: [status] },
    Budget => Budget { plural: "budgets", singular: "budget", short: [], namespaced: false, spec: [spec], status: [status] },
}

/// The kind that `name` names (kind, plural, singular or short name, any case).
pub fn lookup_kind(name: &str) -> Option<&'static KindInfo> {
    KINDS.iter().copied().find(|k| k.matches(name))
}

impl v1::Service {
    /// A Service named `name` in the default namespace running one container of `image`,
    /// everything else left to defaulting.
    pub fn with_image(name: &str, image: &str) -> v1::Service {
        let container = v1::Container { image: image.to_string(), ..Default::default() };
        let template = v1::RevisionTemplate {
            metadata: None,
            spec: Some(v1::RevisionSpec { containers: vec![container], ..Default::default() }),
        };
        let mut svc = v1::Service {
            spec: Some(v1::ServiceSpec { template: Some(template), ..Default::default() }),
            ..Default::default()
        };
        svc.meta_mut().name = name.to_string();
        svc
    }
}

impl AnyObject {
    /// Wraps the object in the `stratus.v1.Object` message used on the wire.
    pub fn into_object(self) -> v1::Object {
        v1::Object { kind: Some(self) }
    }

    /// `namespace/name`, or `name` for cluster-scoped kinds.
    pub fn key(&self) -> String {
        let meta = self.meta();
        if meta.namespace.is_empty() { meta.name.clone() } else { format!("{}/{}", meta.namespace, meta.name) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_found_by_every_name() {
        for name in ["Service", "services", "service", "svc", "ksvc", "SVC"] {
            assert_eq!(lookup_kind(name).map(|k| k.kind), Some("Service"), "{name}");
        }
        assert_eq!(lookup_kind("ns").map(|k| k.kind), Some("Namespace"));
        assert_eq!(lookup_kind("ep").map(|k| k.kind), Some("Endpoints"));
        assert!(lookup_kind("pods").is_none());
    }

    #[test]
    fn names_are_unambiguous() {
        for a in KINDS {
            for b in KINDS {
                if a != b {
                    for n in [a.plural, a.singular].iter().chain(a.short_names) {
                        assert!(!b.matches(n), "{n} names both {} and {}", a.kind, b.kind);
                    }
                }
            }
        }
    }

    #[test]
    fn protobuf_and_json_round_trip() {
        let mut svc = v1::Service::default();
        svc.meta_mut().name = "hello".into();
        svc.meta_mut().labels.insert("app".into(), "web".into());
        let mut any = svc.into_any();
        any.set_type_meta();
        let bytes = any.encode_to_vec();
        let back = AnyObject::decode(any.info(), &bytes).expect("decodes");
        assert_eq!(back, any);
        let json = any.to_json();
        assert_eq!(json["apiVersion"], "stratus.dev/v1");
        assert_eq!(json["metadata"]["labels"]["app"], "web");
        let parsed = AnyObject::from_json(any.info(), json).expect("parses");
        assert_eq!(parsed, any);
    }

    /// A Service with its 64-bit integers set: generation, observedGeneration, runAsUser/Group.
    fn service_with_integers() -> AnyObject {
        let mut svc = v1::Service::with_image("hello", "nginx");
        svc.meta_mut().generation = 3;
        if let Some(c) = svc.spec.as_mut().and_then(|s| s.template.as_mut()).and_then(|t| t.spec.as_mut()) {
            c.containers[0].security_context =
                Some(v1::SecurityContext { run_as_user: Some(1000), run_as_group: Some(0), ..Default::default() });
        }
        svc.status = Some(v1::ServiceStatus { observed_generation: 2, ..Default::default() });
        let mut any = svc.into_any();
        any.set_type_meta();
        any
    }

    #[test]
    fn sixty_four_bit_integers_print_as_numbers() {
        let json = service_with_integers().to_json();
        // `Value == i64` holds only for a JSON number: the string "3" would fail.
        assert_eq!(json["metadata"]["generation"], 3);
        assert_eq!(json["status"]["observedGeneration"], 2);
        let sc = &json["spec"]["template"]["spec"]["containers"][0]["securityContext"];
        assert_eq!(sc["runAsUser"], 1000);
        assert_eq!(sc["runAsGroup"], 0);

        // Instance usage, the other int64 fields of a status.
        let mut inst = v1::Instance {
            status: Some(v1::InstanceStatus {
                usage: Some(v1::ResourceUsage { cpu_millis: 250, memory_bytes: 64 << 20, sampled_at: None }),
                ..Default::default()
            }),
            ..Default::default()
        };
        inst.meta_mut().generation = 1;
        let json = inst.into_any().to_json();
        assert_eq!(json["metadata"]["generation"], 1);
        assert_eq!(json["status"]["usage"]["cpuMillis"], 250);
        assert_eq!(json["status"]["usage"]["memoryBytes"], 64 << 20);
    }

    #[test]
    fn yaml_made_from_the_json_has_integers_not_quoted_strings() {
        // The CLI prints YAML by serialising the value of `to_json`.
        let yaml = yaml_serde::to_string(&service_with_integers().to_json()).expect("serialises");
        assert!(yaml.contains("generation: 3\n"), "{yaml}");
        assert!(yaml.contains("observedGeneration: 2\n"), "{yaml}");
        assert!(yaml.contains("runAsUser: 1000\n"), "{yaml}");
    }

    #[test]
    fn numbers_and_the_older_string_form_both_decode() {
        let want = service_with_integers();
        let as_numbers = want.to_json();
        let mut as_strings = as_numbers.clone();
        as_strings["metadata"]["generation"] = "3".into();
        as_strings["status"]["observedGeneration"] = "2".into();
        as_strings["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsUser"] = "1000".into();
        as_strings["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsGroup"] = "0".into();
        assert_eq!(AnyObject::from_json(want.info(), as_numbers).expect("numbers decode"), want);
        assert_eq!(AnyObject::from_json(want.info(), as_strings).expect("strings decode"), want);

        // The same through a YAML manifest, as `stratus apply -f` reads one.
        for (generation, user) in [("3", "1000"), ("'3'", "'1000'")] {
            let manifest = format!(
                "apiVersion: stratus.dev/v1\nkind: Service\nmetadata: {{name: hello, generation: {generation}}}\n\
                 spec: {{template: {{spec: {{containers: [{{image: nginx, securityContext: {{runAsUser: {user}}}}}]}}}}}}\n\
                 status: {{observedGeneration: {generation}}}\n"
            );
            let decoded = crate::decode::decode_manifest(&manifest);
            let Some(Ok((_, AnyObject::Service(svc)))) = decoded.first() else {
                panic!("{manifest} does not decode: {decoded:?}");
            };
            assert_eq!(svc.meta().generation, 3, "{manifest}");
            assert_eq!(svc.status.as_ref().map(|s| s.observed_generation), Some(3), "{manifest}");
            let rev = svc.spec.as_ref().and_then(|s| s.template.as_ref()).and_then(|t| t.spec.as_ref());
            let user = rev.and_then(|c| c.containers[0].security_context.as_ref()).and_then(|s| s.run_as_user);
            assert_eq!(user, Some(1000), "{manifest}");
        }
    }
}
