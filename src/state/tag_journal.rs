//! Tables of the tag delete: the journal of deletes in progress (so a crash
//! at any step is finished or rolled back at the next start) and the history
//! of removed tags (so a removal can be undone until GC takes the manifest).

use super::sql::{text_enum, vals, Db, Row};
use super::{now, State, StateError};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tag_delete_journal (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    repository TEXT NOT NULL,
    tag TEXT NOT NULL,
    original_digest TEXT NOT NULL,
    original_media_type TEXT NOT NULL,
    dummy_digest TEXT NOT NULL,
    dummy_config_digest TEXT NOT NULL,
    step TEXT NOT NULL,
    account TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    open INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS tag_delete_journal_open ON tag_delete_journal (open);
CREATE TABLE IF NOT EXISTS tag_deletions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    repository TEXT NOT NULL,
    tag TEXT NOT NULL,
    digest TEXT NOT NULL,
    media_type TEXT NOT NULL,
    manifest BLOB,
    account TEXT NOT NULL,
    deleted_at INTEGER NOT NULL,
    restored_at INTEGER
);
CREATE INDEX IF NOT EXISTS tag_deletions_by_tag ON tag_deletions (repository, tag);
";

text_enum! {
    /// Where a delete stands in the journal.
    pub enum JournalStep in "tag_delete_journal"."step" {
        /// Written before anything is changed upstream (the entry is open).
        Intent = "intent",
        /// The tag is gone (the entry is closed).
        Removed = "removed",
        /// The tag points at its original manifest again (the entry is closed).
        RolledBack = "rolled_back",
        /// Recovery found the tag at another manifest than both (closed).
        Superseded = "superseded",
        /// The registry had no such tag (closed).
        NotFound = "not_found",
        /// The registry refuses deletes (closed).
        Refused = "refused",
    }
}

/// One delete in progress, as written before anything is changed upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    pub id: i64,
    pub repository: String,
    pub tag: String,
    pub original_digest: String,
    pub original_media_type: String,
    pub dummy_digest: String,
    pub dummy_config_digest: String,
    pub step: JournalStep,
    pub account: String,
}

/// A tag removal, for undo.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Deletion {
    pub id: i64,
    pub repository: String,
    pub tag: String,
    pub digest: String,
    pub media_type: String,
    #[serde(skip)]
    pub manifest: Option<Vec<u8>>,
    pub account: String,
    pub deleted_at: i64,
    pub restored_at: Option<i64>,
}

pub(super) fn entry(r: &Row) -> Result<JournalEntry, StateError> {
    Ok(JournalEntry {
        id: r.get(0)?,
        repository: r.get(1)?,
        tag: r.get(2)?,
        original_digest: r.get(3)?,
        original_media_type: r.get(4)?,
        dummy_digest: r.get(5)?,
        dummy_config_digest: r.get(6)?,
        step: JournalStep::from_column(r.get(7)?)?,
        account: r.get(8)?,
    })
}

fn deletion(r: &Row) -> Result<Deletion, StateError> {
    Ok(Deletion {
        id: r.get(0)?,
        repository: r.get(1)?,
        tag: r.get(2)?,
        digest: r.get(3)?,
        media_type: r.get(4)?,
        manifest: r.get(5)?,
        account: r.get(6)?,
        deleted_at: r.get(7)?,
        restored_at: r.get(8)?,
    })
}

pub(super) const ENTRY_COLUMNS: &str =
    "id, repository, tag, original_digest, original_media_type, dummy_digest, dummy_config_digest, step, account";
const DELETION_COLUMNS: &str =
    "id, repository, tag, digest, media_type, manifest, account, deleted_at, restored_at";

const CLOSE: &str =
    "UPDATE tag_delete_journal SET step = ?2, open = 0, updated_at = ?3 WHERE id = ?1";

/// The id a `... RETURNING id` statement gave.
fn returned_id(
    db: &mut dyn Db,
    sql: &str,
    params: &[super::sql::Value],
) -> Result<i64, StateError> {
    match db.query_opt(sql, params)? {
        Some(r) => r.get(0),
        None => Err(StateError::Decode {
            column: 0,
            found: "no row".into(),
            wanted: "id",
        }),
    }
}

impl State {
    /// Records the intent of a delete; durable when this returns.
    pub fn journal_begin(&self, e: &JournalEntry) -> Result<i64, StateError> {
        Ok(self.journal_begin_many(std::slice::from_ref(e))?[0])
    }

    /// Opens several entries in one transaction (one fsync), owned by this
    /// replica; returns their ids in the same order. A noted dummy config an
    /// entry uses is forgotten in the same transaction (the entry now
    /// answers for it).
    pub fn journal_begin_many(&self, entries: &[JournalEntry]) -> Result<Vec<i64>, StateError> {
        let owner = self.replica().to_owned();
        self.tx(|db| {
            let mut ids = Vec::with_capacity(entries.len());
            for e in entries {
                ids.push(returned_id(
                    db,
                    "INSERT INTO tag_delete_journal (repository, tag, original_digest, original_media_type, dummy_digest, dummy_config_digest, step, account, started_at, updated_at, owner)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?10) RETURNING id",
                    vals![&e.repository, &e.tag, &e.original_digest, &e.original_media_type, &e.dummy_digest, &e.dummy_config_digest, e.step, &e.account, now(), &owner],
                )?);
                super::dummy_configs::forget_in(db, &e.dummy_config_digest)?;
            }
            Ok(ids)
        })
    }

    /// Closes a journal entry with its final step.
    pub fn journal_close(&self, id: i64, step: JournalStep) -> Result<(), StateError> {
        self.journal_close_many(&[id], step)
    }

    /// Closes several entries with the same final step, in one transaction.
    pub fn journal_close_many(&self, ids: &[i64], step: JournalStep) -> Result<(), StateError> {
        self.tx(|db| {
            for id in ids {
                db.exec(CLOSE, vals![*id, step, now()])?;
            }
            Ok(())
        })
    }

    /// Every open entry, of every replica.
    pub fn journal_open_entries(&self) -> Result<Vec<JournalEntry>, StateError> {
        self.tx(|db| {
            db.query(
                &format!(
                    "SELECT {ENTRY_COLUMNS} FROM tag_delete_journal WHERE open = 1 ORDER BY id"
                ),
                &[],
            )?
            .iter()
            .map(entry)
            .collect()
        })
    }

    /// Records removals, closing the journal entry of each, in one
    /// transaction that does not wait for an fsync (recovery redoes it).
    pub fn record_deletions(&self, done: &[(Deletion, i64)]) -> Result<(), StateError> {
        let rows: Vec<(&Deletion, Option<i64>)> = done.iter().map(|(d, j)| (d, Some(*j))).collect();
        self.insert_deletions(&rows).map(|_| ())
    }

    /// Records a removal and, in the same transaction, closes the journal
    /// entry that made it, if any (then without waiting for an fsync).
    pub fn record_deletion(
        &self,
        d: &Deletion,
        close_journal: Option<i64>,
    ) -> Result<i64, StateError> {
        Ok(self.insert_deletions(&[(d, close_journal)])?[0])
    }

    /// History rows (each closing its journal entry, if any) in one
    /// transaction. Closing journal entries need not wait for the disk: if
    /// the commit is lost, the entries are still open (their intent was
    /// synced), and recovery finds the tags removed and writes these records
    /// again. So when every row closes an entry, the commit is not fsync'd.
    fn insert_deletions(&self, rows: &[(&Deletion, Option<i64>)]) -> Result<Vec<i64>, StateError> {
        let insert = |db: &mut dyn Db| {
            rows.iter()
                .map(|(d, j)| Self::insert_deletion_in(db, d, *j))
                .collect::<Result<Vec<i64>, StateError>>()
        };
        if rows.iter().all(|(_, j)| j.is_some()) {
            self.relaxed(insert)
        } else {
            self.tx(insert)
        }
    }

    /// One history row, and its journal entry closed, inside `db`'s transaction.
    fn insert_deletion_in(
        db: &mut dyn Db,
        d: &Deletion,
        close_journal: Option<i64>,
    ) -> Result<i64, StateError> {
        let id = returned_id(
            db,
            "INSERT INTO tag_deletions (repository, tag, digest, media_type, manifest, account, deleted_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) RETURNING id",
            vals![&d.repository, &d.tag, &d.digest, &d.media_type, &d.manifest, &d.account, now()],
        )?;
        if let Some(j) = close_journal {
            db.exec(CLOSE, vals![j, JournalStep::Removed, now()])?;
        }
        Ok(id)
    }

    /// The most recent removal of `repository:tag` not yet restored.
    pub fn last_deletion(
        &self,
        repository: &str,
        tag: &str,
    ) -> Result<Option<Deletion>, StateError> {
        self.tx(|db| {
            db.query_opt(
                &format!("SELECT {DELETION_COLUMNS} FROM tag_deletions WHERE repository = ?1 AND tag = ?2 AND restored_at IS NULL ORDER BY id DESC LIMIT 1"),
                vals![repository, tag],
            )?
            .as_ref()
            .map(deletion)
            .transpose()
        })
    }

    /// Removals, newest first, optionally for one repository.
    pub fn deletions(
        &self,
        repository: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Deletion>, StateError> {
        self.tx(|db| {
            db.query(
                &format!("SELECT {DELETION_COLUMNS} FROM tag_deletions WHERE (CAST(?1 AS TEXT) IS NULL OR repository = ?1) ORDER BY id DESC LIMIT ?2"),
                vals![repository, i64::from(limit)],
            )?
            .iter()
            .map(deletion)
            .collect()
        })
    }

    pub fn mark_restored(&self, id: i64) -> Result<(), StateError> {
        self.tx(|db| {
            db.exec(
                "UPDATE tag_deletions SET restored_at = ?2 WHERE id = ?1",
                vals![id, now()],
            )
            .map(|_| ())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_entries_stay_open_until_closed() {
        let dir = tempfile::tempdir().unwrap();
        let s = State::open(dir.path()).unwrap();
        let mut e = JournalEntry {
            id: 0,
            repository: "a/b".into(),
            tag: "t".into(),
            original_digest: "sha256:1".into(),
            original_media_type: "m".into(),
            dummy_digest: "sha256:2".into(),
            dummy_config_digest: "sha256:3".into(),
            step: JournalStep::Intent,
            account: "-".into(),
        };
        e.id = s.journal_begin(&e).unwrap();
        drop(s);
        let s = State::open(dir.path()).unwrap();
        let open = s.journal_open_entries().unwrap();
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].step, JournalStep::Intent);
        s.journal_close(e.id, JournalStep::Removed).unwrap();
        assert!(s.journal_open_entries().unwrap().is_empty());
    }

    #[test]
    fn last_deletion_skips_restored_ones() {
        let dir = tempfile::tempdir().unwrap();
        let s = State::open(dir.path()).unwrap();
        let d = Deletion {
            id: 0,
            repository: "r".into(),
            tag: "t".into(),
            digest: "sha256:1".into(),
            media_type: "m".into(),
            manifest: Some(b"{}".to_vec()),
            account: "alice".into(),
            deleted_at: 0,
            restored_at: None,
        };
        let id = s.record_deletion(&d, None).unwrap();
        assert_eq!(
            s.last_deletion("r", "t")
                .unwrap()
                .unwrap()
                .manifest
                .as_deref(),
            Some(&b"{}"[..])
        );
        s.mark_restored(id).unwrap();
        assert!(s.last_deletion("r", "t").unwrap().is_none());
        assert_eq!(s.deletions(Some("r"), 10).unwrap().len(), 1);
    }

    #[test]
    fn journal_steps_round_trip_through_their_text() {
        let texts: Vec<&str> = JournalStep::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            texts,
            [
                "intent",
                "removed",
                "rolled_back",
                "superseded",
                "not_found",
                "refused"
            ]
        );
        for &step in JournalStep::ALL {
            assert_eq!(JournalStep::parse(step.as_str()), Some(step));
        }
    }

    /// A step this regate does not know, read from the database, is an
    /// error naming the table, the column and the text.
    #[test]
    fn an_unknown_journal_step_is_refused() {
        assert_eq!(JournalStep::parse("rolled-back"), None);
        let dir = tempfile::tempdir().unwrap();
        let s = State::open(dir.path()).unwrap();
        let e = JournalEntry {
            id: 0,
            repository: "a/b".into(),
            tag: "t".into(),
            original_digest: "sha256:1".into(),
            original_media_type: "m".into(),
            dummy_digest: "sha256:2".into(),
            dummy_config_digest: "sha256:3".into(),
            step: JournalStep::Intent,
            account: "-".into(),
        };
        let id = s.journal_begin(&e).unwrap();
        s.tx(|db| {
            db.exec(
                "UPDATE tag_delete_journal SET step = 'halfway' WHERE id = ?1",
                vals![id],
            )
        })
        .unwrap();
        let err = s.journal_open_entries().unwrap_err();
        assert!(
            matches!(
                &err,
                StateError::UnknownText { table: "tag_delete_journal", column: "step", found } if found == "halfway"
            ),
            "{err:?}"
        );
    }
}
