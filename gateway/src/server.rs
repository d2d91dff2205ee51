//! The accept loop shared by the proxy and admin listeners: HTTP/1.1 and h2c on one port, with
//! upgrades, and a graceful shutdown that lets open exchanges finish.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tracing::{debug, warn};

use crate::proxy::ProxyBody;
use stratus_client::ErrorChain;

use crate::Error;

/// Serves connections from `listener` with the service `make(peer)` returns for each, until
/// `shutdown` completes. Then it stops accepting, asks every connection to finish its current
/// exchanges, and waits up to `drain` for them before closing the rest.
///
/// Fails only when accepting fails for a reason that waiting does not cure; running out of file
/// descriptors or a connection reset before it was accepted only pauses the loop.
pub(crate) async fn serve<S, F>(
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
    make: F,
) -> Result<(), Error>
where
    F: Fn(SocketAddr) -> S,
    S: Service<Request<Incoming>, Response = Response<ProxyBody>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The header read timeout (30 s by default) needs a timer; without one it is not enforced.
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) if is_transient(&e) => {
                    warn!(error = %ErrorChain(&e), "accept failed; pausing");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Err(e) => return Err(Error::Accept(e)),
            },
            Some(_) = connections.join_next() => continue,
            () = &mut shutdown => break,
        };
        // Latency matters more than packet count for request/response traffic.
        let _ = stream.set_nodelay(true);
        let service = make(peer);
        let builder = Arc::clone(&builder);
        let watcher = graceful.watcher();
        connections.spawn(async move {
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(connection).await {
                debug!(%peer, error = %ErrorChain(e.as_ref()), "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown()).await.is_err() {
        warn!(open = connections.len(), "connections still open after the drain timeout; closing them");
    }
    connections.shutdown().await;
    Ok(())
}

/// Accept errors that concern one connection, or a shortage that passes.
fn is_transient(e: &io::Error) -> bool {
    const EMFILE: i32 = 24;
    const ENFILE: i32 = 23;
    const ENOBUFS: i32 = 105;
    const ENOMEM: i32 = 12;
    matches!(e.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset | io::ErrorKind::Interrupted)
        || matches!(e.raw_os_error(), Some(EMFILE | ENFILE | ENOBUFS | ENOMEM))
}
