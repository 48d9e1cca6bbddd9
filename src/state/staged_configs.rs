//! Dummy configs uploaded into the registry ahead of the tag deletes that
//! will use them (see `tag_delete::staged`). Each row is a blob regate put
//! into a repository and must unlink if no delete takes it: a row leaves
//! this table when a journal entry takes the config over, or once the blob
//! is unlinked.

use rusqlite::{params, Transaction};

use super::{State, StateError};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS staged_configs (
    digest TEXT PRIMARY KEY,
    repository TEXT NOT NULL,
    staged_at INTEGER NOT NULL
);
";

/// Drops the row of a config a journal entry now answers for.
pub(super) fn unstage_in(tx: &Transaction<'_>, digest: &str) -> rusqlite::Result<()> {
    tx.execute("DELETE FROM staged_configs WHERE digest = ?1", [digest])
        .map(|_| ())
}

impl State {
    /// Notes a config about to be uploaded into `repository`. Not fsync'd: a
    /// lost row only leaves an unreferenced blob for the next GC.
    pub fn stage_config(&self, repository: &str, digest: &str) -> Result<(), StateError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        self.relaxed(|conn| {
            conn.execute(
                "INSERT OR REPLACE INTO staged_configs (digest, repository, staged_at) VALUES (?1, ?2, ?3)",
                params![digest, repository, now],
            )
            .map(|_| ())
        })
    }

    /// Every staged config no delete has taken: `(repository, digest)`.
    pub fn staged_configs(&self) -> Result<Vec<(String, String)>, StateError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT repository, digest FROM staged_configs ORDER BY staged_at")
            .map_err(|e| self.sqlite_err(e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(|e| self.sqlite_err(e))?;
        rows.collect::<Result<_, _>>()
            .map_err(|e| self.sqlite_err(e))
    }

    /// Forgets a staged config (its blob was unlinked).
    pub fn unstage_config(&self, digest: &str) -> Result<(), StateError> {
        self.relaxed(|conn| {
            conn.execute("DELETE FROM staged_configs WHERE digest = ?1", [digest])
                .map(|_| ())
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::state::{JournalEntry, State};

    #[test]
    fn a_staged_config_is_listed_until_a_journal_entry_takes_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = State::open(dir.path()).unwrap();
        s.stage_config("a/b", "sha256:c1").unwrap();
        s.stage_config("a/c", "sha256:c2").unwrap();
        assert_eq!(s.staged_configs().unwrap().len(), 2);
        let e = JournalEntry {
            id: 0,
            repository: "a/b".into(),
            tag: "t".into(),
            original_digest: "sha256:o".into(),
            original_media_type: "m".into(),
            dummy_digest: "sha256:d".into(),
            dummy_config_digest: "sha256:c1".into(),
            step: "intent".into(),
            account: "x".into(),
        };
        s.journal_begin(&e).unwrap();
        assert_eq!(
            s.staged_configs().unwrap(),
            vec![("a/c".to_owned(), "sha256:c2".to_owned())]
        );
        s.unstage_config("sha256:c2").unwrap();
        drop(s);
        let s = State::open(dir.path()).unwrap();
        assert!(s.staged_configs().unwrap().is_empty());
    }
}
