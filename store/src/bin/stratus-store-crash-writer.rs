//! Test helper for `tests/crash.rs`: opens the embedded store in DIR and writes to it from
//! several tasks until killed. Each created key is printed as `KEY REVISION` on stdout, flushed,
//! only after its write was acknowledged. One task also rewrites a hot key and compacts, so
//! that kills land during snapshots too.
//!
//! Usage: `stratus-store-crash-writer DIR RUN`, where RUN makes this run's keys unique.

use std::io::Write;
use std::process::ExitCode;

use bytes::Bytes;
use stratus_store::embedded::{EmbeddedOptions, EmbeddedStore};
use stratus_store::{Result, Store};
use tokio::task::JoinSet;

const WRITERS: u64 = 8;

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, dir, run] = args.as_slice() else {
        eprintln!("usage: stratus-store-crash-writer DIR RUN");
        return ExitCode::from(2);
    };
    match write(dir, run).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stratus-store-crash-writer: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn write(dir: &str, run: &str) -> Result<()> {
    let options = EmbeddedOptions { snapshot_min_bytes: 64 << 10, snapshot_ratio: 2, ..Default::default() };
    let store = EmbeddedStore::open_with(dir, options).await?;
    let mut tasks: JoinSet<Result<()>> = JoinSet::new();
    for task in 0..WRITERS {
        let (store, run) = (store.clone(), run.to_owned());
        tasks.spawn(async move {
            for i in 0u64.. {
                let key = format!("/crash/{run}/{task}/{i}");
                let value = Bytes::from(vec![b'x'; 16 + (i * 37 % 200) as usize]);
                let rev = store.create(&key, value, 0).await?;
                let mut out = std::io::stdout().lock();
                writeln!(out, "{key} {rev}")?;
                out.flush()?;
            }
            Ok(())
        });
    }
    let hot = format!("/crash-hot/{run}");
    tasks.spawn(async move {
        let mut rev = store.create(&hot, Bytes::from_static(b"0"), 0).await?;
        for i in 1u64.. {
            rev = store.update(&hot, Bytes::from(vec![b'h'; 16 << 10]), rev).await?;
            if i % 20 == 0 {
                store.compact(rev).await?;
            }
        }
        Ok(())
    });
    while let Some(done) = tasks.join_next().await {
        done.map_err(|e| std::io::Error::other(e.to_string()))??;
    }
    Ok(())
}
