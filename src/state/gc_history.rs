//! Garbage collection history and the persisted maintenance state.
//!
//! Owns the tables `gc_runs` (one row per run: its phases' timings, exit
//! status, counts, bytes freed, and the pid of a running GC command so a
//! restarted regate can find it) and `maintenance` (a gate closed by hand,
//! with its reason). `gc` calls these typed methods; nobody else sees SQL.

use rusqlite::{params, OptionalExtension, Row};
use serde::Serialize;

use super::{State, StateError};

pub(super) const GC_RUNS_TABLE: &str = "CREATE TABLE IF NOT EXISTS gc_runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    trigger TEXT NOT NULL,
    dry_run INTEGER NOT NULL,
    untagged INTEGER NOT NULL,
    status TEXT NOT NULL,
    phase TEXT NOT NULL,
    started_at_ms INTEGER NOT NULL,
    finished_at_ms INTEGER,
    drain_ms INTEGER,
    drain_timed_out INTEGER,
    closed_ms INTEGER,
    gc_ms INTEGER,
    exit_code INTEGER,
    blobs_deleted INTEGER,
    manifests_deleted INTEGER,
    bytes_before INTEGER,
    bytes_after INTEGER,
    pid INTEGER,
    pid_start TEXT,
    log_path TEXT,
    error TEXT,
    untagged_report TEXT
)";

pub(super) const MAINTENANCE_TABLE: &str = "CREATE TABLE IF NOT EXISTS maintenance (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    reason TEXT NOT NULL,
    since_ms INTEGER NOT NULL
)";

/// One garbage collection run, as recorded.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GcRun {
    pub id: i64,
    /// `manual` or `schedule`.
    pub trigger: String,
    pub dry_run: bool,
    pub untagged: bool,
    /// `running`, `succeeded`, `failed`, `interrupted` (regate stopped and
    /// the command was gone), `finished_unobserved` (the command ended while
    /// regate was restarting: exit status unknown).
    pub status: String,
    /// `starting`, `draining`, `untagged`, `collecting`, `done`.
    pub phase: String,
    pub started_at_ms: i64,
    pub finished_at_ms: Option<i64>,
    /// Time from the request to the gate closed.
    pub drain_ms: Option<i64>,
    pub drain_timed_out: Option<bool>,
    /// Time the gate was closed.
    pub closed_ms: Option<i64>,
    /// Time the GC command ran.
    pub gc_ms: Option<i64>,
    pub exit_code: Option<i64>,
    pub blobs_deleted: Option<i64>,
    pub manifests_deleted: Option<i64>,
    pub bytes_before: Option<i64>,
    pub bytes_after: Option<i64>,
    pub pid: Option<i64>,
    /// The process start time (from /proc), so a reused pid is not mistaken for it.
    pub pid_start: Option<String>,
    pub log_path: Option<String>,
    pub error: Option<String>,
    /// JSON: what untagged cleanup deleted (or would delete), per repository.
    pub untagged_report: Option<serde_json::Value>,
}

impl GcRun {
    pub fn bytes_freed(&self) -> Option<i64> {
        Some(self.bytes_before? - self.bytes_after?)
    }
}

/// A gate closed by hand.
#[derive(Debug, Clone, Serialize)]
pub struct Maintenance {
    pub reason: String,
    pub since_ms: i64,
}

const COLUMNS: &str = "id, trigger, dry_run, untagged, status, phase, started_at_ms, finished_at_ms, drain_ms, drain_timed_out, closed_ms, gc_ms, exit_code, blobs_deleted, manifests_deleted, bytes_before, bytes_after, pid, pid_start, log_path, error, untagged_report";

fn from_row(r: &Row<'_>) -> rusqlite::Result<GcRun> {
    let report: Option<String> = r.get(21)?;
    Ok(GcRun {
        id: r.get(0)?,
        trigger: r.get(1)?,
        dry_run: r.get(2)?,
        untagged: r.get(3)?,
        status: r.get(4)?,
        phase: r.get(5)?,
        started_at_ms: r.get(6)?,
        finished_at_ms: r.get(7)?,
        drain_ms: r.get(8)?,
        drain_timed_out: r.get(9)?,
        closed_ms: r.get(10)?,
        gc_ms: r.get(11)?,
        exit_code: r.get(12)?,
        blobs_deleted: r.get(13)?,
        manifests_deleted: r.get(14)?,
        bytes_before: r.get(15)?,
        bytes_after: r.get(16)?,
        pid: r.get(17)?,
        pid_start: r.get(18)?,
        log_path: r.get(19)?,
        error: r.get(20)?,
        untagged_report: report.and_then(|s| serde_json::from_str(&s).ok()),
    })
}

impl State {
    /// Records a new run (its `id` is ignored) and returns its id.
    pub fn gc_run_insert(&self, run: &GcRun) -> Result<i64, StateError> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO gc_runs (trigger, dry_run, untagged, status, phase, started_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![run.trigger, run.dry_run, run.untagged, run.status, run.phase, run.started_at_ms],
        )
        .map_err(|e| self.sqlite_err(e))?;
        Ok(conn.last_insert_rowid())
    }

    /// Writes every field of `run` (by its id).
    pub fn gc_run_save(&self, run: &GcRun) -> Result<(), StateError> {
        let report = run.untagged_report.as_ref().map(|v| v.to_string());
        self.conn()
            .execute(
                "UPDATE gc_runs SET status = ?2, phase = ?3, finished_at_ms = ?4, drain_ms = ?5, drain_timed_out = ?6, closed_ms = ?7, gc_ms = ?8, exit_code = ?9, blobs_deleted = ?10, manifests_deleted = ?11, bytes_before = ?12, bytes_after = ?13, pid = ?14, pid_start = ?15, log_path = ?16, error = ?17, untagged_report = ?18 WHERE id = ?1",
                params![
                    run.id,
                    run.status,
                    run.phase,
                    run.finished_at_ms,
                    run.drain_ms,
                    run.drain_timed_out,
                    run.closed_ms,
                    run.gc_ms,
                    run.exit_code,
                    run.blobs_deleted,
                    run.manifests_deleted,
                    run.bytes_before,
                    run.bytes_after,
                    run.pid,
                    run.pid_start,
                    run.log_path,
                    run.error,
                    report,
                ],
            )
            .map(|_| ())
            .map_err(|e| self.sqlite_err(e))
    }

    /// Removes finished runs older than the newest `keep` runs; returns the
    /// log files they had, for the caller to delete.
    pub fn gc_runs_prune(&self, keep: usize) -> Result<Vec<String>, StateError> {
        let conn = self.conn();
        let cutoff = "SELECT id FROM gc_runs ORDER BY id DESC LIMIT -1 OFFSET ?1";
        let logs = conn
            .prepare(&format!(
                "SELECT log_path FROM gc_runs WHERE status != 'running' AND log_path IS NOT NULL AND id IN ({cutoff})"
            ))
            .and_then(|mut stmt| {
                stmt.query_map(params![keep as i64], |r| r.get::<_, String>(0))?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(|e| self.sqlite_err(e))?;
        conn.execute(
            &format!("DELETE FROM gc_runs WHERE status != 'running' AND id IN ({cutoff})"),
            params![keep as i64],
        )
        .map_err(|e| self.sqlite_err(e))?;
        Ok(logs)
    }

    /// The most recent runs, newest first.
    pub fn gc_runs_recent(&self, limit: usize) -> Result<Vec<GcRun>, StateError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {COLUMNS} FROM gc_runs ORDER BY id DESC LIMIT ?1"
            ))
            .map_err(|e| self.sqlite_err(e))?;
        let rows = stmt
            .query_map([limit as i64], from_row)
            .map_err(|e| self.sqlite_err(e))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.sqlite_err(e))
    }

    pub fn gc_run(&self, id: i64) -> Result<Option<GcRun>, StateError> {
        self.conn()
            .query_row(
                &format!("SELECT {COLUMNS} FROM gc_runs WHERE id = ?1"),
                [id],
                from_row,
            )
            .optional()
            .map_err(|e| self.sqlite_err(e))
    }

    /// Runs recorded as running (at most one, unless regate died).
    pub fn gc_runs_running(&self) -> Result<Vec<GcRun>, StateError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {COLUMNS} FROM gc_runs WHERE status = 'running' ORDER BY id"
            ))
            .map_err(|e| self.sqlite_err(e))?;
        let rows = stmt
            .query_map([], from_row)
            .map_err(|e| self.sqlite_err(e))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.sqlite_err(e))
    }

    pub fn maintenance(&self) -> Result<Option<Maintenance>, StateError> {
        self.conn()
            .query_row(
                "SELECT reason, since_ms FROM maintenance WHERE id = 1",
                [],
                |r| {
                    Ok(Maintenance {
                        reason: r.get(0)?,
                        since_ms: r.get(1)?,
                    })
                },
            )
            .optional()
            .map_err(|e| self.sqlite_err(e))
    }

    /// Closes (`Some`) or opens (`None`) the gate by hand, durably.
    pub fn set_maintenance(&self, m: Option<&Maintenance>) -> Result<(), StateError> {
        let conn = self.conn();
        let r = match m {
            Some(m) => conn.execute(
                "INSERT INTO maintenance (id, reason, since_ms) VALUES (1, ?1, ?2) ON CONFLICT(id) DO UPDATE SET reason = excluded.reason, since_ms = excluded.since_ms",
                params![m.reason, m.since_ms],
            ),
            None => conn.execute("DELETE FROM maintenance", []),
        };
        r.map(|_| ()).map_err(|e| self.sqlite_err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_keeps_the_newest_and_running_runs() {
        let dir = tempfile::tempdir().unwrap();
        let s = State::open(dir.path()).unwrap();
        let mut ids = Vec::new();
        for i in 0..6 {
            let mut run = GcRun {
                trigger: "test".into(),
                status: if i == 0 { "running" } else { "succeeded" }.into(),
                phase: "done".into(),
                ..Default::default()
            };
            run.id = s.gc_run_insert(&run).unwrap();
            run.log_path = Some(format!("/logs/run-{}.log", run.id));
            s.gc_run_save(&run).unwrap();
            ids.push(run.id);
        }
        let logs = s.gc_runs_prune(2).unwrap();
        assert_eq!(
            logs,
            vec![
                format!("/logs/run-{}.log", ids[1]),
                format!("/logs/run-{}.log", ids[2]),
                format!("/logs/run-{}.log", ids[3])
            ]
        );
        let left: Vec<i64> = s.gc_runs_recent(10).unwrap().iter().map(|r| r.id).collect();
        assert_eq!(left, vec![ids[5], ids[4], ids[0]]);
        assert!(s.gc_runs_prune(2).unwrap().is_empty());
    }

    #[test]
    fn runs_and_maintenance_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let s = State::open(dir.path()).unwrap();
        let mut run = GcRun {
            trigger: "manual".into(),
            status: "running".into(),
            phase: "starting".into(),
            started_at_ms: 1,
            ..Default::default()
        };
        run.id = s.gc_run_insert(&run).unwrap();
        run.pid = Some(42);
        run.untagged_report = Some(serde_json::json!({"repos": []}));
        s.gc_run_save(&run).unwrap();
        s.set_maintenance(Some(&Maintenance {
            reason: "backup".into(),
            since_ms: 5,
        }))
        .unwrap();
        drop(s);
        let s = State::open(dir.path()).unwrap();
        let running = s.gc_runs_running().unwrap();
        assert_eq!(running.len(), 1);
        assert_eq!(running[0].pid, Some(42));
        assert_eq!(
            running[0].untagged_report.as_ref().unwrap()["repos"],
            serde_json::json!([])
        );
        assert_eq!(s.maintenance().unwrap().unwrap().reason, "backup");
        s.set_maintenance(None).unwrap();
        assert!(s.maintenance().unwrap().is_none());
        assert_eq!(s.gc_runs_recent(10).unwrap().len(), 1);
    }
}
