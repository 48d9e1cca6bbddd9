//! Tables of retention: when regate saw each tag pushed (manifest PUT by tag)
//! and last pulled (manifest GET/HEAD by tag, written in batches), and the
//! history of retention runs. Plain SQL (INTEGER and TEXT, upserts with
//! `ON CONFLICT ... DO UPDATE`), so it ports to another engine as it is.

use std::collections::HashMap;

use super::sql::{vals, Db};
use super::{State, StateError};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tag_pushes (
    repository TEXT NOT NULL,
    tag TEXT NOT NULL,
    digest TEXT NOT NULL,
    pushed_at INTEGER NOT NULL,
    PRIMARY KEY (repository, tag)
);
CREATE TABLE IF NOT EXISTS tag_pulls (
    repository TEXT NOT NULL,
    tag TEXT NOT NULL,
    pulled_at INTEGER NOT NULL,
    PRIMARY KEY (repository, tag)
);
CREATE TABLE IF NOT EXISTS retention_runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at INTEGER NOT NULL,
    finished_at INTEGER NOT NULL,
    dry_run INTEGER NOT NULL,
    forced INTEGER NOT NULL,
    account TEXT NOT NULL,
    planned INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    failed INTEGER NOT NULL,
    skipped INTEGER NOT NULL,
    summary TEXT NOT NULL
);
";

/// What regate knows of one tag's times.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagTimes {
    /// The digest pushed and when (seconds since the epoch).
    pub pushed: Option<(String, i64)>,
    pub pulled_at: Option<i64>,
}

/// One retention run, as the history keeps it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RetentionRun {
    pub id: i64,
    pub started_at: i64,
    pub finished_at: i64,
    pub dry_run: bool,
    pub forced: bool,
    pub account: String,
    pub planned: i64,
    pub deleted: i64,
    pub failed: i64,
    pub skipped: i64,
    /// JSON: the repositories touched, skipped ones and warnings.
    pub summary: serde_json::Value,
}

impl State {
    /// Records manifest PUTs by tag (repository, tag, digest, time) in one
    /// transaction. Relaxed: a push time lost in a crash falls back to the
    /// storage's date.
    pub fn record_pushes(
        &self,
        pushes: &[(String, String, String, i64)],
    ) -> Result<(), StateError> {
        self.relaxed(|db| {
            for (r, t, d, at) in pushes {
                db.exec(
                    "INSERT INTO tag_pushes (repository, tag, digest, pushed_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (repository, tag) DO UPDATE SET digest = excluded.digest, pushed_at = excluded.pushed_at",
                    vals![r, t, d, *at],
                )?;
            }
            Ok(())
        })
    }

    /// Records last pulls (repository, tag, time) in one transaction, keeping
    /// the later time of each tag. Relaxed: a lost pull time loses little.
    pub fn record_pulls(&self, pulls: &[(String, String, i64)]) -> Result<(), StateError> {
        self.relaxed(|db| {
            for (r, t, at) in pulls {
                db.exec(
                    "INSERT INTO tag_pulls (repository, tag, pulled_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (repository, tag) DO UPDATE SET pulled_at = excluded.pulled_at
                     WHERE excluded.pulled_at > tag_pulls.pulled_at",
                    vals![r, t, *at],
                )?;
            }
            Ok(())
        })
    }

    /// Push and pull times of every tag of `repository` regate knows.
    pub fn tag_times(&self, repository: &str) -> Result<HashMap<String, TagTimes>, StateError> {
        self.tx(|db: &mut dyn Db| {
            let mut out: HashMap<String, TagTimes> = HashMap::new();
            for r in db.query(
                "SELECT tag, digest, pushed_at FROM tag_pushes WHERE repository = ?1",
                vals![repository],
            )? {
                let tag: String = r.get(0)?;
                out.entry(tag).or_default().pushed = Some((r.get(1)?, r.get(2)?));
            }
            for r in db.query(
                "SELECT tag, pulled_at FROM tag_pulls WHERE repository = ?1",
                vals![repository],
            )? {
                let tag: String = r.get(0)?;
                out.entry(tag).or_default().pulled_at = Some(r.get(1)?);
            }
            Ok(out)
        })
    }

    /// Keeps a finished run in the history; its id.
    pub fn retention_run_insert(&self, run: &RetentionRun) -> Result<i64, StateError> {
        let summary = run.summary.to_string();
        self.tx(|db| {
            match db.query_opt(
                "INSERT INTO retention_runs (started_at, finished_at, dry_run, forced, account, planned, deleted, failed, skipped, summary)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) RETURNING id",
                vals![
                    run.started_at,
                    run.finished_at,
                    run.dry_run,
                    run.forced,
                    &run.account,
                    run.planned,
                    run.deleted,
                    run.failed,
                    run.skipped,
                    &summary
                ],
            )? {
                Some(r) => r.get(0),
                None => Err(StateError::Decode {
                    column: 0,
                    found: "no row".into(),
                    wanted: "id",
                }),
            }
        })
    }

    /// The last `limit` runs, newest first.
    pub fn retention_runs(&self, limit: usize) -> Result<Vec<RetentionRun>, StateError> {
        self.tx(|db| {
            db.query(
                "SELECT id, started_at, finished_at, dry_run, forced, account, planned, deleted, failed, skipped, summary FROM retention_runs ORDER BY id DESC LIMIT ?1",
                vals![limit as i64],
            )?
            .iter()
            .map(|r| {
                let summary: String = r.get(10)?;
                Ok(RetentionRun {
                    id: r.get(0)?,
                    started_at: r.get(1)?,
                    finished_at: r.get(2)?,
                    dry_run: r.get(3)?,
                    forced: r.get(4)?,
                    account: r.get(5)?,
                    planned: r.get(6)?,
                    deleted: r.get(7)?,
                    failed: r.get(8)?,
                    skipped: r.get(9)?,
                    summary: serde_json::from_str(&summary).unwrap_or_default(),
                })
            })
            .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushes_pulls_and_runs_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let s = State::open(dir.path()).unwrap();
        s.record_pushes(&[("a".into(), "t1".into(), "sha256:1".into(), 100)])
            .unwrap();
        s.record_pushes(&[("a".into(), "t1".into(), "sha256:2".into(), 200)])
            .unwrap();
        s.record_pushes(&[("b".into(), "t1".into(), "sha256:3".into(), 300)])
            .unwrap();
        s.record_pulls(&[
            ("a".into(), "t1".into(), 500),
            ("a".into(), "t2".into(), 400),
        ])
        .unwrap();
        // An older pull time never replaces a newer one.
        s.record_pulls(&[("a".into(), "t1".into(), 450)]).unwrap();
        let t = s.tag_times("a").unwrap();
        assert_eq!(t["t1"].pushed, Some(("sha256:2".into(), 200)));
        assert_eq!(t["t1"].pulled_at, Some(500));
        assert_eq!(
            t["t2"],
            TagTimes {
                pushed: None,
                pulled_at: Some(400)
            }
        );
        assert_eq!(t.len(), 2);

        let run = RetentionRun {
            id: 0,
            started_at: 10,
            finished_at: 12,
            dry_run: false,
            forced: false,
            account: "ops".into(),
            planned: 3,
            deleted: 2,
            failed: 1,
            skipped: 0,
            summary: serde_json::json!({"repositories": ["a"]}),
        };
        let id = s.retention_run_insert(&run).unwrap();
        let second = s
            .retention_run_insert(&RetentionRun {
                dry_run: true,
                ..run.clone()
            })
            .unwrap();
        let runs = s.retention_runs(10).unwrap();
        assert_eq!(runs.iter().map(|r| r.id).collect::<Vec<_>>(), [second, id]);
        assert_eq!(runs[1], RetentionRun { id, ..run });
    }
}
