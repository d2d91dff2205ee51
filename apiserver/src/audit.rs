//! The audit log: one JSON line per write (whatever its outcome) and per request refused for
//! who made it (401, 403, and the 404 that hides another tenant's object), to a file that is
//! rotated by size. A line names who, what and the result, never a body: no password, token or
//! object content can appear in it.
//!
//! ```json
//! {"time":"2026-12-04T13:01:02.345Z","requestId":"…","user":"alice","tenant":"a","verb":"create",
//!  "kind":"services","namespace":"a-ns","name":"web","code":201,"client":"127.0.0.1"}
//! ```

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use serde_json::json;

use crate::auth::Caller;

/// Where and how large the log grows.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    pub path: PathBuf,
    /// The file is rotated (to `PATH.1`, the older ones shifted up) when it passes this size.
    pub max_bytes: u64,
    /// How many rotated files are kept.
    pub keep: usize,
}

impl AuditConfig {
    pub fn new(path: impl Into<PathBuf>) -> AuditConfig {
        AuditConfig { path: path.into(), max_bytes: 100 * 1024 * 1024, keep: 5 }
    }
}

/// One audited request.
pub struct Entry<'a> {
    pub caller: &'a Caller,
    pub verb: &'a str,
    pub kind: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    pub code: u16,
}

/// The open log.
pub struct Audit {
    config: AuditConfig,
    file: Mutex<(File, u64)>,
}

impl Audit {
    /// Opens (appending to) the log, creating its directory; the file is made mode 0600.
    pub fn open(config: AuditConfig) -> std::io::Result<Audit> {
        let file = open_log(&config.path)?;
        let size = file.metadata()?.len();
        Ok(Audit { config, file: Mutex::new((file, size)) })
    }

    pub fn record(&self, e: &Entry) {
        let line = json!({
            "time": stratus_api::time::rfc3339_millis(std::time::SystemTime::now()),
            "requestId": e.caller.request_id,
            "user": e.caller.user,
            "tenant": e.caller.tenant,
            "verb": e.verb,
            "kind": e.kind,
            "namespace": e.namespace,
            "name": e.name,
            "code": e.code,
            "client": e.caller.client.map(|a| a.to_string()).unwrap_or_default(),
            "protocol": e.caller.protocol,
        });
        let mut bytes = line.to_string().into_bytes();
        bytes.push(b'\n');
        let mut held = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        if held.1 + bytes.len() as u64 > self.config.max_bytes
            && let Err(err) = self.rotate(&mut held)
        {
            tracing::warn!(error = %err, path = %self.config.path.display(), "rotating the audit log failed");
        }
        match held.0.write_all(&bytes) {
            Ok(()) => held.1 += bytes.len() as u64,
            Err(err) => {
                tracing::error!(error = %err, path = %self.config.path.display(), "writing the audit log failed")
            }
        }
    }

    fn rotate(&self, held: &mut (File, u64)) -> std::io::Result<()> {
        let numbered = |n: usize| PathBuf::from(format!("{}.{n}", self.config.path.display()));
        if self.config.keep > 0 {
            let _ = std::fs::remove_file(numbered(self.config.keep));
            for n in (1..self.config.keep).rev() {
                let _ = std::fs::rename(numbered(n), numbered(n + 1));
            }
            std::fs::rename(&self.config.path, numbered(1))?;
        } else {
            std::fs::remove_file(&self.config.path)?;
        }
        *held = (open_log(&self.config.path)?, 0);
        Ok(())
    }
}

fn open_log(path: &Path) -> std::io::Result<File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_rotate_by_size_and_keep_no_secret() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("audit.log");
        let audit =
            Audit::open(AuditConfig { path: path.clone(), max_bytes: 600, keep: 2 }).unwrap_or_else(|e| panic!("{e}"));
        let caller = Caller::system();
        for i in 0..20 {
            let name = format!("svc-{i}");
            audit.record(&Entry {
                caller: &caller,
                verb: "create",
                kind: "services",
                namespace: "default",
                name: &name,
                code: 201,
            });
        }
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(current.contains("svc-19"), "{current}");
        let first: serde_json::Value = serde_json::from_str(current.lines().next().unwrap_or("")).unwrap_or_default();
        assert_eq!(first["verb"], "create");
        assert!(Path::new(&format!("{}.1", path.display())).exists());
        assert!(Path::new(&format!("{}.2", path.display())).exists());
        assert!(!Path::new(&format!("{}.3", path.display())).exists());
    }
}
