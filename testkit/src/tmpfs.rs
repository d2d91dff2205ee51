//! A small tmpfs, for tests of what happens when a disk is full.

use std::path::Path;
use std::process::Command;

use tempfile::TempDir;

/// A tmpfs mounted on a fresh temporary directory; unmounted when dropped.
pub struct Tmpfs {
    dir: TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as `mount -o size=` takes it, e.g. `1m`), or tells why it
    /// cannot: mounting needs root (or CAP_SYS_ADMIN). A test that needs one prints the reason
    /// and returns, rather than passing as if it had checked something.
    pub fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("no temporary directory: {e}"))?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!("mount -t tmpfs failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(Tmpfs { dir })
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily: a store that a failed test left open would keep it busy.
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}
