//! A client given several API servers (`http://a,http://b`) goes on with the next when one
//! cannot be reached: reads and watches are sent again, a write only when it never left the
//! process, and nothing a server acknowledged is lost.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use stratus_api::Resource;
use stratus_api::v1::{Lease, LeaseSpec, ObjectMeta};
use stratus_apiserver::testing::TestServer;
use stratus_client::runtime::Informer;
use stratus_client::{Client, Error, ListParams};
use tokio::time::{Instant, timeout};

const WAIT: Duration = Duration::from_secs(20);

fn lease(name: &str) -> Lease {
    let metadata = ObjectMeta { name: name.into(), namespace: "default".into(), ..ObjectMeta::default() };
    let spec =
        LeaseSpec { holder_identity: "failover-test".into(), lease_duration_seconds: 10, ..LeaseSpec::default() };
    Lease { metadata: Some(metadata), spec: Some(spec), ..Lease::default() }
}

/// An address nobody listens on.
fn dead_address() -> Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(format!("http://{}", listener.local_addr()?))
}

/// A second API server over the first one's store, as a second replica of a cluster.
async fn replica_of(first: &TestServer) -> Result<TestServer> {
    Ok(TestServer::start_with(first.store.clone(), tempfile::tempdir()?).await)
}

#[tokio::test]
async fn a_server_that_cannot_be_reached_is_passed_over_for_the_next() -> Result<()> {
    let server = TestServer::start().await;
    let dead = dead_address()?;
    let client = Client::new(&format!("{dead}, {}", server.endpoint))?.with_token(&server.token);
    assert_eq!(client.endpoint(), dead, "calls start at the first server");

    // A create is sent again: the first server was never reached, so it cannot have been done.
    client.create(lease("first")).await.context("a create while the first server is away")?;
    assert_eq!(client.endpoint(), server.endpoint, "calls go on at the server that answered");
    // Clones share where calls go, whatever their credentials.
    assert_eq!(client.with_token("other").endpoint(), server.endpoint);
    let got: Lease = client.get("default", "first").await?;
    assert_eq!(got.meta().name, "first");

    // The server's own answers are not failures of the server: no other server is asked.
    let missing = client.get::<Lease>("default", "missing").await;
    assert!(matches!(missing, Err(Error::NotFound(_))), "{missing:?}");
    assert_eq!(client.endpoint(), server.endpoint);
    Ok(())
}

#[tokio::test]
async fn when_no_server_can_be_reached_the_error_names_every_one() -> Result<()> {
    let (a, b) = (dead_address()?, dead_address()?);
    let client = Client::new(&format!("{a},{b}"))?;
    let error = client.get::<Lease>("default", "x").await.expect_err("nobody answers");
    match &error {
        Error::Unavailable { endpoint, .. } => assert_eq!(endpoint, &format!("{a}, {b}")),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(error.to_string().contains(&a) && error.to_string().contains(&b), "{error}");

    // One server: the error is that server's, as before.
    let single = Client::new(&a)?.get::<Lease>("default", "x").await.expect_err("nobody answers");
    assert!(matches!(&single, Error::Unavailable { endpoint, .. } if endpoint == &a), "{single:?}");

    for bad in ["", "http://a,", ",http://b"] {
        assert!(matches!(Client::new(bad), Err(Error::BadEndpoint(_))), "{bad:?} is refused");
    }
    Ok(())
}

/// A server that takes connections, reads what the client sends, and closes them unanswered:
/// a server that dies with a request in flight.
async fn hanging_up() -> Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        while let Ok((mut connection, _)) = listener.accept().await {
            let mut buffer = [0u8; 1024];
            let _ = tokio::io::AsyncReadExt::read(&mut connection, &mut buffer).await;
        }
    });
    Ok(address)
}

#[tokio::test]
async fn a_write_that_may_have_been_sent_is_not_sent_again() -> Result<()> {
    let server = TestServer::start().await;
    let client = Client::new(&format!("{},{}", hanging_up().await?, server.endpoint))?.with_token(&server.token);
    let failed = client.create(lease("once")).await.expect_err("the first server hangs up");
    assert!(matches!(&failed, Error::Unavailable { .. }), "{failed:?}");
    let read = client.get::<Lease>("default", "once").await;
    assert!(matches!(read, Err(Error::NotFound(_))), "the create was not sent to the second server: {read:?}");
    // The calls after it went on at the second server.
    assert_eq!(client.endpoint(), server.endpoint);
    client.create(lease("once")).await.context("the create, sent again by its caller")?;
    Ok(())
}

/// Writes leases one after the other until `stop`, each until the API acknowledges it (a
/// failed create is sent again; AlreadyExists then means the failed one was done). Returns the
/// acknowledged names and how many creates failed.
async fn write_until(client: Client, stop: tokio::sync::watch::Receiver<bool>) -> Result<(BTreeSet<String>, u32)> {
    let mut acknowledged = BTreeSet::new();
    let mut failures = 0;
    for i in 0.. {
        if *stop.borrow() {
            break;
        }
        let name = format!("w-{i:05}");
        let deadline = Instant::now() + WAIT;
        loop {
            match client.create(lease(&name)).await {
                Ok(_) | Err(Error::AlreadyExists(_)) => break,
                Err(e) if e.is_transient() && Instant::now() < deadline => {
                    failures += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(e).with_context(|| format!("creating {name}")),
            }
        }
        acknowledged.insert(name);
    }
    Ok((acknowledged, failures))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_a_server_under_writes_and_a_watch_loses_nothing_acknowledged() -> Result<()> {
    let first = TestServer::start().await;
    let second = replica_of(&first).await?;
    let client = Client::new(&format!("{},{}", first.endpoint, second.endpoint))?.with_token(&first.token);
    let informer = Informer::<Lease>::spawn(client.clone(), ListParams::default());
    timeout(WAIT, informer.wait_synced()).await.context("the informer's first list")?;

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let writer = tokio::spawn(write_until(client.clone(), stopped));
    // Some writes reach the first server, then it goes away under them.
    let store = informer.store();
    let written_before = 20;
    timeout(WAIT, async {
        while store.len() < written_before {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .context("the first writes")?;
    assert_eq!(client.endpoint(), first.endpoint);
    drop(first);

    // The writes and the watch go on at the second server.
    timeout(WAIT, async {
        while client.endpoint() != second.endpoint || store.len() < written_before * 3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .with_context(|| {
        format!("writes after the first server stopped (at {}, {} seen)", client.endpoint(), store.len())
    })?;
    stop.send_replace(true);
    let (acknowledged, failures) = writer.await??;

    // Every acknowledged write is stored, and the informer (watching across the loss) has them.
    let stored: BTreeSet<String> =
        client.list_all::<Lease>(&ListParams::default()).await?.items.iter().map(|l| l.meta().name.clone()).collect();
    let lost: Vec<_> = acknowledged.difference(&stored).collect();
    ensure!(lost.is_empty(), "acknowledged and lost: {lost:?}");
    timeout(WAIT, async {
        while store.len() < acknowledged.len() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .with_context(|| format!("the informer to see all {} writes (it has {})", acknowledged.len(), store.len()))?;
    println!("{} writes acknowledged, {failures} failed on the way and were sent again", acknowledged.len());
    Ok(())
}

/// A server whose connections hang: a listener whose accept queue is full and never drained,
/// so the kernel drops further connection attempts, as when a server's host or container is
/// gone without a word. Returns its address and what keeps it full.
async fn hanging_connections() -> Result<(String, Vec<tokio::net::TcpStream>, tokio::net::TcpListener)> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind("127.0.0.1:0".parse()?)?;
    let listener = socket.listen(1)?;
    let address = listener.local_addr()?;
    let mut held = Vec::new();
    // Connect until one attempt does not finish at once: the queue is full from there on.
    for _ in 0..16 {
        match timeout(Duration::from_millis(300), tokio::net::TcpStream::connect(address)).await {
            Ok(connected) => held.push(connected?),
            Err(_) => return Ok((format!("http://{address}"), held, listener)),
        }
    }
    anyhow::bail!("the accept queue of {address} never filled")
}

#[tokio::test]
async fn a_new_client_does_not_wait_out_a_server_whose_connections_hang() -> Result<()> {
    let server = TestServer::start().await;
    let (hanging, _held, _listener) = hanging_connections().await?;
    let client = Client::new(&format!("{hanging},{}", server.endpoint))?.with_token(&server.token);
    let started = Instant::now();
    client.create(lease("first")).await.context("the first call of a new client")?;
    assert_eq!(client.endpoint(), server.endpoint, "the calls went to the server that took a connection");
    // Without looking first, the call fails over only once the connect timeout (3 s) on the
    // first server has passed, so it cannot end sooner than that.
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "the first call waited out the connect timeout: {took:?}");
    Ok(())
}
