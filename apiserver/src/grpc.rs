//! The gRPC face of the registry: `stratus.v1.ResourceService`.

use std::pin::Pin;
use std::time::Instant;

use futures::{Stream, StreamExt};
use stratus_api::AnyObject;
use stratus_api::fence::{self, Fence};
use stratus_api::v1::resource_service_server::ResourceService;
use stratus_api::v1::{
    ApplyRequest, ApplyResponse, CreateRequest, DeleteRequest, GetRequest, ListRequest, ListResponse, LogLine,
    LogsRequest, Object, ObjectKey, UpdateRequest, WatchEvent, WatchRequest,
};
use tonic::{Request, Response, Status};

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, Reason};
use crate::logs::{LogOptions, Logs};
use crate::registry::{Registry, Selection};

pub struct Grpc {
    registry: Registry,
    logs: Logs,
}

impl Grpc {
    pub fn new(registry: Registry, logs: Logs) -> Grpc {
        Grpc { registry, logs }
    }

    /// Runs `f`, recording the outcome in the metrics and turning errors into statuses.
    async fn call<T>(&self, verb: &str, f: impl Future<Output = ApiResult<T>>) -> Result<Response<T>, Status> {
        let start = Instant::now();
        let res = f.await;
        let code = match &res {
            Ok(_) => 200,
            Err(e) => e.reason.http_status(),
        };
        self.registry.metrics().observe("grpc", verb, code, start.elapsed().as_secs_f64());
        res.map(Response::new).map_err(Status::from)
    }
}

/// The caller the authentication layer found.
fn caller<T>(req: &Request<T>) -> Result<Caller, Status> {
    crate::auth::authn::caller_of(req.extensions()).map_err(Status::from)
}

/// The leadership term a request is part of, when it carries one ([`stratus_api::fence`]).
fn fence_of<T>(req: &Request<T>) -> Result<Option<Fence>, Status> {
    let Some(value) = req.metadata().get(fence::METADATA) else { return Ok(None) };
    let text = value.to_str().map_err(|_| Status::invalid_argument(format!("{}: not ASCII", fence::METADATA)))?;
    text.parse().map(Some).map_err(Status::invalid_argument)
}

fn object(obj: Option<Object>) -> ApiResult<AnyObject> {
    obj.and_then(|o| o.kind).ok_or_else(|| ApiError::new(Reason::BadRequest, "object: is required"))
}

fn key(key: Option<ObjectKey>) -> ApiResult<ObjectKey> {
    key.ok_or_else(|| ApiError::new(Reason::BadRequest, "key: is required"))
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent, Status>> + Send>>;
type LogStream = Pin<Box<dyn Stream<Item = Result<LogLine, Status>> + Send>>;

#[tonic::async_trait]
impl ResourceService for Grpc {
    async fn create(&self, req: Request<CreateRequest>) -> Result<Response<Object>, Status> {
        let who = caller(&req)?;
        let fence = fence_of(&req)?;
        self.call("create", async {
            self.registry.fenced(fence.as_ref()).await?;
            Ok(self.registry.create(&who, object(req.into_inner().object)?).await?.into_object())
        })
        .await
    }

    async fn get(&self, req: Request<GetRequest>) -> Result<Response<Object>, Status> {
        let who = caller(&req)?;
        self.call("get", async {
            let k = key(req.into_inner().key)?;
            Ok(self.registry.get(&who, &k.kind, &k.namespace, &k.name).await?.into_object())
        })
        .await
    }

    async fn list(&self, req: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        let who = caller(&req)?;
        let r = req.into_inner();
        self.call("list", async {
            let sel = Selection { namespace: r.namespace, labels: r.label_selector, fields: r.field_selector };
            let limit = usize::try_from(r.limit.max(0)).unwrap_or(0);
            let page = self.registry.list(&who, &r.kind, &sel, limit, &r.continue_token).await?;
            Ok(ListResponse {
                items: page.items.into_iter().map(AnyObject::into_object).collect(),
                resource_version: page.resource_version,
                continue_token: page.continue_token,
            })
        })
        .await
    }

    async fn update(&self, req: Request<UpdateRequest>) -> Result<Response<Object>, Status> {
        let who = caller(&req)?;
        let fence = fence_of(&req)?;
        self.call("update", async {
            self.registry.fenced(fence.as_ref()).await?;
            Ok(self.registry.update(&who, object(req.into_inner().object)?).await?.into_object())
        })
        .await
    }

    async fn update_status(&self, req: Request<UpdateRequest>) -> Result<Response<Object>, Status> {
        let who = caller(&req)?;
        let fence = fence_of(&req)?;
        self.call("update_status", async {
            self.registry.fenced(fence.as_ref()).await?;
            Ok(self.registry.update_status(&who, object(req.into_inner().object)?).await?.into_object())
        })
        .await
    }

    async fn delete(&self, req: Request<DeleteRequest>) -> Result<Response<Object>, Status> {
        let who = caller(&req)?;
        let fence = fence_of(&req)?;
        let r = req.into_inner();
        self.call("delete", async {
            self.registry.fenced(fence.as_ref()).await?;
            let k = key(r.key)?;
            let pre = Some(r.resource_version.as_str()).filter(|s| !s.is_empty());
            Ok(self.registry.delete(&who, &k.kind, &k.namespace, &k.name, pre).await?.into_object())
        })
        .await
    }

    async fn apply(&self, req: Request<ApplyRequest>) -> Result<Response<ApplyResponse>, Status> {
        let who = caller(&req)?;
        let fence = fence_of(&req)?;
        self.call("apply", async {
            self.registry.fenced(fence.as_ref()).await?;
            let (obj, applied) = self.registry.apply(&who, object(req.into_inner().object)?).await?;
            Ok(ApplyResponse { object: Some(obj.into_object()), result: applied.as_str().to_string() })
        })
        .await
    }

    type WatchStream = WatchStream;

    async fn watch(&self, req: Request<WatchRequest>) -> Result<Response<WatchStream>, Status> {
        let who = caller(&req)?;
        let r = req.into_inner();
        self.call("watch", async {
            let sel = Selection { namespace: r.namespace, labels: r.label_selector, fields: r.field_selector };
            let events = self.registry.watch(&who, &r.kind, &sel, &r.resource_version, r.allow_bookmarks).await?;
            let stream: WatchStream = events
                .map(|ev| match ev {
                    Ok(ev) => Ok(WatchEvent { r#type: ev.kind.to_string(), object: Some(ev.object.into_object()) }),
                    Err(e) => Err(Status::from(e)),
                })
                .boxed();
            Ok(stream)
        })
        .await
    }

    type LogsStream = LogStream;

    async fn logs(&self, req: Request<LogsRequest>) -> Result<Response<LogStream>, Status> {
        let who = caller(&req)?;
        let r = req.into_inner();
        self.call("logs", async {
            let k = key(r.key)?;
            let opts = LogOptions { follow: r.follow, tail_lines: r.tail_lines };
            let lines = self.logs.stream(&who, &k.kind, &k.namespace, &k.name, opts).await?;
            let stream: LogStream = lines.map(|line| line.map_err(Status::from)).boxed();
            Ok(stream)
        })
        .await
    }
}
