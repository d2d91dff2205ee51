//! What every Stratus binary does the same way, so that they behave alike: logs to stderr
//! filtered by `RUST_LOG` (default `info`), stop on SIGTERM or Ctrl-C, name themselves after the
//! host.

/// Sets up logging to stderr, filtered by `RUST_LOG` (default: `info`).
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
}

/// Completes on SIGTERM or Ctrl-C (SIGINT), the two ways a service is asked to stop.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    // SIGTERM's handler is installed now, not when the future is first polled: a signal that
    // comes right after (a supervisor stopping a process that just started) is not the
    // default action's, which would kill the process without a clean stop.
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    async move {
        let ctrl_c = tokio::signal::ctrl_c();
        match term {
            Some(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            // Without a SIGTERM handler, Ctrl-C still works.
            None => {
                let _ = ctrl_c.await;
            }
        }
    }
}

/// This machine's name, lowercased: `$HOSTNAME`, else `/etc/hostname`.
pub fn hostname() -> Option<String> {
    let raw = std::env::var("HOSTNAME").ok().or_else(|| std::fs::read_to_string("/etc/hostname").ok())?;
    let name = raw.trim().to_ascii_lowercase();
    (!name.is_empty()).then_some(name)
}
