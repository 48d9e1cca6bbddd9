//! One regate per directory: an advisory lock (`flock`) on `regate.lock` in
//! the state directory, and in the managed registry's data directory, held
//! for the life of the server.
//!
//! A second regate on the same directories (on other ports, say) refuses to
//! start, naming the directory, the key, the pid holding it and what to do.
//! The kernel releases the lock when the holder dies, even by SIGKILL, so a
//! crash never leaves a stale lock behind. Owns only the lock files.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// The lock file's name in each locked directory.
pub const LOCK_FILE: &str = "regate.lock";

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{key} = {dir}: another regate{} is using this directory (lock {file}). Stop it first, or give this one its own {key} (environment: {env})", holder_text(*.holder))]
    Held {
        key: &'static str,
        env: String,
        dir: String,
        file: String,
        holder: Option<u32>,
    },
    #[error("{key} = {dir}: cannot create or lock {file} ({source}); check that the directory is writable by this user")]
    Io {
        key: &'static str,
        dir: String,
        file: String,
        source: std::io::Error,
    },
}

fn holder_text(pid: Option<u32>) -> String {
    pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
}

/// A held lock; released when dropped.
#[derive(Debug)]
pub struct InstanceLock {
    _file: Flock<File>,
    path: PathBuf,
}

impl InstanceLock {
    /// Locks `dir` (created if missing) for this process; `key` is the
    /// configuration key that names the directory.
    pub fn acquire(key: &'static str, dir: &Path) -> Result<InstanceLock, LockError> {
        let path = dir.join(LOCK_FILE);
        let io = |source| LockError::Io {
            key,
            dir: dir.display().to_string(),
            file: path.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => l,
            Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(LockError::Held {
                    key,
                    env: crate::config::env_var(key),
                    dir: dir.display().to_string(),
                    file: path.display().to_string(),
                    holder: text.trim().parse().ok(),
                });
            }
            Err((_, errno)) => return Err(io(std::io::Error::from(errno))),
        };
        // Who holds it, for the message a second instance prints.
        let write_pid = |f: &mut File| -> std::io::Result<()> {
            f.set_len(0)?;
            f.rewind()?;
            write!(f, "{}", std::process::id())?;
            f.flush()
        };
        write_pid(&mut lock).map_err(io)?;
        Ok(InstanceLock { _file: lock, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_directory_is_refused_until_the_first_goes() {
        let dir = tempfile::tempdir().unwrap();
        let first = InstanceLock::acquire("state.dir", dir.path()).unwrap();
        let err = InstanceLock::acquire("state.dir", dir.path()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(&format!("pid {}", std::process::id()))
                && text.contains("state.dir")
                && text.contains("REGATE_STATE__DIR")
                && text.contains(&dir.path().display().to_string()),
            "{text}"
        );
        drop(first);
        InstanceLock::acquire("state.dir", dir.path()).unwrap();
    }
}
