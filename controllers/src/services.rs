//! Being written.
use std::sync::Arc;

use crate::context::Context;

pub async fn run(_ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send) {
    shutdown.await;
}
