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
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        // Without a SIGTERM handler, Ctrl-C still works.
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}

/// This machine's name, lowercased: `$HOSTNAME`, else `/etc/hostname`.
pub fn hostname() -> Option<String> {
    let raw = std::env::var("HOSTNAME").ok().or_else(|| std::fs::read_to_string("/etc/hostname").ok())?;
    let name = raw.trim().to_ascii_lowercase();
    (!name.is_empty()).then_some(name)
}
