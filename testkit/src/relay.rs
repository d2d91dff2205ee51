//! A TCP relay in front of a server whose open connections a test can cut all at once: what a
//! client sees when the network breaks under it (Chromium failing every request in flight on
//! `ERR_NETWORK_CHANGED`, a proxy restarting, a laptop changing networks).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Relays loopback connections to a target until dropped.
pub struct Relay {
    /// Where it listens (`127.0.0.1`, a free port).
    pub addr: SocketAddr,
    cuts: watch::Sender<u64>,
    /// Until when new connections are closed as soon as they come.
    down_until: Arc<Mutex<Option<Instant>>>,
    task: JoinHandle<()>,
}

impl Relay {
    /// Listens on a free loopback port and relays every connection to `target`.
    ///
    /// # Panics
    /// When no loopback port can be had.
    pub async fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a loopback port for the relay");
        let addr = listener.local_addr().expect("the relay's address");
        let (cuts, _) = watch::channel(0u64);
        let watcher = cuts.clone();
        let down_until = Arc::new(Mutex::new(None::<Instant>));
        let down = Arc::clone(&down_until);
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if down.lock().unwrap().is_some_and(|until| Instant::now() < until) {
                    continue;
                }
                let mut cut = watcher.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(target).await else { return };
                    // Ends when either side closes, or when cut: then both sockets are dropped.
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Relay { addr, cuts, down_until, task }
    }

    /// Cuts every connection open now and closes every new one as soon as it comes, for `how_long`.
    pub fn break_for(&self, how_long: Duration) {
        *self.down_until.lock().unwrap() = Some(Instant::now() + how_long);
        self.cut();
    }

    /// Closes every connection open now; later ones are relayed as before.
    pub fn cut(&self) {
        self.cuts.send_modify(|n| *n += 1);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
        self.cut();
    }
}
