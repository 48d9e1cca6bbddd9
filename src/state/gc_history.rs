//! Garbage collection history and the persisted maintenance state.
//!
//! Owns the tables `gc_runs` (one row per run: its phases' timings, exit
//! status, counts, bytes freed, how much storage the untagged walk read, how
//! many times the run was started (resumed after a restart), and the pid of a
//! running GC command so a restarted regate can find it), `gc_untagged_walk`
//! (the untagged walk's progress, one row per repository of a run, so a
//! resumed run skips the repositories it finished) and `maintenance` (a gate
//! closed by hand, with its reason). `gc` calls these typed methods; nobody
//! else sees SQL.

use serde::Serialize;

use super::sql::{text_enum, vals, Row};
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

/// Columns added to `gc_runs` after its first release, with their types;
/// `super::ADDED_COLUMNS` adds those an older database lacks.
pub(super) const GC_RUNS_ADDED: &[(&str, &str)] = &[
    ("attempts", "INTEGER NOT NULL DEFAULT 1"),
    ("untagged_ms", "INTEGER"),
    ("repositories", "INTEGER"),
    ("tags", "INTEGER"),
    ("revisions", "INTEGER"),
    ("deadline_at_ms", "INTEGER"),
    ("replica", "TEXT"),
];

/// The untagged walk's progress: a row per repository a run has started
/// (`done` = 0: its deletes under way; `deleted` counts those the registry
/// accepted) or finished (`done` = 1, `report` its final plan). Rows go with
/// their run when the history is pruned.
pub(super) const GC_UNTAGGED_WALK_TABLE: &str = "CREATE TABLE IF NOT EXISTS gc_untagged_walk (
    run_id INTEGER NOT NULL REFERENCES gc_runs(id) ON DELETE CASCADE,
    repository TEXT NOT NULL,
    done INTEGER NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    report TEXT NOT NULL,
    PRIMARY KEY (run_id, repository)
)";

pub(super) const MAINTENANCE_TABLE: &str = "CREATE TABLE IF NOT EXISTS maintenance (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    reason TEXT NOT NULL,
    since_ms INTEGER NOT NULL
)";

text_enum! {
    /// What started a run.
    #[derive(Default)]
    pub enum GcTrigger in "gc_runs"."trigger" {
        /// `POST /admin/gc`.
        #[default]
        Manual = "manual",
        /// The `[gc] schedule`.
        Schedule = "schedule",
    }
}

text_enum! {
    /// How a run stands or ended.
    #[derive(Default)]
    pub enum GcStatus in "gc_runs"."status" {
        /// Also while resumed after a restart.
        #[default]
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
        /// regate stopped and the run could not be resumed: a dry run, past
        /// its window, or too many attempts.
        Interrupted = "interrupted",
        /// The command ended while regate was restarting: exit status unknown.
        FinishedUnobserved = "finished_unobserved",
    }
}

text_enum! {
    /// The phase a run is in (or ended in).
    #[derive(Default)]
    pub enum GcPhase in "gc_runs"."phase" {
        #[default]
        Starting = "starting",
        Draining = "draining",
        Untagged = "untagged",
        Collecting = "collecting",
        Done = "done",
    }
}

/// One garbage collection run, as recorded.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GcRun {
    pub id: i64,
    pub trigger: GcTrigger,
    pub dry_run: bool,
    pub untagged: bool,
    pub status: GcStatus,
    pub phase: GcPhase,
    /// How many times the run was started: 1, plus one per resume after a
    /// restart cut it short.
    pub attempts: i64,
    pub started_at_ms: i64,
    pub finished_at_ms: Option<i64>,
    /// Time from the request to the gate closed.
    pub drain_ms: Option<i64>,
    pub drain_timed_out: Option<bool>,
    /// Time the gate was closed.
    pub closed_ms: Option<i64>,
    /// Time the untagged walk took (its planning and deletes), summed over
    /// the run's attempts.
    pub untagged_ms: Option<i64>,
    /// Storage the untagged walk went through so far: repositories, and their
    /// tags and manifest revisions.
    pub repositories: Option<i64>,
    pub tags: Option<i64>,
    pub revisions: Option<i64>,
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
    /// The end of the `[gc] window` of a scheduled run (ms since the epoch):
    /// a run cut short is not resumed past it.
    pub deadline_at_ms: Option<i64>,
    /// The replica that started the run (its id: host, pid, suffix), so any
    /// replica sharing the state can say who runs it.
    pub replica: Option<String>,
}

/// One repository of a run's untagged walk, as recorded.
#[derive(Debug, Clone)]
pub struct WalkedRepo {
    pub repository: String,
    /// Finished: its plan is final and a resumed run skips it.
    pub done: bool,
    /// Deletes the registry accepted so far.
    pub deleted: i64,
    pub report: serde_json::Value,
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

const COLUMNS: &str = "id, trigger, dry_run, untagged, status, phase, started_at_ms, finished_at_ms, drain_ms, drain_timed_out, closed_ms, gc_ms, exit_code, blobs_deleted, manifests_deleted, bytes_before, bytes_after, pid, pid_start, log_path, error, untagged_report, attempts, untagged_ms, repositories, tags, revisions, deadline_at_ms, replica";

fn from_row(r: &Row) -> Result<GcRun, StateError> {
    let report: Option<String> = r.get(21)?;
    Ok(GcRun {
        id: r.get(0)?,
        trigger: GcTrigger::from_column(r.get(1)?)?,
        dry_run: r.get(2)?,
        untagged: r.get(3)?,
        status: GcStatus::from_column(r.get(4)?)?,
        phase: GcPhase::from_column(r.get(5)?)?,
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
        attempts: r.get(22)?,
        untagged_ms: r.get(23)?,
        repositories: r.get(24)?,
        tags: r.get(25)?,
        revisions: r.get(26)?,
        deadline_at_ms: r.get(27)?,
        replica: r.get(28)?,
    })
}

/// The finished runs older than the newest `?1`.
const PRUNED: &str =
    "status != 'running' AND id NOT IN (SELECT id FROM gc_runs ORDER BY id DESC LIMIT ?1)";

impl State {
    /// Records a new run (its `id` and `replica` are ignored: this
    /// replica's) and returns its id.
    pub fn gc_run_insert(&self, run: &GcRun) -> Result<i64, StateError> {
        let replica = self.replica().to_owned();
        self.tx(|db| {
            match db.query_opt(
                "INSERT INTO gc_runs (trigger, dry_run, untagged, status, phase, started_at_ms, attempts, deadline_at_ms, replica) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) RETURNING id",
                vals![run.trigger, run.dry_run, run.untagged, run.status, run.phase, run.started_at_ms, run.attempts.max(1), run.deadline_at_ms, &replica],
            )? {
                Some(r) => r.get(0),
                None => Err(StateError::Decode { column: 0, found: "no row".into(), wanted: "id" }),
            }
        })
    }

    /// Writes every field of `run` (by its id).
    pub fn gc_run_save(&self, run: &GcRun) -> Result<(), StateError> {
        let report = run.untagged_report.as_ref().map(|v| v.to_string());
        self.tx(|db| {
            db.exec(
                "UPDATE gc_runs SET status = ?2, phase = ?3, finished_at_ms = ?4, drain_ms = ?5, drain_timed_out = ?6, closed_ms = ?7, gc_ms = ?8, exit_code = ?9, blobs_deleted = ?10, manifests_deleted = ?11, bytes_before = ?12, bytes_after = ?13, pid = ?14, pid_start = ?15, log_path = ?16, error = ?17, untagged_report = ?18, attempts = ?19, untagged_ms = ?20, repositories = ?21, tags = ?22, revisions = ?23 WHERE id = ?1",
                vals![
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
                    &run.pid_start,
                    &run.log_path,
                    &run.error,
                    report,
                    run.attempts.max(1),
                    run.untagged_ms,
                    run.repositories,
                    run.tags,
                    run.revisions,
                ],
            )
            .map(|_| ())
        })
    }

    /// Removes finished runs older than the newest `keep` runs; returns the
    /// log files they had, for the caller to delete.
    pub fn gc_runs_prune(&self, keep: usize) -> Result<Vec<String>, StateError> {
        let keep = keep as i64;
        self.tx(|db| {
            let logs = db
                .query(
                    &format!("SELECT log_path FROM gc_runs WHERE log_path IS NOT NULL AND {PRUNED} ORDER BY id"),
                    vals![keep],
                )?
                .iter()
                .map(|r| r.get(0))
                .collect::<Result<Vec<String>, _>>()?;
            // The walk rows go with their run (no reliance on SQLite's
            // foreign_keys pragma or PostgreSQL's cascade alone).
            db.exec(
                &format!("DELETE FROM gc_untagged_walk WHERE run_id IN (SELECT id FROM gc_runs WHERE {PRUNED})"),
                vals![keep],
            )?;
            db.exec(&format!("DELETE FROM gc_runs WHERE {PRUNED}"), vals![keep])?;
            Ok(logs)
        })
    }

    /// The most recent runs, newest first.
    pub fn gc_runs_recent(&self, limit: usize) -> Result<Vec<GcRun>, StateError> {
        self.tx(|db| {
            db.query(
                &format!("SELECT {COLUMNS} FROM gc_runs ORDER BY id DESC LIMIT ?1"),
                vals![limit as i64],
            )?
            .iter()
            .map(from_row)
            .collect()
        })
    }

    pub fn gc_run(&self, id: i64) -> Result<Option<GcRun>, StateError> {
        self.tx(|db| {
            db.query_opt(
                &format!("SELECT {COLUMNS} FROM gc_runs WHERE id = ?1"),
                vals![id],
            )?
            .as_ref()
            .map(from_row)
            .transpose()
        })
    }

    /// Runs recorded as running that this replica answers for (at most one,
    /// unless regate died): its own, and those of dead replicas, which it
    /// takes over here (once: another replica calling this gets none of
    /// them). With shared state, a run of a live replica stays that
    /// replica's and is not listed.
    pub fn gc_runs_running(&self) -> Result<Vec<GcRun>, StateError> {
        self.claim_gc_runs()?;
        let me = self.replica().to_owned();
        self.tx(|db| {
            db.query(
                &format!("SELECT {COLUMNS} FROM gc_runs WHERE status = 'running' AND replica = ?1 ORDER BY id"),
                vals![&me],
            )?
            .iter()
            .map(from_row)
            .collect()
        })
    }

    /// The untagged walk of run `run_id` so far, by repository name.
    pub fn gc_walk(&self, run_id: i64) -> Result<Vec<WalkedRepo>, StateError> {
        self.tx(|db| {
            db.query(
                "SELECT repository, done, deleted, report FROM gc_untagged_walk WHERE run_id = ?1 ORDER BY repository",
                vals![run_id],
            )?
            .iter()
            .map(|r| {
                let report: String = r.get(3)?;
                Ok(WalkedRepo {
                    repository: r.get(0)?,
                    done: r.get(1)?,
                    deleted: r.get(2)?,
                    report: serde_json::from_str(&report).unwrap_or_default(),
                })
            })
            .collect()
        })
    }

    /// Records that the walk of `repository` started (or started again) with
    /// the plan `report`; the deletes counted by an earlier attempt stay. Not
    /// fsync'd: a row lost to a crash only means the repository is planned
    /// again.
    pub fn gc_walk_begin(
        &self,
        run_id: i64,
        repository: &str,
        report: &serde_json::Value,
    ) -> Result<(), StateError> {
        self.relaxed(|db| {
            db.exec(
                "INSERT INTO gc_untagged_walk (run_id, repository, done, deleted, report) VALUES (?1, ?2, 0, 0, ?3) ON CONFLICT(run_id, repository) DO UPDATE SET done = 0, report = excluded.report",
                vals![run_id, repository, report.to_string()],
            )
        })
        .map(|_| ())
    }

    /// Counts one delete the registry accepted in `repository` (not
    /// fsync'd: a count lost to a crash only makes the report low by one).
    pub fn gc_walk_deleted(&self, run_id: i64, repository: &str) -> Result<(), StateError> {
        self.relaxed(|db| {
            db.exec(
                "UPDATE gc_untagged_walk SET deleted = deleted + 1 WHERE run_id = ?1 AND repository = ?2",
                vals![run_id, repository],
            )
        })
        .map(|_| ())
    }

    /// Records `repository` as walked, with its final plan (durably: a
    /// resumed run skips it).
    pub fn gc_walk_finish(
        &self,
        run_id: i64,
        repository: &str,
        report: &serde_json::Value,
    ) -> Result<(), StateError> {
        self.tx(|db| {
            db.exec(
                "INSERT INTO gc_untagged_walk (run_id, repository, done, deleted, report) VALUES (?1, ?2, 1, 0, ?3) ON CONFLICT(run_id, repository) DO UPDATE SET done = 1, report = excluded.report",
                vals![run_id, repository, report.to_string()],
            )
            .map(|_| ())
        })
    }

    pub fn maintenance(&self) -> Result<Option<Maintenance>, StateError> {
        self.tx(|db| {
            db.query_opt("SELECT reason, since_ms FROM maintenance WHERE id = 1", &[])?
                .map(|r| {
                    Ok(Maintenance {
                        reason: r.get(0)?,
                        since_ms: r.get(1)?,
                    })
                })
                .transpose()
        })
    }

    /// Closes (`Some`) or opens (`None`) the gate by hand, durably.
    pub fn set_maintenance(&self, m: Option<&Maintenance>) -> Result<(), StateError> {
        self.tx(|db| {
            match m {
                Some(m) => db.exec(
                    "INSERT INTO maintenance (id, reason, since_ms) VALUES (1, ?1, ?2) ON CONFLICT(id) DO UPDATE SET reason = excluded.reason, since_ms = excluded.since_ms",
                    vals![&m.reason, m.since_ms],
                ),
                None => db.exec("DELETE FROM maintenance", &[]),
            }
            .map(|_| ())
        })
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
                trigger: GcTrigger::Schedule,
                status: if i == 0 {
                    GcStatus::Running
                } else {
                    GcStatus::Succeeded
                },
                phase: GcPhase::Done,
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
            trigger: GcTrigger::Manual,
            status: GcStatus::Running,
            phase: GcPhase::Starting,
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

    #[test]
    fn walk_progress_survives_reopen_and_goes_with_its_run() {
        let dir = tempfile::tempdir().unwrap();
        let s = State::open(dir.path()).unwrap();
        let mut run = GcRun {
            trigger: GcTrigger::Manual,
            status: GcStatus::Running,
            phase: GcPhase::Untagged,
            ..Default::default()
        };
        run.id = s.gc_run_insert(&run).unwrap();
        let plan = serde_json::json!({"repository": "a", "delete": ["x", "y"]});
        s.gc_walk_finish(run.id, "a", &plan).unwrap();
        s.gc_walk_begin(run.id, "b", &plan).unwrap();
        s.gc_walk_deleted(run.id, "b").unwrap();
        drop(s);
        // Opening again runs the migration again: it must be a no-op.
        let s = State::open(dir.path()).unwrap();
        let walk = s.gc_walk(run.id).unwrap();
        assert_eq!(walk.len(), 2);
        assert!(walk[0].done && walk[0].report == plan);
        assert!(!walk[1].done && walk[1].deleted == 1);
        // A second begin (a resumed attempt) keeps the count.
        s.gc_walk_begin(run.id, "b", &plan).unwrap();
        assert_eq!(s.gc_walk(run.id).unwrap()[1].deleted, 1);
        assert_eq!(s.gc_runs_running().unwrap()[0].attempts, 1);
        run.status = GcStatus::Succeeded;
        s.gc_run_save(&run).unwrap();
        let mut next = run.clone();
        next.id = s.gc_run_insert(&next).unwrap();
        s.gc_runs_prune(1).unwrap();
        assert!(s.gc_walk(run.id).unwrap().is_empty());
    }

    /// Every state's text round-trips, is its JSON, and is what the columns hold.
    #[test]
    fn states_round_trip_through_their_text() {
        fn check<T: Copy + PartialEq + std::fmt::Debug + Serialize>(
            all: &[T],
            text: fn(T) -> &'static str,
            parse: fn(&str) -> Option<T>,
        ) {
            for &v in all {
                assert_eq!(parse(text(v)), Some(v), "{v:?}");
                assert_eq!(
                    serde_json::to_string(&v).unwrap(),
                    format!("\"{}\"", text(v))
                );
            }
        }
        check(GcTrigger::ALL, GcTrigger::as_str, GcTrigger::parse);
        check(GcStatus::ALL, GcStatus::as_str, GcStatus::parse);
        check(GcPhase::ALL, GcPhase::as_str, GcPhase::parse);
        let texts = |all: &[&str]| all.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            GcStatus::ALL
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
            texts(&[
                "running",
                "succeeded",
                "failed",
                "interrupted",
                "finished_unobserved"
            ])
        );
        assert_eq!(
            GcPhase::ALL
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
            texts(&["starting", "draining", "untagged", "collecting", "done"])
        );
        assert_eq!(
            GcTrigger::ALL
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
            texts(&["manual", "schedule"])
        );
        let json = serde_json::to_value(GcRun {
            status: GcStatus::FinishedUnobserved,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(json["status"], "finished_unobserved");
        assert_eq!(json["phase"], "starting");
        assert_eq!(json["trigger"], "manual");
    }

    /// A text this regate does not know, read from the database, is an
    /// error naming the table, the column and the text.
    #[test]
    fn an_unknown_state_text_is_refused() {
        assert_eq!(GcStatus::parse("Running"), None);
        assert_eq!(GcPhase::parse(""), None);
        let dir = tempfile::tempdir().unwrap();
        let s = State::open(dir.path()).unwrap();
        let id = s
            .gc_run_insert(&GcRun {
                phase: GcPhase::Draining,
                ..Default::default()
            })
            .unwrap();
        s.tx(|db| {
            db.exec(
                "UPDATE gc_runs SET phase = 'sweeping' WHERE id = ?1",
                vals![id],
            )
        })
        .unwrap();
        let err = s.gc_run(id).unwrap_err();
        assert!(
            matches!(
                &err,
                StateError::UnknownText { table: "gc_runs", column: "phase", found } if found == "sweeping"
            ),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains("gc_runs") && text.contains("phase") && text.contains("sweeping"),
            "{text}"
        );
    }
}
