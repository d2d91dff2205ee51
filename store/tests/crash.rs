//! Acknowledged writes of the embedded store survive SIGKILL: a writer process is killed at a
//! random point, again and again on the same directory, and every write it acknowledged must
//! be there when the store is reopened.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use rand::Rng;
use stratus_store::Store;
use stratus_store::embedded::EmbeddedStore;

const RUNS: usize = 25;

#[test]
fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().expect("temp dir");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let mut acked: Vec<(String, i64)> = Vec::new();
    let mut highest = 0;
    for run in 0..RUNS {
        let mut child = Command::new(env!("CARGO_BIN_EXE_stratus-store-crash-writer"))
            .arg(dir.path())
            .arg(run.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the writer");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut record = |line: String| {
            let (key, rev) = line.rsplit_once(' ').expect("KEY REVISION");
            acked.push((key.to_owned(), rev.parse().expect("revision")));
        };
        let wanted = rand::rng().random_range(1..=300);
        for _ in 0..wanted {
            match lines.next() {
                Some(Ok(line)) => record(line),
                other => panic!("run {run}: the writer stopped early: {other:?}"),
            }
        }
        child.kill().expect("kill the writer");
        child.wait().expect("reap the writer");
        // What it printed before it died was acknowledged too.
        lines.map_while(Result::ok).for_each(record);

        runtime.block_on(async {
            let store = EmbeddedStore::open(dir.path()).await.expect("reopen after the kill");
            let revision = store.current_revision().await.expect("revision");
            let newest = acked.iter().map(|(_, r)| *r).max().unwrap_or(0);
            assert!(revision >= highest.max(newest), "run {run}: revision went back to {revision}");
            highest = revision;
            for (key, rev) in &acked {
                let kv = store.get(key).await.expect("get");
                let kv = kv.unwrap_or_else(|| panic!("run {run}: acknowledged {key} was lost"));
                assert_eq!(kv.mod_revision, *rev, "run {run}: {key}");
            }
            store.close().await.expect("close");
        });
    }
    assert!(acked.len() >= RUNS);
    println!("{} acknowledged writes over {RUNS} kills", acked.len());
}
