//! The conformance suite of the `Store` contract. Every case is an async fn taking the store;
//! `conformance!` turns each into one test per backend: the embedded store in a temporary
//! directory, and etcd, a real server started per test on free loopback ports, once over plain
//! HTTP and once over TLS with a client certificate.
#![allow(clippy::expect_used)]

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use stratus_store::embedded::EmbeddedStore;
use stratus_store::etcd::EtcdStore;
use stratus_store::{Error, KeyValue, ListOptions, MAX_VALUE_SIZE, Revision, Store, WatchEvent, WatchStream};
use tokio::time::{Instant, timeout};

const PROGRESS: Duration = Duration::from_millis(200);
const PATIENCE: Duration = Duration::from_secs(15);

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let dir = tempfile::tempdir().expect("temp dir");
                    let options = stratus_store::embedded::EmbeddedOptions {
                        progress_interval: super::PROGRESS,
                        ..Default::default()
                    };
                    let store = super::EmbeddedStore::open_with(dir.path(), options)
                        .await
                        .expect("open embedded store");
                    super::$case(store.clone()).await;
                    store.close().await.expect("close");
                }
            )*
        }
        mod etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let etcd = stratus_testkit::EtcdServer::start().await;
                    let store = super::EtcdStore::connect(std::slice::from_ref(&etcd.endpoint))
                        .await
                        .expect("connect to etcd");
                    super::$case(store).await;
                }
            )*
        }
        mod etcd_tls {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let etcd = stratus_testkit::EtcdServer::start_tls().await;
                    let store = super::EtcdStore::connect_with(std::slice::from_ref(&etcd.endpoint), Some(&super::tls(&etcd)))
                        .await
                        .expect("connect to etcd over TLS");
                    super::$case(store).await;
                }
            )*
        }
    };
}

/// What the store needs to reach `etcd` (started with TLS): its CA and the client certificate.
fn tls(etcd: &stratus_testkit::EtcdServer) -> stratus_store::etcd::EtcdTls {
    let client = etcd.tls.as_ref().expect("etcd was started with TLS");
    stratus_store::etcd::EtcdTls {
        ca_pem: client.ca_pem.clone().into_bytes(),
        identity: Some((client.cert_pem.clone().into_bytes(), client.key_pem.clone().into_bytes())),
    }
}

conformance!(
    basics,
    revisions_never_go_backwards,
    concurrent_updates_lose_nothing,
    concurrent_creates_have_one_winner,
    list_prefix_and_pagination,
    list_at_past_revision,
    watch_replays_then_follows_concurrent_writes,
    watch_sees_prev_values,
    watch_from_now,
    watch_progress,
    compaction,
    lease_expiry_deletes_keys,
    lease_keep_alive_and_revoke,
);

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// The next event of `w` that is not a progress notification.
async fn next_change(w: &mut WatchStream) -> WatchEvent {
    loop {
        let item = timeout(PATIENCE, w.next()).await.expect("watch event in time");
        match item.expect("watch stream open").expect("watch event") {
            WatchEvent::Progress { .. } => continue,
            e => return e,
        }
    }
}

/// Waits for `cond` to hold, checking every few milliseconds, failing after [`PATIENCE`].
async fn eventually<F: Future<Output = bool>>(what: &str, mut cond: impl FnMut() -> F) {
    let deadline = Instant::now() + PATIENCE;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn kv(key: &str, value: &str, create: Revision, modified: Revision) -> KeyValue {
    KeyValue { key: key.into(), value: b(value), create_revision: create, mod_revision: modified, lease: 0 }
}

async fn basics(s: Arc<dyn Store>) {
    assert_eq!(s.get("/c/a").await.expect("get"), None);
    let r1 = s.create("/c/a", b("1"), 0).await.expect("create");
    assert_eq!(s.get("/c/a").await.expect("get"), Some(kv("/c/a", "1", r1, r1)));
    assert!(matches!(s.create("/c/a", b("x"), 0).await, Err(Error::AlreadyExists { key }) if key == "/c/a"));

    let r2 = s.update("/c/a", b("2"), r1).await.expect("update");
    assert!(r2 > r1);
    assert_eq!(s.get("/c/a").await.expect("get"), Some(kv("/c/a", "2", r1, r2)));
    match s.update("/c/a", b("3"), r1).await {
        Err(Error::Conflict { key, expected, actual }) => {
            assert_eq!((key.as_str(), expected, actual), ("/c/a", r1, r2));
        }
        other => panic!("stale update: {other:?}"),
    }
    assert!(matches!(s.update("/c/none", b("3"), r1).await, Err(Error::NotFound { key }) if key == "/c/none"));
    assert!(matches!(s.update("/c/none", b("3"), 0).await, Err(Error::NotFound { .. })));
    assert!(matches!(s.delete("/c/none", None).await, Err(Error::NotFound { .. })));
    assert!(matches!(s.delete("/c/none", Some(r1)).await, Err(Error::NotFound { .. })));
    assert!(matches!(
        s.delete("/c/a", Some(r1)).await,
        Err(Error::Conflict { expected, actual, .. }) if expected == r1 && actual == r2
    ));

    let (prev, r3) = s.delete("/c/a", Some(r2)).await.expect("delete");
    assert_eq!(prev, kv("/c/a", "2", r1, r2));
    assert!(r3 > r2);
    assert_eq!(s.get("/c/a").await.expect("get"), None);
    let r4 = s.create("/c/a", b("again"), 0).await.expect("re-create");
    assert_eq!(s.get("/c/a").await.expect("get"), Some(kv("/c/a", "again", r4, r4)));
    let (prev, _) = s.delete("/c/a", None).await.expect("unconditional delete");
    assert_eq!(prev.create_revision, r4);

    let big = Bytes::from(vec![0; MAX_VALUE_SIZE + 1]);
    let too_large =
        |r| matches!(r, Err(Error::TooLarge { size, limit }) if size == MAX_VALUE_SIZE + 1 && limit == MAX_VALUE_SIZE);
    assert!(too_large(s.create("/c/big", big.clone(), 0).await));
    let rb = s.create("/c/big", Bytes::from(vec![7; 1 << 20]), 0).await.expect("1 MiB value");
    assert!(too_large(s.update("/c/big", big, rb).await));
    assert_eq!(s.get("/c/big").await.expect("get").expect("big").value.len(), 1 << 20);

    assert!(matches!(s.create("/c/l", b("x"), 424242).await, Err(Error::LeaseNotFound(424242))));
}

async fn revisions_never_go_backwards(s: Arc<dyn Store>) {
    let mut last = s.current_revision().await.expect("revision");
    assert!(last >= 1);
    for i in 0..30 {
        let key = format!("/c/{}", i % 3);
        let rev = match s.get(&key).await.expect("get") {
            None => s.create(&key, b("v"), 0).await.expect("create"),
            Some(kv) if i % 2 == 0 => s.update(&key, b("w"), kv.mod_revision).await.expect("update"),
            Some(kv) => s.delete(&key, Some(kv.mod_revision)).await.expect("delete").1,
        };
        assert!(rev > last, "revision {rev} after {last}");
        last = rev;
        assert!(s.current_revision().await.expect("revision") >= rev);
        assert!(s.list("/c/", ListOptions::default()).await.expect("list").revision >= rev);
    }
}

async fn concurrent_updates_lose_nothing(s: Arc<dyn Store>) {
    const TASKS: u64 = 16;
    const EACH: u64 = 12;
    let created = s.create("/c/counter", b("0"), 0).await.expect("create");
    let mut watch = s.watch("/c/counter", created).await.expect("watch");
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move {
                let mut done = Vec::new();
                while (done.len() as u64) < EACH {
                    let cur = s.get("/c/counter").await.expect("get").expect("counter");
                    let n: u64 = std::str::from_utf8(&cur.value).expect("utf-8").parse().expect("number");
                    match s.update("/c/counter", b(&(n + 1).to_string()), cur.mod_revision).await {
                        Ok(rev) => done.push((rev, n + 1)),
                        Err(Error::Conflict { .. }) => {}
                        Err(e) => panic!("update: {e}"),
                    }
                }
                done
            })
        })
        .collect();
    let mut done = Vec::new();
    for t in tasks {
        done.extend(t.await.expect("task"));
    }
    done.sort();
    // Every successful update was applied once, on top of the previous one, in revision order.
    let values: Vec<u64> = done.iter().map(|(_, n)| *n).collect();
    assert_eq!(values, (1..=TASKS * EACH).collect::<Vec<_>>());
    let last = s.get("/c/counter").await.expect("get").expect("counter");
    assert_eq!(last.value, b(&(TASKS * EACH).to_string()));
    assert_eq!(last.mod_revision, done.last().expect("updates").0);
    for (rev, n) in done {
        match next_change(&mut watch).await {
            WatchEvent::Put { kv, prev } => {
                assert_eq!((kv.mod_revision, kv.value), (rev, b(&n.to_string())));
                assert_eq!(prev.expect("prev").value, b(&(n - 1).to_string()));
            }
            e => panic!("unexpected {e:?}"),
        }
    }
}

async fn concurrent_creates_have_one_winner(s: Arc<dyn Store>) {
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move { (i, s.create("/c/race", b(&i.to_string()), 0).await) })
        })
        .collect();
    let mut winners = Vec::new();
    for t in tasks {
        match t.await.expect("task") {
            (i, Ok(rev)) => winners.push((i, rev)),
            (_, Err(Error::AlreadyExists { .. })) => {}
            (_, Err(e)) => panic!("create: {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    let (i, rev) = winners[0];
    assert_eq!(s.get("/c/race").await.expect("get"), Some(kv("/c/race", &i.to_string(), rev, rev)));
}

async fn list_prefix_and_pagination(s: Arc<dyn Store>) {
    for key in ["/c/a/a", "/c/a/b", "/c/a/bc/x", "/c/a/b0", "/c/a/c"] {
        s.create(key, b(key), 0).await.expect("create");
    }
    let mut want = Vec::new();
    for i in 1..=7 {
        let key = format!("/c/a/b/{i}");
        s.create(&key, b(&key), 0).await.expect("create");
        want.push(key);
    }
    let keys = |items: &[KeyValue]| items.iter().map(|kv| kv.key.clone()).collect::<Vec<_>>();
    let all = s.list("/c/a/b/", ListOptions::default()).await.expect("list");
    assert_eq!(keys(&all.items), want);
    assert!(!all.more);
    // A prefix is a string prefix: without the slash it also matches its siblings.
    let loose = s.list("/c/a/b", ListOptions::default()).await.expect("list");
    let mut loose_want = vec!["/c/a/b".to_owned()];
    loose_want.extend(want.iter().cloned());
    loose_want.extend(["/c/a/b0".to_owned(), "/c/a/bc/x".to_owned()]);
    assert_eq!(keys(&loose.items), loose_want);

    // Pages of 3 at the first page's revision, while a new key appears in between.
    let first = s.list("/c/a/b/", ListOptions { limit: 3, ..Default::default() }).await.expect("page");
    assert!(first.more);
    s.create("/c/a/b/4a", b("late"), 0).await.expect("create");
    let mut paged = first.items.clone();
    let mut more = first.more;
    while more {
        let opts = ListOptions {
            start_after: paged.last().map(|kv| kv.key.clone()),
            limit: 3,
            revision: Some(first.revision),
        };
        let page = s.list("/c/a/b/", opts).await.expect("page");
        assert_eq!(page.revision, first.revision);
        assert!(page.items.len() <= 3);
        more = page.more;
        paged.extend(page.items);
    }
    assert_eq!(paged, all.items);

    let exact = s.list("/c/a/b/", ListOptions { limit: 8, ..Default::default() }).await.expect("list");
    assert_eq!((exact.items.len(), exact.more), (8, false));
    let beyond = ListOptions { start_after: Some("/c/a/b/9".into()), ..Default::default() };
    let beyond = s.list("/c/a/b/", beyond).await.expect("list");
    assert!(beyond.items.is_empty() && !beyond.more);
    let before = ListOptions { start_after: Some("/c/a/a".into()), limit: 1, ..Default::default() };
    let before = s.list("/c/a/b/", before).await.expect("list");
    assert_eq!((keys(&before.items), before.more), (vec!["/c/a/b/1".to_owned()], true));
    assert!(s.list("/c/zzz/", ListOptions::default()).await.expect("list").items.is_empty());
}

async fn list_at_past_revision(s: Arc<dyn Store>) {
    let r1 = s.create("/c/p/1", b("one"), 0).await.expect("create");
    let r2 = s.create("/c/p/2", b("two"), 0).await.expect("create");
    s.update("/c/p/1", b("uno"), r1).await.expect("update");
    s.delete("/c/p/2", None).await.expect("delete");
    s.create("/c/p/3", b("three"), 0).await.expect("create");
    let then = s.list("/c/p/", ListOptions { revision: Some(r2), ..Default::default() }).await.expect("list");
    assert_eq!(then.revision, r2);
    assert_eq!(then.items, vec![kv("/c/p/1", "one", r1, r1), kv("/c/p/2", "two", r2, r2)]);
    let earlier = ListOptions { revision: Some(r1), ..Default::default() };
    assert_eq!(s.list("/c/p/", earlier).await.expect("list").items, vec![kv("/c/p/1", "one", r1, r1)]);
    let now = s.list("/c/p/", ListOptions::default()).await.expect("list");
    let values: Vec<_> = now.items.iter().map(|kv| kv.value.clone()).collect();
    assert_eq!(values, vec![b("uno"), b("three")]);
    let future = ListOptions { revision: Some(now.revision + 1000), ..Default::default() };
    match s.list("/c/p/", future).await {
        Err(Error::FutureRevision { requested, current }) => {
            assert_eq!(requested, now.revision + 1000);
            assert!(current >= now.revision);
        }
        other => panic!("future list: {other:?}"),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Change {
    Put(Revision, String, Bytes),
    Delete(Revision, String),
}

impl Change {
    fn revision(&self) -> Revision {
        match self {
            Change::Put(r, ..) | Change::Delete(r, _) => *r,
        }
    }
}

async fn watch_replays_then_follows_concurrent_writes(s: Arc<dyn Store>) {
    let start = s.current_revision().await.expect("revision");
    let acked = Arc::new(Mutex::new(Vec::new()));
    let writer = |task: usize, s: Arc<dyn Store>, acked: Arc<Mutex<Vec<Change>>>| async move {
        for j in 0..12 {
            let key = format!("/c/w/{task}/{}", j / 3);
            let value = b(&format!("{task}-{j}"));
            let change = match (j % 3, s.get(&key).await.expect("get")) {
                (2, Some(cur)) => {
                    let rev = s.delete(&key, Some(cur.mod_revision)).await.expect("delete").1;
                    Change::Delete(rev, key)
                }
                (_, Some(cur)) => {
                    let rev = s.update(&key, value.clone(), cur.mod_revision).await.expect("update");
                    Change::Put(rev, key, value)
                }
                (_, None) => Change::Put(s.create(&key, value.clone(), 0).await.expect("create"), key, value),
            };
            acked.lock().expect("lock").push(change);
        }
    };
    // Some history before the watch starts, then writers racing with its creation.
    writer(99, s.clone(), acked.clone()).await;
    let tasks: Vec<_> = (0..8).map(|t| tokio::spawn(writer(t, s.clone(), acked.clone()))).collect();
    let noise = {
        let s = s.clone();
        tokio::spawn(async move {
            for i in 0..20 {
                s.create(&format!("/c/wx/{i}"), b("noise"), 0).await.expect("create");
            }
        })
    };
    eventually("some concurrent writes", || {
        let n = acked.lock().expect("lock").len();
        async move { n >= 20 }
    })
    .await;
    let mut watch = s.watch("/c/w/", start).await.expect("watch");
    for t in tasks {
        t.await.expect("writer");
    }
    noise.await.expect("noise");
    let mut want = acked.lock().expect("lock").clone();
    want.sort_by_key(Change::revision);
    let last = want.last().expect("writes").revision();
    let mut got = Vec::new();
    while got.len() < want.len() {
        got.push(match next_change(&mut watch).await {
            WatchEvent::Put { kv, .. } => Change::Put(kv.mod_revision, kv.key, kv.value),
            WatchEvent::Delete { prev, revision } => Change::Delete(revision, prev.key),
            WatchEvent::Progress { .. } => unreachable!("skipped by next_change"),
        });
    }
    assert_eq!(got, want);
    s.create("/c/w/end", b("end"), 0).await.expect("create");
    match next_change(&mut watch).await {
        WatchEvent::Put { kv, .. } => assert!(kv.key == "/c/w/end" && kv.mod_revision > last),
        e => panic!("expected the final put, got {e:?}"),
    }
}

async fn watch_sees_prev_values(s: Arc<dyn Store>) {
    let before = s.current_revision().await.expect("revision");
    let r1 = s.create("/c/k", b("v1"), 0).await.expect("create");
    let r2 = s.update("/c/k", b("v2"), r1).await.expect("update");
    let (_, r3) = s.delete("/c/k", None).await.expect("delete");
    let mut w = s.watch("/c/", before).await.expect("watch");
    assert_eq!(next_change(&mut w).await, WatchEvent::Put { kv: kv("/c/k", "v1", r1, r1), prev: None });
    assert_eq!(
        next_change(&mut w).await,
        WatchEvent::Put { kv: kv("/c/k", "v2", r1, r2), prev: Some(kv("/c/k", "v1", r1, r1)) }
    );
    assert_eq!(next_change(&mut w).await, WatchEvent::Delete { prev: kv("/c/k", "v2", r1, r2), revision: r3 });
    let r4 = s.create("/c/k", b("v3"), 0).await.expect("create");
    assert_eq!(next_change(&mut w).await, WatchEvent::Put { kv: kv("/c/k", "v3", r4, r4), prev: None });
}

async fn watch_from_now(s: Arc<dyn Store>) {
    s.create("/c/old", b("old"), 0).await.expect("create");
    let mut w = s.watch("/c/", 0).await.expect("watch");
    let rev = s.create("/c/new", b("new"), 0).await.expect("create");
    assert_eq!(next_change(&mut w).await, WatchEvent::Put { kv: kv("/c/new", "new", rev, rev), prev: None });
}

async fn watch_progress(s: Arc<dyn Store>) {
    let mut w = s.watch("/c/p/", 0).await.expect("watch");
    let put = s.create("/c/p/x", b("x"), 0).await.expect("create");
    let other = s.create("/c/q", b("elsewhere"), 0).await.expect("create");
    let mut seen = Vec::new();
    loop {
        let item = timeout(PATIENCE, w.next()).await.expect("progress in time");
        match item.expect("stream open").expect("event") {
            WatchEvent::Progress { revision } if revision >= other => break,
            e => seen.push(e.revision()),
        }
    }
    // Progress only ever follows the changes it vouches for.
    assert_eq!(seen.first(), Some(&put));
    assert!(seen.windows(2).all(|p| p[0] <= p[1]));
}

async fn compaction(s: Arc<dyn Store>) {
    let r1 = s.create("/c/a", b("1"), 0).await.expect("create");
    let r2 = s.update("/c/a", b("2"), r1).await.expect("update");
    let r3 = s.create("/c/b", b("1"), 0).await.expect("create");
    let r4 = s.update("/c/b", b("2"), r3).await.expect("update");
    s.compact(r3).await.expect("compact");
    let at = |revision| ListOptions { revision: Some(revision), ..Default::default() };
    match s.list("/c/", at(r2)).await {
        Err(Error::Compacted { requested, compacted }) => assert_eq!((requested, compacted), (r2, r3)),
        other => panic!("list below the compaction: {other:?}"),
    }
    let kept = s.list("/c/", at(r3)).await.expect("list at the compaction revision");
    assert_eq!(kept.items, vec![kv("/c/a", "2", r1, r2), kv("/c/b", "1", r3, r3)]);
    match s.watch("/c/", r1).await {
        Err(Error::Compacted { requested, compacted }) => assert_eq!((requested, compacted), (r2, r3)),
        Err(e) => panic!("watch below the compaction: {e}"),
        Ok(_) => panic!("watch below the compaction succeeded"),
    }
    let mut w = s.watch("/c/", r2).await.expect("watch from the compaction revision");
    assert_eq!(next_change(&mut w).await, WatchEvent::Put { kv: kv("/c/b", "1", r3, r3), prev: None });
    assert_eq!(next_change(&mut w).await.revision(), r4);
    s.compact(r2).await.expect("compacting less is a no-op");
    s.compact(r4).await.expect("compact to the current revision");
    match s.compact(r4 + 1000).await {
        Err(Error::FutureRevision { requested, .. }) => assert_eq!(requested, r4 + 1000),
        other => panic!("future compaction: {other:?}"),
    }
    assert_eq!(s.get("/c/b").await.expect("get"), Some(kv("/c/b", "2", r3, r4)));
}

async fn lease_expiry_deletes_keys(s: Arc<dyn Store>) {
    let lease = s.grant_lease(Duration::from_secs(1)).await.expect("grant");
    let start = s.current_revision().await.expect("revision");
    let mut w = s.watch("/c/", start).await.expect("watch");
    for key in ["/c/l1", "/c/l2"] {
        s.create(key, b(key), lease).await.expect("create with lease");
    }
    s.create("/c/free", b("free"), 0).await.expect("create");
    assert_eq!(s.get("/c/l1").await.expect("get").expect("l1").lease, lease);
    let mut deleted = HashSet::new();
    while deleted.len() < 2 {
        if let WatchEvent::Delete { prev, .. } = next_change(&mut w).await {
            assert_eq!((prev.lease, prev.value.clone()), (lease, b(&prev.key)));
            deleted.insert(prev.key);
        }
    }
    assert_eq!(s.get("/c/l1").await.expect("get"), None);
    assert_eq!(s.get("/c/l2").await.expect("get"), None);
    assert!(s.get("/c/free").await.expect("get").is_some());
    assert!(matches!(s.keep_alive(lease).await, Err(Error::LeaseNotFound(l)) if l == lease));
}

async fn lease_keep_alive_and_revoke(s: Arc<dyn Store>) {
    let lease = s.grant_lease(Duration::from_secs(2)).await.expect("grant");
    let rev = s.create("/c/k", b("v"), lease).await.expect("create");
    let mut w = s.watch("/c/", rev).await.expect("watch");
    // Well past the TTL, renewed every 200 ms.
    let until = Instant::now() + Duration::from_secs(4);
    let mut ticks = tokio::time::interval(Duration::from_millis(200));
    while Instant::now() < until {
        ticks.tick().await;
        s.keep_alive(lease).await.expect("keep alive");
    }
    assert!(s.get("/c/k").await.expect("get").is_some(), "key of a kept-alive lease expired");
    s.revoke_lease(lease).await.expect("revoke");
    assert_eq!(s.get("/c/k").await.expect("get"), None);
    match next_change(&mut w).await {
        WatchEvent::Delete { prev, .. } => assert_eq!(prev.key, "/c/k"),
        e => panic!("expected the delete, got {e:?}"),
    }
    assert!(matches!(s.keep_alive(lease).await, Err(Error::LeaseNotFound(_))));
    assert!(matches!(s.revoke_lease(lease).await, Err(Error::LeaseNotFound(_))));
    assert!(matches!(s.create("/c/k", b("v"), lease).await, Err(Error::LeaseNotFound(_))));
}
