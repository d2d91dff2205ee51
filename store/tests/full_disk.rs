//! The embedded store on a disk that fills up: writes fail with a clear error and the store
//! says it is unhealthy; once there is room again writes succeed without a restart, and every
//! acknowledged write is still there after reopening. Needs a small tmpfs, so root (tests run
//! as root here); where mounting is not permitted the test says so and does nothing.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::PathBuf;

use bytes::Bytes;
use stratus_store::embedded::EmbeddedStore;
use stratus_store::{Error, Store};
use stratus_testkit::tmpfs::Tmpfs;

fn value(i: usize) -> Bytes {
    Bytes::from(vec![b'a' + (i % 26) as u8; 16 * 1024])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_writes_and_health_until_there_is_room_again() {
    let disk = match Tmpfs::mount("1m") {
        Ok(disk) => disk,
        Err(why) => {
            eprintln!("SKIPPED a_full_disk_fails_writes_and_health_until_there_is_room_again: {why}");
            return;
        }
    };
    // Room to free later, once the disk is full.
    let ballast: PathBuf = disk.path().join("ballast");
    std::fs::write(&ballast, vec![0u8; 256 * 1024]).unwrap();
    let data = disk.path().join("data");
    let store = EmbeddedStore::open(&data).await.unwrap();
    store.health().await.expect("a new store is healthy");

    let mut acknowledged = Vec::new();
    let failed = loop {
        let key = format!("/k/{:04}", acknowledged.len());
        match store.create(&key, value(acknowledged.len()), 0).await {
            Ok(_) => acknowledged.push(key),
            Err(e) => break (key, e),
        }
        assert!(acknowledged.len() < 1000, "a 1 MiB disk took 16 MB");
    };
    let (failed_key, error) = failed;
    assert!(matches!(&error, Error::Io(e) if e.kind() == std::io::ErrorKind::StorageFull), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("appending to the store log failed") && message.contains("No space left"), "{message}");
    let unhealthy = store.health().await.expect_err("a store that cannot write is unhealthy");
    assert!(matches!(&unhealthy, Error::Unhealthy(why) if why.contains("No space left")), "{unhealthy}");
    assert!(unhealthy.to_string().contains("the next write retries"), "{unhealthy}");
    // Still full: the retry fails the same way, and reads go on.
    assert!(store.create(&failed_key, value(0), 0).await.is_err());
    assert!(store.get(&acknowledged[0]).await.unwrap().is_some());
    assert!(store.get(&failed_key).await.unwrap().is_none(), "nothing unacknowledged appears");

    std::fs::remove_file(&ballast).unwrap();
    let revision = store.create(&failed_key, value(acknowledged.len()), 0).await.expect("a write after room is made");
    acknowledged.push(failed_key);
    store.health().await.expect("healthy again without a restart");
    let after = "/k/after".to_string();
    store.create(&after, value(7), 0).await.expect("and the next write");
    acknowledged.push(after);
    store.close().await.expect("close");

    let store = EmbeddedStore::open(&data).await.expect("reopen");
    assert_eq!(store.current_revision().await.unwrap(), revision + 1, "no unacknowledged write was replayed");
    for (i, key) in acknowledged.iter().enumerate() {
        let kv = store.get(key).await.unwrap().unwrap_or_else(|| panic!("acknowledged {key} is lost"));
        if key != "/k/after" {
            assert_eq!(kv.value, value(i), "{key}");
        }
    }
    let listed = store.list("/k/", Default::default()).await.unwrap();
    assert_eq!(listed.items.len(), acknowledged.len());
    store.health().await.expect("healthy after reopening");
    store.close().await.expect("close");
}
