//! What every Stratus binary does the same way, so that they behave alike: logs to stderr
//! filtered by `RUST_LOG` (default `info`), stop on SIGTERM or Ctrl-C, name themselves after the
//! host, and may open as many files as the host lets them; and the one accept loop every HTTP
//! and gRPC server shares ([`server`], [`tls`]).

pub mod otel;
pub mod server;
pub mod tls;

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

/// The open-file limits (`RLIMIT_NOFILE`) of this process; `None` is unlimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenFileLimit {
    /// The soft limit the process started with.
    pub before: Option<u64>,
    /// The soft limit now.
    pub soft: Option<u64>,
    /// The hard limit: as far as the soft one may be raised without privileges.
    pub hard: Option<u64>,
}

/// Raises this process's soft open-file limit to its hard limit, and logs both. Servers hold a
/// descriptor per connection, watch and log file; a soft limit of 1024 (a common default) runs
/// out long before the machine does. A limit that cannot be raised is logged as a warning and
/// left as it was. Call it after [`init_tracing`].
pub fn raise_open_file_limit() -> OpenFileLimit {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

    let limit = getrlimit(Resource::Nofile);
    let mut result = OpenFileLimit { before: limit.current, soft: limit.current, hard: limit.maximum };
    let show = |n: Option<u64>| n.map_or_else(|| "unlimited".to_string(), |n| n.to_string());
    if limit.current != limit.maximum {
        match setrlimit(Resource::Nofile, Rlimit { current: limit.maximum, maximum: limit.maximum }) {
            Ok(()) => result.soft = limit.maximum,
            Err(e) => tracing::warn!(
                soft = show(limit.current),
                hard = show(limit.maximum),
                error = %e,
                "cannot raise the open-file limit to the hard limit"
            ),
        }
    }
    if result.soft == result.before {
        tracing::debug!(
            soft = show(result.soft),
            hard = show(result.hard),
            "open-file limit already at the hard limit"
        );
    } else {
        tracing::info!(
            soft = show(result.soft),
            hard = show(result.hard),
            was = show(result.before),
            "raised the open-file limit"
        );
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_open_file_limit_is_raised_to_the_hard_one() {
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

        let start = getrlimit(Resource::Nofile);
        // Lower the soft limit first (always allowed), so that there is something to raise.
        let lower = start.maximum.map_or(1024, |hard| hard.min(1024) / 2);
        setrlimit(Resource::Nofile, Rlimit { current: Some(lower), maximum: start.maximum }).unwrap_or_else(|e| {
            panic!("lowering the soft limit to {lower}: {e}");
        });
        let raised = raise_open_file_limit();
        assert_eq!(raised.before, Some(lower));
        assert_eq!(raised.soft, start.maximum);
        assert_eq!(raised.hard, start.maximum);
        assert_eq!(getrlimit(Resource::Nofile).current, start.maximum, "the process's limit changed");
    }
}
