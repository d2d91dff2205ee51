//! The names that several parts of Stratus share: labels, annotations, finalizers and
//! namespaces. A name written by one binary and read by another must live here and nowhere
//! else (DESIGN §2): renamed in one place only, it would silently break the other. The Knative
//! and Cloud Run annotations that Stratus reads are in [`crate::knative`].

/// Labels on objects (and, for the agent, on the containers it creates).
pub mod labels {
    /// The Service of a Revision, Instance or Endpoints.
    pub const SERVICE: &str = "stratus.dev/service";
    /// The Revision of an Instance or Endpoints.
    pub const REVISION: &str = "stratus.dev/revision";
    /// On a container: the node that runs it (and so that Stratus manages it).
    pub const NODE: &str = "stratus.dev/node";
    /// On a container: the uid of its Instance.
    pub const INSTANCE_UID: &str = "stratus.dev/instance-uid";
    /// On a container: the namespace of its Instance.
    pub const NAMESPACE: &str = "stratus.dev/namespace";
    /// On a container: the name of its Instance.
    pub const INSTANCE: &str = "stratus.dev/instance";
    /// On a Node: the host name its agent registered it with.
    pub const HOSTNAME: &str = "stratus.dev/hostname";
}

/// Annotations Stratus writes on its own objects.
pub mod annotations {
    /// On a Revision: the Service generation it was made for (orders revisions).
    pub const SERVICE_GENERATION: &str = "stratus.dev/service-generation";
    /// On a Node: the scheduler's reservations (see the scheduler's documentation).
    pub const SCHEDULER_RESERVATIONS: &str = "stratus.dev/scheduler-reservations";
    /// On a Node: the Instance resourceVersion through which a scheduler's cache must be current
    /// to reserve room there (the binds whose reservations were settled are visible by then).
    pub const SCHEDULER_SETTLED_THROUGH: &str = "stratus.dev/scheduler-settled-through";
}

/// Finalizers.
pub mod finalizers {
    /// On an Instance bound to a node: held by that node's agent until the container is gone;
    /// released by the nodes controller when the node is lost.
    pub const AGENT: &str = "stratus.dev/agent";
}

/// Namespaces the platform uses for itself.
pub mod namespaces {
    /// The Nodes' heartbeat Leases.
    pub const NODE_LEASE: &str = "stratus-node-lease";
    /// The controllers' leader-election Lease.
    pub const SYSTEM: &str = "stratus-system";
}
