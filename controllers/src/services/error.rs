//! The services controller's error, in a module of its own: `template` and `digests` return
//! it too, and would otherwise have to import the controller module that imports them.

use stratus_client::Error as ClientError;
use stratus_client::runtime::ObjectRef;

/// What failed, naming the step and the object.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("listing the revisions of service {service} failed")]
    ListRevisions {
        service: ObjectRef,
        #[source]
        source: ClientError,
    },
    #[error("creating revision {revision} failed")]
    CreateRevision {
        revision: ObjectRef,
        #[source]
        source: ClientError,
    },
    #[error("recording the image digest of revision {revision} failed")]
    RecordDigest {
        revision: ObjectRef,
        #[source]
        source: ClientError,
    },
    #[error("deleting revision {revision}, beyond the retention count, failed")]
    DeleteRevision {
        revision: ObjectRef,
        #[source]
        source: ClientError,
    },
    #[error("updating the status of service {service} failed")]
    UpdateStatus {
        service: ObjectRef,
        #[source]
        source: ClientError,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
