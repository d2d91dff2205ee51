//! A TCP relay in front of a server whose open connections a test can cut all at once, or
//! freeze: what a client sees when the network breaks under it (Chromium failing every request
//! in flight on `ERR_NETWORK_CHANGED`, a proxy restarting, a laptop changing networks), or when
//! a stream stops delivering without its connection saying so.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A connection whose server sent something this long after the client last did is streaming
/// (an answer comes at once; a watch or a followed log goes on sending).
const STREAMING: Duration = Duration::from_millis(500);

/// Relays loopback connections to a target until dropped.
pub struct Relay {
    /// Where it listens (`127.0.0.1`, a free port).
    pub addr: SocketAddr,
    cuts: watch::Sender<u64>,
    freezes: watch::Sender<u64>,
    /// How many connections are frozen.
    frozen: Arc<AtomicUsize>,
    /// Until when new connections are closed as soon as they come.
    down_until: Arc<Mutex<Option<Instant>>>,
    /// Requests whose answers are lost: those that start with these bytes, this many more.
    losing: Arc<Mutex<Losing>>,
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
        let (freezes, _) = watch::channel(0u64);
        let down_until = Arc::new(Mutex::new(None::<Instant>));
        let frozen = Arc::new(AtomicUsize::new(0));
        let losing = Arc::new(Mutex::new(Losing::default()));
        let (cutter, freezer, down, count, lose) =
            (cuts.clone(), freezes.clone(), Arc::clone(&down_until), Arc::clone(&frozen), Arc::clone(&losing));
        let started = Instant::now();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if down.lock().unwrap().is_some_and(|until| Instant::now() < until) {
                    continue;
                }
                let (cut, freeze) = (cutter.subscribe(), freezer.subscribe());
                let ends = Ends { cut, freeze, frozen_count: Arc::clone(&count), losing: Arc::clone(&lose) };
                tokio::spawn(relay(client, target, ends, started));
            }
        });
        Relay { addr, cuts, freezes, frozen, down_until, losing, task }
    }

    /// Relays each of the next `count` requests that start with `prefix` (`"POST /path"`) to the
    /// server, then closes its connection as the server answers, before the client sees a byte
    /// of the answer: a request that was done and whose answer was lost. `count` 0 stops it.
    pub fn lose_answers_to(&self, prefix: &str, count: usize) {
        *self.losing.lock().unwrap() = Losing { prefix: prefix.as_bytes().to_vec(), count, seen: 0 };
    }

    /// How many requests that start with the prefix last given to [`Relay::lose_answers_to`]
    /// went through since, their answers lost or not.
    pub fn seen(&self) -> usize {
        self.losing.lock().unwrap().seen
    }

    /// Closes every connection open now; later ones are relayed as before.
    pub fn cut(&self) {
        self.cuts.send_modify(|n| *n += 1);
    }

    /// Stops relaying on every connection that is streaming (its server went on sending well
    /// after the client's last request), leaving it open: a stream that died without a word.
    /// Idle connections and later ones are relayed as before. Waits until at least one
    /// connection is streaming, and returns how many were frozen.
    ///
    /// # Panics
    /// When no connection streams within 30 s.
    pub async fn freeze_streams(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            self.freezes.send_modify(|n| *n += 1);
            // Each connection looks at itself when told; give them the time to.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let frozen = self.frozen.load(Ordering::Relaxed);
            if frozen > 0 {
                return frozen;
            }
            assert!(Instant::now() < deadline, "no connection through the relay streamed within 30 s");
        }
    }

    /// Cuts every connection open now and closes every new one as soon as it comes, for `how_long`.
    pub fn break_for(&self, how_long: Duration) {
        *self.down_until.lock().unwrap() = Some(Instant::now() + how_long);
        self.cut();
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
        self.cut();
    }
}

/// Which requests' answers are lost (see [`Relay::lose_answers_to`]).
#[derive(Default)]
struct Losing {
    prefix: Vec<u8>,
    /// How many more answers to lose.
    count: usize,
    /// How many requests with the prefix went through.
    seen: usize,
}

/// What ends or stops one relayed connection.
struct Ends {
    cut: watch::Receiver<u64>,
    freeze: watch::Receiver<u64>,
    frozen_count: Arc<AtomicUsize>,
    losing: Arc<Mutex<Losing>>,
}

/// Relays one connection until either side closes or it is cut (both sockets dropped). Frozen
/// while streaming, it relays nothing more but keeps both open until cut.
async fn relay(client: TcpStream, target: SocketAddr, ends: Ends, started: Instant) {
    let Ends { mut cut, mut freeze, frozen_count, losing } = ends;
    let Ok(server) = TcpStream::connect(target).await else { return };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    // Milliseconds after `started` when the client, and the server, last sent something.
    let (last_asked, last_sent) = (AtomicU64::new(0), AtomicU64::new(0));
    // Whether the answer the server sends next is to be lost, and whether it was.
    let (lose_next, lost) = (AtomicBool::new(false), tokio::sync::Notify::new());
    let mark = |chunk: &[u8]| {
        let mut losing = losing.lock().unwrap();
        if !losing.prefix.is_empty() && chunk.starts_with(&losing.prefix) {
            losing.seen += 1;
            if losing.count > 0 {
                losing.count -= 1;
                lose_next.store(true, Ordering::Relaxed);
            }
        }
        true
    };
    let pass = |_: &[u8]| {
        if lose_next.load(Ordering::Relaxed) {
            lost.notify_one();
            return false;
        }
        true
    };
    // Each direction until its sender closes, then closes it on the other side (the client
    // hears at once that the server closed an idle connection, say).
    let upstream = pipe(&mut client_read, &mut server_write, &last_asked, started, mark);
    let downstream = pipe(&mut server_read, &mut client_write, &last_sent, started, pass);
    let frozen = async {
        loop {
            if freeze.changed().await.is_err() {
                return std::future::pending().await;
            }
            let streaming_for = last_sent.load(Ordering::Relaxed).saturating_sub(last_asked.load(Ordering::Relaxed));
            if u128::from(streaming_for) > STREAMING.as_millis() {
                frozen_count.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    };
    tokio::select! {
        () = async { tokio::join!(upstream, downstream); } => {}
        _ = cut.changed() => {}
        () = lost.notified() => {}
        () = frozen => {
            let _ = cut.changed().await;
        }
    }
}

/// Copies `from` to `to` until `from` closes (then shuts `to` down) or `to` fails, noting in
/// `last` when bytes last went through. Each chunk read goes through `pass` first; one it
/// refuses is not copied, and the copying stops there (the connection is closed).
async fn pipe(
    from: &mut tokio::net::tcp::OwnedReadHalf,
    to: &mut tokio::net::tcp::OwnedWriteHalf,
    last: &AtomicU64,
    started: Instant,
    pass: impl Fn(&[u8]) -> bool,
) {
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n @ 1..) = from.read(&mut buf).await {
        last.store(millis_since(started), Ordering::Relaxed);
        if !pass(&buf[..n]) {
            return std::future::pending().await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
    let _ = to.shutdown().await;
}

fn millis_since(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}
