//! `stratus down`: removes every container Stratus runs on this machine (any node's), and with
//! `--purge` the data directory of `stratus up`.

use std::io::Write;

use stratus_agent::runtime::docker::DockerRuntime;
use stratus_agent::runtime::{Runtime, labels};

use crate::args::DownArgs;
use crate::error::{Error, Result};
use crate::{Environment, Io};

pub(crate) async fn run(args: DownArgs, env: &Environment, io: &mut Io) -> Result<()> {
    let runtime = DockerRuntime::connect(args.docker_host.as_deref()).map_err(|e| Error::Up(e.to_string()))?;
    let node = args.node.as_deref().unwrap_or("");
    let containers = runtime.list(&[(labels::NODE, node)]).await.map_err(|e| Error::Up(e.to_string()))?;
    let mut removed = 0;
    for c in &containers {
        runtime.remove(&c.id).await.map_err(|e| Error::Up(e.to_string()))?;
        let instance = c.labels.get(labels::INSTANCE).map(String::as_str).unwrap_or("?");
        let namespace = c.labels.get(labels::NAMESPACE).map(String::as_str).unwrap_or("?");
        writeln!(io.out, "container {} (instance {namespace}/{instance}) removed", short(&c.id))?;
        removed += 1;
    }
    writeln!(io.out, "{removed} Stratus container(s) removed")?;
    if args.purge {
        let dir = args
            .data_dir
            .or_else(|| env.data_dir.clone())
            .ok_or_else(|| Error::Up("there is no home directory; pass --data-dir".to_string()))?;
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => writeln!(io.out, "data directory {} removed", dir.display())?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                writeln!(io.out, "data directory {} does not exist", dir.display())?
            }
            Err(e) => return Err(Error::Up(format!("cannot remove {}: {e}", dir.display()))),
        }
    }
    Ok(())
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}
