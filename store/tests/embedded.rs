//! Tests of what only the embedded store has: durability across reopening, the handling of
//! torn and corrupt logs, snapshots, group commit, slow watchers and closing.
#![allow(clippy::expect_used)]

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use stratus_store::embedded::{EmbeddedOptions, EmbeddedStore};
use stratus_store::{Error, KeyValue, ListOptions, Revision, Store, WatchEvent};
use tokio::time::{Instant, timeout};

const PATIENCE: Duration = Duration::from_secs(15);

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn log_path(dir: &Path) -> PathBuf {
    dir.join("store.wal")
}

async fn open(dir: &Path) -> Arc<EmbeddedStore> {
    EmbeddedStore::open(dir).await.expect("open")
}

/// Everything a client can observe of a store whose history starts at `compacted`.
#[derive(Debug, PartialEq)]
struct Observed {
    revision: Revision,
    now: Vec<KeyValue>,
    at_compaction: Vec<KeyValue>,
    history: Vec<WatchEvent>,
}

async fn observe(s: &EmbeddedStore, compacted: Revision) -> Observed {
    let revision = s.current_revision().await.expect("revision");
    let list = |revision| async move {
        let opts = ListOptions { revision, ..Default::default() };
        s.list("", opts).await.expect("list").items
    };
    let mut history = Vec::new();
    let mut watch = s.watch("", compacted - 1).await.expect("watch");
    while history.last().is_none_or(|e: &WatchEvent| e.revision() < revision) {
        let item = timeout(PATIENCE, watch.next()).await.expect("event in time");
        match item.expect("stream open").expect("event") {
            WatchEvent::Progress { .. } => {}
            e => history.push(e),
        }
    }
    Observed { revision, now: list(None).await, at_compaction: list(Some(compacted)).await, history }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_keeps_everything() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = open(dir.path()).await;
    let lease = s.grant_lease(Duration::from_secs(600)).await.expect("grant");
    let r = s.create("/k/a", b("a1"), lease).await.expect("create");
    s.update("/k/a", b("a2"), r).await.expect("update");
    s.create("/k/b", b("b"), 0).await.expect("create");
    s.create("/k/c", b("c"), 0).await.expect("create");
    let compacted = s.delete("/k/c", None).await.expect("delete").1;
    s.compact(compacted).await.expect("compact");
    let r = s.create("/k/d", b("d1"), 0).await.expect("create");
    s.update("/k/d", b("d2"), r).await.expect("update");
    let before = observe(&s, compacted).await;
    s.close().await.expect("close");

    let s = open(dir.path()).await;
    assert_eq!(observe(&s, compacted).await, before);
    let older = ListOptions { revision: Some(compacted - 1), ..Default::default() };
    assert!(matches!(s.list("", older).await, Err(Error::Compacted { .. })));
    s.keep_alive(lease).await.expect("the lease survived");
    assert!(s.grant_lease(Duration::from_secs(1)).await.expect("grant") > lease);
    s.revoke_lease(lease).await.expect("revoke");
    assert_eq!(s.get("/k/a").await.expect("get"), None);
    assert!(s.create("/k/e", b("e"), 0).await.expect("create") > before.revision + 1);
    s.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_get_a_fresh_ttl_on_open() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = open(dir.path()).await;
    let granted = Instant::now();
    let lease = s.grant_lease(Duration::from_millis(1500)).await.expect("grant");
    s.create("/k/x", b("x"), lease).await.expect("create");
    s.close().await.expect("close");
    // Let the TTL run out while the store is closed.
    tokio::time::sleep_until(granted + Duration::from_secs(2)).await;

    let s = open(dir.path()).await;
    assert!(s.get("/k/x").await.expect("get").is_some(), "lease expired across the restart");
    let mut watch = s.watch("/k/", 0).await.expect("watch");
    loop {
        let event = timeout(PATIENCE, watch.next()).await.expect("expiry in time");
        match event.expect("stream open").expect("event") {
            WatchEvent::Progress { .. } => {}
            WatchEvent::Delete { prev, .. } if prev.key == "/k/x" => break,
            e => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(s.get("/k/x").await.expect("get"), None);
    s.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_tail_is_truncated() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = open(dir.path()).await;
    s.create("/k/a", b("a"), 0).await.expect("create");
    let rb = s.create("/k/b", b("b"), 0).await.expect("create");
    s.create("/k/c", b("c"), 0).await.expect("create");
    s.close().await.expect("close");

    // The last write cut short, as by a crash in the middle of it.
    let log = OpenOptions::new().write(true).open(log_path(dir.path())).expect("log");
    let len = log.metadata().expect("metadata").len();
    log.set_len(len - 3).expect("truncate");
    drop(log);
    let s = open(dir.path()).await;
    assert_eq!(s.get("/k/c").await.expect("get"), None);
    assert_eq!(s.current_revision().await.expect("revision"), rb);
    let rd = s.create("/k/d", b("d"), 0).await.expect("create after truncation");
    assert_eq!(rd, rb + 1);
    s.close().await.expect("close");

    // Zeros and a partial frame header after the last write.
    let mut log = OpenOptions::new().append(true).open(log_path(dir.path())).expect("log");
    log.write_all(&[0; 700]).expect("append");
    log.write_all(&[9, 0, 0, 0, 1, 2]).expect("append");
    drop(log);
    let s = open(dir.path()).await;
    assert_eq!(s.get("/k/d").await.expect("get").expect("d").mod_revision, rd);
    assert_eq!(s.current_revision().await.expect("revision"), rd);
    s.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corruption_in_the_middle_is_reported() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = open(dir.path()).await;
    for key in ["/k/a", "/k/b", "/k/c"] {
        s.create(key, b(&format!("value of {key}")), 0).await.expect("create");
    }
    s.close().await.expect("close");
    let path = log_path(dir.path());
    let mut data = std::fs::read(&path).expect("read log");
    let at = data.windows(13).position(|w| w == b"value of /k/a").expect("record of a");
    data[at] ^= 0x20;
    std::fs::write(&path, &data).expect("write log");
    let damaged_at = match EmbeddedStore::open(dir.path()).await {
        Err(Error::Corrupt(message)) => {
            let offset = message
                .split("damaged frame at offset ")
                .nth(1)
                .and_then(|rest| rest.split(':').next())
                .and_then(|n| n.parse::<usize>().ok());
            let offset = offset.unwrap_or_else(|| panic!("the error names no offset: {message}"));
            assert!(offset < at && at - offset < 64, "offset {offset} is not the frame holding byte {at}: {message}");
            offset
        }
        Err(e) => panic!("expected corruption, got {e}"),
        Ok(_) => panic!("opened a corrupt log"),
    };

    // Repair cuts the log there: a's write and the later ones are gone, the store opens.
    let repaired = EmbeddedStore::repair(dir.path()).await.expect("repair").expect("damage found");
    assert_eq!(repaired.offset, damaged_at as u64);
    assert_eq!(repaired.dropped_bytes, (data.len() - damaged_at) as u64);
    assert_eq!(repaired.dropped_frames, 2, "b's and c's frames were readable and are dropped");
    assert_eq!(repaired.dropped_revisions, Some((3, 4)));
    assert_eq!(repaired.kept_revision, 1);
    let s = open(dir.path()).await;
    assert_eq!(s.current_revision().await.expect("revision"), 1);
    assert_eq!(s.get("/k/b").await.expect("get"), None);
    s.create("/k/d", b("after the repair"), 0).await.expect("writes go on");
    s.close().await.expect("close");
    assert_eq!(EmbeddedStore::repair(dir.path()).await.expect("repair again"), None, "nothing is left to repair");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_rewrite_keeps_everything() {
    let dir = tempfile::tempdir().expect("temp dir");
    let options = EmbeddedOptions { snapshot_min_bytes: 16 << 10, snapshot_ratio: 2, ..Default::default() };
    let s = EmbeddedStore::open_with(dir.path(), options.clone()).await.expect("open");
    let lease = s.grant_lease(Duration::from_secs(600)).await.expect("grant");
    s.create("/k/leased", b("l"), lease).await.expect("create");
    s.create("/k/gone", b("g"), 0).await.expect("create");
    let mut rev = s.create("/k/hot", b("0"), 0).await.expect("create");
    for i in 0..300 {
        rev = s.update("/k/hot", Bytes::from(vec![i as u8; 200]), rev).await.expect("update");
    }
    s.delete("/k/gone", None).await.expect("delete");
    let grown = std::fs::metadata(log_path(dir.path())).expect("log").len();
    assert!(grown > 60_000);
    let compacted = rev - 5;
    s.compact(compacted).await.expect("compact");
    // Queued behind the rewrite that the compaction made worthwhile.
    s.create("/k/after", b("after"), 0).await.expect("create");
    let shrunk = std::fs::metadata(log_path(dir.path())).expect("log").len();
    assert!(shrunk < grown / 10, "log of {grown} bytes only shrank to {shrunk}");
    let before = observe(&s, compacted).await;
    s.snapshot().await.expect("explicit snapshot");
    assert_eq!(observe(&s, compacted).await, before);
    s.close().await.expect("close");

    let s = EmbeddedStore::open_with(dir.path(), options).await.expect("reopen");
    assert_eq!(observe(&s, compacted).await, before);
    s.keep_alive(lease).await.expect("the lease survived");
    let older = ListOptions { revision: Some(compacted - 1), ..Default::default() };
    assert!(matches!(s.list("", older).await, Err(Error::Compacted { .. })));
    let next = s.create("/k/new", b("new"), 0).await.expect("create");
    assert_eq!(next, before.revision + 1);
    s.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_shares_fsyncs() {
    const WRITERS: usize = 64;
    const EACH: usize = 20;
    let dir = tempfile::tempdir().expect("temp dir");
    let s = open(dir.path()).await;
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let s = s.clone();
            tokio::spawn(async move {
                for i in 0..EACH {
                    s.create(&format!("/k/{w}/{i}"), b("v"), 0).await.expect("create");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("writer");
    }
    let writes = (WRITERS * EACH) as u64;
    let syncs = s.wal_syncs();
    println!("{syncs} fsyncs for {writes} writes");
    assert!(syncs * 4 <= writes, "{syncs} fsyncs for {writes} writes");
    assert_eq!(s.list("/k/", ListOptions::default()).await.expect("list").items.len() as u64, writes);
    s.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_watcher_is_ended_with_compacted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let options = EmbeddedOptions { watch_buffer: 4, ..Default::default() };
    let s = EmbeddedStore::open_with(dir.path(), options).await.expect("open");
    let mut w = s.watch("/k/", 0).await.expect("watch");
    let mut revs = Vec::new();
    for i in 0..10 {
        revs.push(s.create(&format!("/k/{i}"), b("v"), 0).await.expect("create"));
    }
    // The buffered events come first, in order, then the end.
    for rev in &revs[..4] {
        let event = w.next().await.expect("event").expect("ok");
        assert_eq!(event.revision(), *rev);
    }
    match w.next().await {
        Some(Err(Error::Compacted { requested, .. })) => assert_eq!(requested, revs[4]),
        other => panic!("expected the stream to end with Compacted, got {other:?}"),
    }
    assert!(w.next().await.is_none());
    // History is still there, so the watcher can resume where it was cut off.
    let mut w = s.watch("/k/", revs[3]).await.expect("resume");
    for rev in &revs[4..] {
        assert_eq!(w.next().await.expect("event").expect("ok").revision(), *rev);
    }
    s.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_ends_streams_and_releases_the_directory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = open(dir.path()).await;
    match EmbeddedStore::open(dir.path()).await {
        Err(Error::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock),
        Err(e) => panic!("second open: {e}"),
        Ok(_) => panic!("opened a directory in use"),
    }
    let mut w = s.watch("/k/", 0).await.expect("watch");
    s.create("/k/a", b("a"), 0).await.expect("create");
    s.close().await.expect("close");
    assert!(matches!(w.next().await, Some(Ok(WatchEvent::Put { .. }))));
    assert!(matches!(w.next().await, Some(Err(Error::Closed))));
    assert!(w.next().await.is_none());
    assert!(matches!(s.get("/k/a").await, Err(Error::Closed)));
    assert!(matches!(s.create("/k/b", b("b"), 0).await, Err(Error::Closed)));
    assert!(matches!(s.watch("/k/", 0).await, Err(Error::Closed)));
    s.close().await.expect("closing twice");
    let s = open(dir.path()).await;
    assert!(s.get("/k/a").await.expect("get").is_some());
    s.close().await.expect("close");
}
