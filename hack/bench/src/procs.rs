//! Processes of the benchmarks: Stratus binaries built beside the bench, logged in to, and
//! measured (resident memory from /proc).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use stratus_client::{Client, Credentials};

/// A child process killed when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Logs in as the bootstrap admin once the server answers.
pub async fn admin_client(endpoint: &str, ca_file: &Path, password_file: &Path) -> Result<(Client, String)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let (Ok(ca), Ok(password)) = (std::fs::read(ca_file), std::fs::read_to_string(password_file)) {
            let client = Client::with_ca(endpoint, Some(&ca))?;
            if let Ok(token) = client.login("admin", password.trim()).await {
                let credentials = Credentials::Token(token.access_token.clone().into());
                return Ok((client.with_credentials(credentials), token.access_token));
            }
        }
        ensure!(Instant::now() < deadline, "the API server at {endpoint} did not answer within a minute");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A binary built beside this one, started with its output in `log`.
pub fn spawn(name: &str, args: &[&str], log: &Path) -> Result<Proc> {
    let log = std::fs::File::create(log)?;
    let child = Command::new(sibling(name)?)
        .args(args)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    Ok(Proc(child))
}

/// The path of a binary built in the same profile as this one.
pub fn sibling(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.parent().context("the bench's directory")?.join(name);
    ensure!(path.exists(), "{} is not built: cargo build --release --bins", path.display());
    Ok(path)
}

pub fn path(p: &Path) -> String {
    p.display().to_string()
}

/// A process's resident memory now and at its peak, from /proc.
#[derive(Clone, Copy, Default)]
pub struct Rss {
    pub rss: u64,
    pub peak: u64,
}

impl Rss {
    pub fn of(proc: &Proc) -> Rss {
        let status = std::fs::read_to_string(format!("/proc/{}/status", proc.0.id())).unwrap_or_default();
        let kb = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .unwrap_or(0)
                * 1024
        };
        Rss { rss: kb("VmRSS:"), peak: kb("VmHWM:") }
    }

    pub fn mb(&self) -> f64 {
        self.rss as f64 / 1_048_576.0
    }

    pub fn peak_mb(&self) -> f64 {
        self.peak as f64 / 1_048_576.0
    }
}

/// The CPU time, user and kernel, that the processes `pids` (all their threads) have used so
/// far, in clock ticks; a process that is gone counts nothing.
pub fn cpu_ticks(pids: &[u32]) -> (u64, u64) {
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| {
            // After the command's name, which may hold spaces: state is the first field, and
            // utime and stime the 12th and 13th (proc(5)).
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            Some((fields.get(11)?.parse::<u64>().ok()?, fields.get(12)?.parse::<u64>().ok()?))
        })
        .fold((0, 0), |(u, k), (du, dk)| (u + du, k + dk))
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux when it cannot be asked).
pub fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<f64>().ok())
        .unwrap_or(100.0)
}

/// The processes whose parent is `pid`.
pub fn children(pid: u32) -> Vec<u32> {
    processes()
        .filter(|(_, stat, _)| {
            stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)) == Some(&pid.to_string())
        })
        .map(|(p, ..)| p)
        .collect()
}

/// Every process: its pid, `/proc/PID/stat` and `/proc/PID/cmdline`.
pub fn processes() -> impl Iterator<Item = (u32, String, String)> {
    std::fs::read_dir("/proc").into_iter().flatten().flatten().filter_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
        let cmdline = std::fs::read_to_string(entry.path().join("cmdline")).unwrap_or_default();
        Some((pid, stat, cmdline))
    })
}
