//! Dummy configs regate put into repositories that no open tag-delete
//! journal entry answers for (see `tag_delete::staged`): configs staged
//! ahead of a delete, and configs of finished deletes still to be unlinked.
//! Each must be unlinked unless a delete takes it: a row leaves this table
//! when a journal entry takes the config over, or once the blob is unlinked;
//! rows left at start-up are unlinked then.

use super::sql::{vals, Db};
use super::{State, StateError};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS dummy_configs (
    digest TEXT PRIMARY KEY,
    repository TEXT NOT NULL,
    noted_at INTEGER NOT NULL
);
";

/// Drops the row of a config a journal entry now answers for.
pub(super) fn forget_in(db: &mut dyn Db, digest: &str) -> Result<(), StateError> {
    db.exec("DELETE FROM dummy_configs WHERE digest = ?1", vals![digest])
        .map(|_| ())
}

impl State {
    /// Notes a config regate must unlink from `repository` unless a delete
    /// takes it, owned by this replica. Not fsync'd: a lost row only leaves
    /// an unreferenced blob for the next GC.
    pub fn note_dummy_config(&self, repository: &str, digest: &str) -> Result<(), StateError> {
        let now = super::now();
        let owner = self.replica().to_owned();
        self.relaxed(|db| {
            db.exec(
                "INSERT INTO dummy_configs (digest, repository, noted_at, owner) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(digest) DO UPDATE SET repository = excluded.repository, noted_at = excluded.noted_at, owner = excluded.owner",
                vals![digest, repository, now, &owner],
            )
            .map(|_| ())
        })
    }

    /// Every noted config, of every replica: `(repository, digest)`.
    pub fn dummy_configs(&self) -> Result<Vec<(String, String)>, StateError> {
        self.tx(|db| {
            db.query(
                "SELECT repository, digest FROM dummy_configs ORDER BY noted_at, digest",
                &[],
            )?
            .iter()
            .map(|r| Ok((r.get(0)?, r.get(1)?)))
            .collect()
        })
    }

    /// Forgets a config (its blob was unlinked).
    pub fn forget_dummy_config(&self, digest: &str) -> Result<(), StateError> {
        self.relaxed(|db| forget_in(db, digest))
    }
}

#[cfg(test)]
mod tests {
    use crate::state::{JournalEntry, JournalStep, State};

    #[test]
    fn a_noted_config_is_listed_until_a_journal_entry_takes_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = State::open(dir.path()).unwrap();
        s.note_dummy_config("a/b", "sha256:c1").unwrap();
        s.note_dummy_config("a/c", "sha256:c2").unwrap();
        assert_eq!(s.dummy_configs().unwrap().len(), 2);
        let e = JournalEntry {
            id: 0,
            repository: "a/b".into(),
            tag: "t".into(),
            original_digest: "sha256:o".into(),
            original_media_type: "m".into(),
            dummy_digest: "sha256:d".into(),
            dummy_config_digest: "sha256:c1".into(),
            step: JournalStep::Intent,
            account: "x".into(),
        };
        s.journal_begin(&e).unwrap();
        assert_eq!(
            s.dummy_configs().unwrap(),
            vec![("a/c".to_owned(), "sha256:c2".to_owned())]
        );
        s.forget_dummy_config("sha256:c2").unwrap();
        drop(s);
        let s = State::open(dir.path()).unwrap();
        assert!(s.dummy_configs().unwrap().is_empty());
    }
}
