//! regate's own durable state, in one embedded SQLite database
//! (`<state.dir>/regate.db`): the tag-delete journal, deletion history for
//! undo, dummy configs regate must unlink, GC history, the referrers
//! index, tag push and pull times and retention runs.
//!
//! Owns the connection, the schema and every query; other modules call the
//! typed methods of [`State`] and never see SQL, so the storage can later move
//! to a shared engine behind the same methods. Writes are durable before a
//! method returns (WAL with `synchronous = FULL`), except the closing of a
//! tag-delete journal entry, which recovery can redo. Methods block briefly on a
//! mutex and on disk; async callers on a hot path wrap them in
//! `spawn_blocking`.

pub mod gc_history;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::Connection;

mod dummy_configs;
mod referrers;
mod retention;
mod tag_journal;
pub use referrers::Referrer;
pub use retention::{RetentionRun, TagTimes};
pub use tag_journal::{Deletion, JournalEntry};

/// Seconds since the Unix epoch, as every table stores its times.
fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Each subsystem's tables; every statement is idempotent.
const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    tag_journal::SCHEMA,
    dummy_configs::SCHEMA,
    referrers::SCHEMA,
    gc_history::GC_RUNS_TABLE,
    gc_history::GC_UNTAGGED_WALK_TABLE,
    gc_history::MAINTENANCE_TABLE,
    retention::SCHEMA,
];

/// Runs a state call off the async threads (the calls block on the mutex
/// and on fsync).
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StateError> + Send + 'static,
) -> Result<T, StateError> {
    tokio::task::spawn_blocking(f)
        .await
        .expect("state call panicked")
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state.dir = {dir}: cannot create ({source}); set state.dir to a writable directory")]
    Dir { dir: String, source: std::io::Error },
    #[error("state database {path}: cannot make it readable by regate's user only (mode 0600): {source}; check the owner of the file and of state.dir")]
    Private {
        path: String,
        source: std::io::Error,
    },
    #[error("state database {path}: {source}")]
    Sqlite {
        path: String,
        source: rusqlite::Error,
    },
}

/// Creates `path` 0600 if missing, and narrows it and any `-wal`/`-shm`
/// beside it to 0600 (an older regate created them 0644).
fn private_files(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        match std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// The handle every module shares.
#[derive(Clone)]
pub struct State {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

impl State {
    /// Opens (creating if needed) `<dir>/regate.db`.
    pub fn open(dir: &Path) -> Result<State, StateError> {
        std::fs::create_dir_all(dir).map_err(|source| StateError::Dir {
            dir: dir.display().to_string(),
            source,
        })?;
        let path = dir.join("regate.db");
        let err = |source| StateError::Sqlite {
            path: path.display().to_string(),
            source,
        };
        // Private to regate's user: the history names accounts. SQLite
        // gives the -wal and -shm files the database file's mode.
        private_files(&path).map_err(|source| StateError::Private {
            path: path.display().to_string(),
            source,
        })?;
        let conn = Connection::open(&path).map_err(err)?;
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;")
            .map_err(err)?;
        for stmt in SCHEMA {
            conn.execute_batch(stmt).map_err(err)?;
        }
        gc_history::migrate(&conn).map_err(err)?;
        Ok(State {
            conn: Arc::new(Mutex::new(conn)),
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The connection, for the query methods of this module's files.
    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` with `synchronous = NORMAL`: its commit does not wait for an
    /// fsync. Only for writes that recovery redoes or that lose nothing when
    /// lost.
    fn relaxed<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StateError> {
        let mut conn = self.conn();
        conn.execute_batch("PRAGMA synchronous = NORMAL")
            .map_err(|e| self.sqlite_err(e))?;
        let result = f(&mut conn).map_err(|e| self.sqlite_err(e));
        conn.execute_batch("PRAGMA synchronous = FULL")
            .map_err(|e| self.sqlite_err(e))?;
        result
    }

    fn sqlite_err(&self, source: rusqlite::Error) -> StateError {
        StateError::Sqlite {
            path: self.path.display().to_string(),
            source,
        }
    }

    /// A small key/value store for single settings that must survive restarts.
    pub fn get_meta(&self, key: &str) -> Result<Option<String>, StateError> {
        use rusqlite::OptionalExtension;
        self.conn()
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(|e| self.sqlite_err(e))
    }

    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), StateError> {
        self.conn()
            .execute("INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value", [key, value])
            .map(|_| ())
            .map_err(|e| self.sqlite_err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let s = State::open(dir.path()).unwrap();
        assert_eq!(s.get_meta("gate").unwrap(), None);
        s.set_meta("gate", "closed").unwrap();
        drop(s);
        let s = State::open(dir.path()).unwrap();
        assert_eq!(s.get_meta("gate").unwrap().as_deref(), Some("closed"));
    }
}
