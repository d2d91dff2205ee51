//! Events: what the controllers did and saw, for `stratus describe`. Repeats of the same event
//! about the same object are folded into one Event whose `count` grows, as Kubernetes does.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use stratus_api::v1::{Event, EventSpec, ObjectReference};
use stratus_api::{Resource, Timestamp};
use stratus_client::{Client, Error};
use tracing::debug;

use crate::clock;

/// Records Events on behalf of one component.
#[derive(Clone)]
pub struct EventRecorder {
    client: Client,
    source: String,
}

/// "Normal" or "Warning".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventRecorder {
    pub fn new(client: Client, source: impl Into<String>) -> EventRecorder {
        EventRecorder { client, source: source.into() }
    }

    /// Records that `reason` happened to `obj`. Never fails the caller: an event that cannot
    /// be written is logged and dropped.
    pub async fn record<K: Resource>(&self, obj: &K, kind: EventType, reason: &str, message: &str) {
        let meta = obj.meta();
        let involved = ObjectReference {
            api_version: stratus_api::API_VERSION.into(),
            kind: K::INFO.kind.into(),
            namespace: meta.namespace.clone(),
            name: meta.name.clone(),
            uid: meta.uid.clone(),
            resource_version: String::new(),
        };
        // Events live in the object's namespace (cluster-scoped objects: "default").
        let namespace =
            if meta.namespace.is_empty() { stratus_api::DEFAULT_NAMESPACE.to_string() } else { meta.namespace.clone() };
        if let Err(e) = self.write(&namespace, involved, kind, reason, message).await {
            debug!(error = %e, reason, "recording an event failed");
        }
    }

    async fn write(
        &self,
        namespace: &str,
        involved: ObjectReference,
        kind: EventType,
        reason: &str,
        message: &str,
    ) -> Result<(), Error> {
        let mut h = DefaultHasher::new();
        (&involved.uid, reason, message).hash(&mut h);
        let name = format!("{}.{:016x}", involved.name, h.finish());
        let now = now();
        // Most events are new: create first, and fold into the existing one when there is.
        let mut exists = false;
        for _ in 0..3 {
            if !exists {
                let mut ev = Event::default();
                ev.meta_mut().name = name.clone();
                ev.meta_mut().namespace = namespace.to_string();
                ev.spec = Some(EventSpec {
                    involved_object: Some(involved.clone()),
                    r#type: match kind {
                        EventType::Normal => "Normal",
                        EventType::Warning => "Warning",
                    }
                    .into(),
                    reason: reason.into(),
                    message: message.into(),
                    source: self.source.clone(),
                    count: 1,
                    first_timestamp: Some(now),
                    last_timestamp: Some(now),
                });
                match self.client.create(ev).await {
                    Ok(_) => return Ok(()),
                    Err(Error::AlreadyExists(_)) => exists = true,
                    Err(e) => return Err(e),
                }
            }
            match self.client.get::<Event>(namespace, &name).await {
                Ok(mut existing) => {
                    let spec = existing.spec.get_or_insert_with(Default::default);
                    spec.count += 1;
                    spec.last_timestamp = Some(now);
                    match self.client.update(existing).await {
                        Ok(_) => return Ok(()),
                        Err(Error::Conflict(_)) => {}
                        Err(e) => return Err(e),
                    }
                }
                // Gone meanwhile (expired): create it again.
                Err(Error::NotFound(_)) => exists = false,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Now on the system clock, to the second: for times that are written down, not decided on
/// (see [`crate::clock`]).
pub fn now() -> Timestamp {
    clock::timestamp(std::time::SystemTime::now())
}
