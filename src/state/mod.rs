//! regate's own durable state: the tag-delete journal, deletion history for
//! undo, dummy configs regate must unlink, GC history, maintenance, the
//! referrers index, tag push and pull times and retention runs. In one embedded SQLite database (`<state.dir>/regate.db`)
//! by default, or in PostgreSQL (`[state] url`) when several replicas share it.
//!
//! Owns the engines, the schema and every query; other modules call the
//! typed methods of [`State`] and never see SQL. The table files write their
//! SQL once against [`sql::Db`] (portable: `?1` placeholders, `ON CONFLICT`
//! upserts, `RETURNING id`); `pg` translates what differs. Writes are durable
//! before a method returns (SQLite: WAL with `synchronous = FULL`;
//! PostgreSQL: a committed transaction), except the writes a method's doc
//! calls relaxed (recovery redoes them or they lose nothing). Methods block
//! (a mutex, the disk, the network): async callers run them through
//! [`blocking`]; the PostgreSQL client panics on an async thread.
//!
//! Each process is a replica with an id; journal entries and dummy configs
//! record their owner, and `replicas` claims those of dead replicas.

pub mod gc_history;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::Connection;

use crate::error::chain;

mod dummy_configs;
mod pg;
mod referrers;
mod replicas;
mod retention;
mod sql;
mod tag_journal;
pub use referrers::Referrer;
pub use replicas::Orphans;
pub use retention::{RetentionRun, TagTimes};
pub use tag_journal::{Deletion, JournalEntry, JournalStep};

use sql::{vals, Db};

/// Seconds since the Unix epoch, as every table stores its times.
fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// This machine's name (the container's, in Kubernetes: the pod's).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into())
}

/// Each subsystem's tables; every statement is idempotent. Written in
/// SQLite's words (`INTEGER`, `BLOB`, `AUTOINCREMENT`); `pg::ddl` translates.
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

/// Columns added to tables after their first release: an older SQLite
/// database gets those it lacks at open; PostgreSQL's first migration step
/// has them all.
const ADDED_COLUMNS: &[(&str, &[(&str, &str)])] = &[
    ("gc_runs", gc_history::GC_RUNS_ADDED),
    ("tag_delete_journal", replicas::OWNER_COLUMN),
    ("dummy_configs", replicas::OWNER_COLUMN),
];

/// Runs a state call off the async threads (the calls block on a mutex, on
/// fsync or on the network).
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
    /// Its message says what to do (`pg_connect`'s advice).
    #[error("state.url = {url}: cannot connect to PostgreSQL: {source}")]
    Connect {
        url: String,
        #[source]
        source: crate::pg_connect::ConnectError,
    },
    /// A call that failed after start-up. Its message leaves the server's
    /// address out: some answers to clients carry it.
    #[error("state database (PostgreSQL, state.url): {}", chain(.source))]
    Postgres {
        url: String,
        #[source]
        source: postgres::Error,
    },
    #[error("state database: table {table}, column {column} holds {found:?}, which this regate does not know; was the database written by a newer regate? Run the version that wrote it, or fix the row")]
    UnknownText {
        table: &'static str,
        column: &'static str,
        found: String,
    },
    #[error("state database: column {column} holds {found}, not a {wanted}")]
    Decode {
        column: usize,
        found: String,
        wanted: &'static str,
    },
}

impl StateError {
    /// Whether the state database could not be reached or went away
    /// (PostgreSQL down, restarting, the connection cut), rather than a
    /// statement failing: the request may succeed if retried, so clients
    /// get a 503, not a 500.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StateError::Connect { .. } => true,
            StateError::Postgres { source, .. } => pg_unavailable(source),
            StateError::Dir { .. }
            | StateError::Private { .. }
            | StateError::Sqlite { .. }
            | StateError::UnknownText { .. }
            | StateError::Decode { .. } => false,
        }
    }
}

/// Whether `e` says the server could not be reached or went away: a closed
/// connection, an I/O error (refused, reset, timed out), SQLSTATE class 08
/// (connection exception) or 57P01-57P03 (shut down, crashed, starting up).
fn pg_unavailable(e: &postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        Some(code) => {
            let code = code.code();
            code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03")
        }
        None => std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>()),
    }
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

/// Where the state lives.
enum Engine {
    Sqlite {
        conn: Mutex<Connection>,
        path: PathBuf,
    },
    Postgres(Box<pg::Pg>),
}

/// The handle every module shares.
#[derive(Clone)]
pub struct State {
    engine: Arc<Engine>,
    /// This process's replica id (owner of the journal entries it opens).
    replica: Arc<str>,
}

impl State {
    /// Opens the state `settings` name: PostgreSQL at `state.url` when set,
    /// else SQLite in `state.dir`. Blocks (connects, migrates): call it off
    /// the async threads.
    pub fn from_settings(settings: &crate::config::StateSettings) -> Result<State, StateError> {
        match &settings.url {
            Some(url) => State::open_url(url),
            None => State::open(&settings.dir),
        }
    }

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
        // Every query of the table files stays prepared.
        conn.set_prepared_statement_cache_capacity(128);
        for stmt in SCHEMA {
            conn.execute_batch(stmt).map_err(err)?;
        }
        for (table, added) in ADDED_COLUMNS {
            add_columns(&conn, table, added).map_err(err)?;
        }
        Ok(State {
            engine: Arc::new(Engine::Sqlite {
                conn: Mutex::new(conn),
                path,
            }),
            replica: replicas::new_id().into(),
        })
    }

    /// Opens the PostgreSQL database at `url` (migrating it) and takes this
    /// replica's liveness lease.
    pub fn open_url(url: &crate::config::StateUrl) -> Result<State, StateError> {
        let replica = replicas::new_id();
        let pg = pg::Pg::open(url, &replica)?;
        Ok(State {
            engine: Arc::new(Engine::Postgres(Box::new(pg))),
            replica: replica.into(),
        })
    }

    /// Where the state lives, for messages (a PostgreSQL URL is redacted).
    pub fn describe(&self) -> String {
        match &*self.engine {
            Engine::Sqlite { path, .. } => path.display().to_string(),
            Engine::Postgres(pg) => pg.url.clone(),
        }
    }

    /// Whether other replicas may share this state (PostgreSQL).
    pub fn is_shared(&self) -> bool {
        matches!(&*self.engine, Engine::Postgres(_))
    }

    /// This process's replica id.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// Runs `f` in one transaction, durable when this returns.
    fn tx<T>(&self, f: impl FnOnce(&mut dyn Db) -> Result<T, StateError>) -> Result<T, StateError> {
        self.run(false, f)
    }

    /// Runs `f` in one transaction whose commit does not wait for the disk.
    /// Only for writes that recovery redoes or that lose nothing when lost.
    fn relaxed<T>(
        &self,
        f: impl FnOnce(&mut dyn Db) -> Result<T, StateError>,
    ) -> Result<T, StateError> {
        self.run(true, f)
    }

    fn run<T>(
        &self,
        relaxed: bool,
        f: impl FnOnce(&mut dyn Db) -> Result<T, StateError>,
    ) -> Result<T, StateError> {
        match &*self.engine {
            Engine::Sqlite { conn, path } => {
                let mut conn = lock(conn);
                let err = |source| StateError::Sqlite {
                    path: path.display().to_string(),
                    source,
                };
                if relaxed {
                    conn.execute_batch("PRAGMA synchronous = NORMAL")
                        .map_err(err)?;
                }
                let result = (|| {
                    let tx = conn.transaction().map_err(err)?;
                    let value = f(&mut sql::SqliteDb { tx: &tx, path })?;
                    tx.commit().map_err(err)?;
                    Ok(value)
                })();
                if relaxed {
                    conn.execute_batch("PRAGMA synchronous = FULL")
                        .map_err(err)?;
                }
                result
            }
            Engine::Postgres(pg) => pg.tx(relaxed, f),
        }
    }

    /// A small key/value store for single settings that must survive restarts.
    pub fn get_meta(&self, key: &str) -> Result<Option<String>, StateError> {
        self.tx(|db| {
            db.query_opt("SELECT value FROM meta WHERE key = ?1", vals![key])?
                .map(|r| r.get(0))
                .transpose()
        })
    }

    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), StateError> {
        self.tx(|db| {
            db.exec("INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value", vals![key, value])
                .map(|_| ())
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Adds the columns of `added` that `table` of an older database lacks.
fn add_columns(conn: &Connection, table: &str, added: &[(&str, &str)]) -> rusqlite::Result<()> {
    let have: Vec<String> = conn
        .prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for (name, ty) in added {
        if !have.iter().any(|h| h == name) {
            conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {name} {ty}"))?;
        }
    }
    Ok(())
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

    #[test]
    fn a_postgres_that_cannot_be_reached_is_unavailable_a_bad_row_is_not() {
        // Nothing listens on port 1 of the loopback: refused at connect.
        let refused = postgres::Config::new()
            .host("127.0.0.1")
            .port(1)
            .user("regate")
            .connect(postgres::NoTls)
            .err()
            .expect("nothing listens on port 1");
        let e = StateError::Postgres {
            url: "postgres://127.0.0.1:1/".into(),
            source: refused,
        };
        assert!(e.is_unavailable(), "{e}");
        let e = StateError::Decode {
            column: 0,
            found: "text".into(),
            wanted: "integer",
        };
        assert!(!e.is_unavailable());
    }
}
