//! A Docker runtime that is set up on first use: [`DockerRuntime::connect`] fails at once when
//! the engine's socket does not exist (yet), and the agent must start anyway, reporting its
//! node NotReady until the engine comes up.

use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use tokio::sync::Mutex;

use super::docker::DockerRuntime;
use super::{ContainerConfig, ContainerStatus, EngineInfo, Error, LogLine, LogOptions, Result, Runtime, Usage};

pub struct LazyDocker {
    host: Option<String>,
    current: Mutex<Option<DockerRuntime>>,
}

impl LazyDocker {
    /// A runtime for the engine at `host` (see [`DockerRuntime::connect`]); nothing is
    /// contacted until the first call.
    pub fn new(host: Option<String>) -> LazyDocker {
        LazyDocker { host, current: Mutex::new(None) }
    }

    async fn engine(&self) -> Result<DockerRuntime> {
        let mut current = self.current.lock().await;
        if let Some(d) = current.as_ref() {
            return Ok(d.clone());
        }
        let d = DockerRuntime::connect(self.host.as_deref())?;
        *current = Some(d.clone());
        Ok(d)
    }

    /// Forgets the engine after it stopped answering, so that a socket that went away with it
    /// is looked for again.
    async fn check<T>(&self, r: Result<T>) -> Result<T> {
        if let Err(Error::Unreachable { .. }) = &r {
            *self.current.lock().await = None;
        }
        r
    }
}

#[async_trait]
impl Runtime for LazyDocker {
    async fn info(&self) -> Result<EngineInfo> {
        let r = self.engine().await?.info().await;
        self.check(r).await
    }

    async fn image_digest(&self, image: &str) -> Result<Option<String>> {
        let r = self.engine().await?.image_digest(image).await;
        self.check(r).await
    }

    async fn image_user(&self, image: &str) -> Result<Option<String>> {
        let r = self.engine().await?.image_user(image).await;
        self.check(r).await
    }

    async fn pull(&self, image: &str) -> Result<String> {
        let r = self.engine().await?.pull(image).await;
        self.check(r).await
    }

    async fn create(&self, config: &ContainerConfig) -> Result<String> {
        let r = self.engine().await?.create(config).await;
        self.check(r).await
    }

    async fn start(&self, id: &str) -> Result<()> {
        let r = self.engine().await?.start(id).await;
        self.check(r).await
    }

    async fn update_cpu(&self, id: &str, nano_cpus: i64) -> Result<()> {
        let r = self.engine().await?.update_cpu(id, nano_cpus).await;
        self.check(r).await
    }

    async fn network_subnets(&self, name: &str) -> Result<Vec<String>> {
        let r = self.engine().await?.network_subnets(name).await;
        self.check(r).await
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<()> {
        let r = self.engine().await?.stop(id, grace).await;
        self.check(r).await
    }

    async fn remove(&self, id: &str) -> Result<()> {
        let r = self.engine().await?.remove(id).await;
        self.check(r).await
    }

    async fn inspect(&self, id: &str) -> Result<Option<ContainerStatus>> {
        let r = self.engine().await?.inspect(id).await;
        self.check(r).await
    }

    async fn list(&self, labels: &[(&str, &str)]) -> Result<Vec<ContainerStatus>> {
        let r = self.engine().await?.list(labels).await;
        self.check(r).await
    }

    async fn stats(&self, id: &str) -> Result<Usage> {
        let r = self.engine().await?.stats(id).await;
        self.check(r).await
    }

    async fn logs(&self, id: &str, options: LogOptions) -> Result<BoxStream<'static, Result<LogLine>>> {
        let r = self.engine().await?.logs(id, options).await;
        self.check(r).await
    }
}
