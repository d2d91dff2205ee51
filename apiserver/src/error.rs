//! The errors of the API, each with the HTTP status and gRPC code it is answered with.

use serde_json::json;
use stratus_api::validation::{ErrorList, FieldError};

/// Why a request failed, in the terms of the Kubernetes API (`reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The request could not be understood: malformed body, wrong types, unknown fields.
    BadRequest,
    /// The object is well-formed but breaks a rule; the causes name the fields.
    Invalid,
    NotFound,
    AlreadyExists,
    /// A stale resourceVersion, or a concurrent change.
    Conflict,
    /// A resourceVersion older than the compacted history.
    Gone,
    RequestEntityTooLarge,
    /// The request is valid but cannot be carried out on this object (e.g. changing an
    /// immutable field).
    Unprocessable,
    Forbidden,
    /// No credentials, or credentials that do not prove who the caller is.
    Unauthorized,
    /// Too many attempts (failed logins); the message says when to try again.
    TooManyRequests,
    /// The method does not apply to the path (e.g. POST on an object).
    MethodNotAllowed,
    /// A body in a format this endpoint does not take (e.g. a JSON patch).
    UnsupportedMediaType,
    /// The request is valid but the object is not in a state to serve it yet (e.g. the logs
    /// of an Instance no node runs yet); it may succeed later.
    FailedPrecondition,
    /// The storage backend, or a node agent the request needs, is unreachable.
    ServiceUnavailable,
    InternalError,
}

impl Reason {
    pub fn http_status(self) -> u16 {
        match self {
            // Kubernetes answers 400 for the logs of a pod whose container is not running yet.
            Reason::BadRequest | Reason::FailedPrecondition => 400,
            Reason::Unauthorized => 401,
            Reason::Forbidden => 403,
            Reason::NotFound => 404,
            Reason::TooManyRequests => 429,
            Reason::AlreadyExists | Reason::Conflict => 409,
            Reason::Gone => 410,
            Reason::MethodNotAllowed => 405,
            Reason::UnsupportedMediaType => 415,
            Reason::RequestEntityTooLarge => 413,
            // As Kubernetes: a well-formed object that breaks a rule is 422 (reason Invalid).
            Reason::Invalid | Reason::Unprocessable => 422,
            Reason::ServiceUnavailable => 503,
            Reason::InternalError => 500,
        }
    }

    pub fn grpc_code(self) -> tonic::Code {
        use tonic::Code;
        match self {
            Reason::BadRequest | Reason::Invalid | Reason::Unprocessable => Code::InvalidArgument,
            Reason::Forbidden => Code::PermissionDenied,
            Reason::Unauthorized => Code::Unauthenticated,
            Reason::TooManyRequests => Code::ResourceExhausted,
            Reason::NotFound => Code::NotFound,
            Reason::AlreadyExists => Code::AlreadyExists,
            Reason::Conflict => Code::Aborted,
            Reason::Gone => Code::OutOfRange,
            Reason::MethodNotAllowed | Reason::UnsupportedMediaType => Code::Unimplemented,
            Reason::RequestEntityTooLarge => Code::ResourceExhausted,
            Reason::FailedPrecondition => Code::FailedPrecondition,
            Reason::ServiceUnavailable => Code::Unavailable,
            Reason::InternalError => Code::Internal,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Reason::BadRequest | Reason::FailedPrecondition => "BadRequest",
            Reason::Invalid => "Invalid",
            Reason::NotFound => "NotFound",
            Reason::AlreadyExists => "AlreadyExists",
            Reason::Conflict => "Conflict",
            Reason::Gone => "Expired",
            Reason::MethodNotAllowed => "MethodNotAllowed",
            Reason::UnsupportedMediaType => "UnsupportedMediaType",
            Reason::RequestEntityTooLarge => "RequestEntityTooLarge",
            Reason::Unprocessable => "Unprocessable",
            Reason::Forbidden => "Forbidden",
            Reason::Unauthorized => "Unauthorized",
            Reason::TooManyRequests => "TooManyRequests",
            Reason::ServiceUnavailable => "ServiceUnavailable",
            Reason::InternalError => "InternalError",
        }
    }
}

/// A failed API request: what to tell the client.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub reason: Reason,
    pub message: String,
    /// The fields at fault, for Invalid and BadRequest.
    pub causes: Vec<FieldError>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(reason: Reason, message: impl Into<String>) -> ApiError {
        ApiError { reason, message: message.into(), causes: Vec::new() }
    }

    /// An invalid object of `kind` named `name`; the message lists every field error.
    pub fn invalid(kind: &str, name: &str, errors: ErrorList) -> ApiError {
        let what = if name.is_empty() { kind.to_string() } else { format!("{kind} {name:?}") };
        ApiError { reason: Reason::Invalid, message: format!("{what} is invalid: {errors}"), causes: errors.0 }
    }

    /// A request body that does not decode.
    pub fn bad_request(errors: ErrorList) -> ApiError {
        ApiError { reason: Reason::BadRequest, message: errors.to_string(), causes: errors.0 }
    }

    pub fn internal(message: impl std::fmt::Display) -> ApiError {
        ApiError::new(Reason::InternalError, format!("internal error: {message}"))
    }

    /// The Kubernetes `Status` object returned as the body of a failed HTTP request.
    pub fn status_json(&self) -> serde_json::Value {
        let causes: Vec<_> = self
            .causes
            .iter()
            .map(|c| json!({"field": c.path, "message": c.message, "reason": "FieldValueInvalid"}))
            .collect();
        json!({
            "apiVersion": "v1",
            "kind": "Status",
            "status": "Failure",
            "message": self.message,
            "reason": self.reason.name(),
            "code": self.reason.http_status(),
            "details": {"causes": causes},
        })
    }
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> tonic::Status {
        tonic::Status::new(e.reason.grpc_code(), e.message)
    }
}

impl From<stratus_store::Error> for ApiError {
    fn from(e: stratus_store::Error) -> ApiError {
        use stratus_store::Error as S;
        match e {
            S::AlreadyExists { key } => ApiError::new(Reason::AlreadyExists, format!("{key} already exists")),
            S::NotFound { key } => ApiError::new(Reason::NotFound, format!("{key} not found")),
            S::Conflict { .. } => ApiError::new(
                Reason::Conflict,
                "the object has been modified; please apply your changes to the latest version and try again",
            ),
            S::Compacted { requested, compacted } => ApiError::new(
                Reason::Gone,
                format!("resourceVersion {requested} is too old (the oldest available is {compacted}): list again"),
            ),
            S::FutureRevision { requested, current } => ApiError::new(
                Reason::BadRequest,
                format!("resourceVersion {requested} is newer than the server's current version {current}"),
            ),
            S::TooLarge { size, limit } => ApiError::new(
                Reason::RequestEntityTooLarge,
                format!("the object is {size} bytes, over the limit of {limit} bytes"),
            ),
            S::Etcd(err) => ApiError::new(Reason::ServiceUnavailable, format!("storage unavailable: {err}")),
            other => ApiError::internal(other),
        }
    }
}
