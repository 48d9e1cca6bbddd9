//! The referrers index: for each repository, the manifests whose `subject`
//! names another manifest, with the descriptor fields the OCI referrers API
//! returns.

use super::sql::{vals, Db, Row};
use super::{State, StateError};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS referrers (
    repository TEXT NOT NULL,
    digest TEXT NOT NULL,
    subject TEXT NOT NULL,
    media_type TEXT NOT NULL,
    size INTEGER NOT NULL,
    artifact_type TEXT,
    annotations TEXT,
    PRIMARY KEY (repository, digest)
);
CREATE INDEX IF NOT EXISTS referrers_by_subject ON referrers (repository, subject);
";

/// One referrer, as listed in a referrers index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Referrer {
    pub repository: String,
    pub digest: String,
    pub subject: String,
    pub media_type: String,
    pub size: u64,
    pub artifact_type: Option<String>,
    /// A JSON object, as found in the manifest.
    pub annotations: Option<String>,
}

const UPSERT: &str = "INSERT INTO referrers (repository, digest, subject, media_type, size, artifact_type, annotations)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
     ON CONFLICT(repository, digest) DO UPDATE SET subject = excluded.subject, media_type = excluded.media_type,
       size = excluded.size, artifact_type = excluded.artifact_type, annotations = excluded.annotations";

fn upsert(db: &mut dyn Db, r: &Referrer) -> Result<(), StateError> {
    db.exec(
        UPSERT,
        vals![
            &r.repository,
            &r.digest,
            &r.subject,
            &r.media_type,
            r.size as i64,
            &r.artifact_type,
            &r.annotations
        ],
    )
    .map(|_| ())
}

fn referrer(r: &Row) -> Result<Referrer, StateError> {
    Ok(Referrer {
        repository: r.get(0)?,
        digest: r.get(1)?,
        subject: r.get(2)?,
        media_type: r.get(3)?,
        size: r.get::<i64>(4)? as u64,
        artifact_type: r.get(5)?,
        annotations: r.get(6)?,
    })
}

impl State {
    pub fn put_referrer(&self, r: &Referrer) -> Result<(), StateError> {
        self.tx(|db| upsert(db, r))
    }

    pub fn remove_referrer(&self, repository: &str, digest: &str) -> Result<(), StateError> {
        self.tx(|db| {
            db.exec(
                "DELETE FROM referrers WHERE repository = ?1 AND digest = ?2",
                vals![repository, digest],
            )
            .map(|_| ())
        })
    }

    /// Referrers of `subject` in `repository`, in digest order.
    pub fn referrers_of(
        &self,
        repository: &str,
        subject: &str,
    ) -> Result<Vec<Referrer>, StateError> {
        self.tx(|db| {
            db.query(
                "SELECT repository, digest, subject, media_type, size, artifact_type, annotations FROM referrers
                 WHERE repository = ?1 AND subject = ?2 ORDER BY digest",
                vals![repository, subject],
            )?
            .iter()
            .map(referrer)
            .collect()
        })
    }

    /// Replaces the whole index in one transaction.
    pub fn replace_referrers(&self, all: &[Referrer]) -> Result<(), StateError> {
        self.tx(|db| {
            db.exec("DELETE FROM referrers", &[])?;
            for r in all {
                upsert(db, r)?;
            }
            Ok(())
        })
    }

    pub fn referrer_count(&self) -> Result<u64, StateError> {
        self.tx(
            |db| match db.query_opt("SELECT COUNT(*) FROM referrers", &[])? {
                Some(r) => Ok(r.get::<i64>(0)? as u64),
                None => Ok(0),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_list_remove() {
        let dir = tempfile::tempdir().unwrap();
        let s = State::open(dir.path()).unwrap();
        let r = Referrer {
            repository: "a".into(),
            digest: "sha256:2".into(),
            subject: "sha256:1".into(),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            size: 10,
            artifact_type: Some("application/x-sig".into()),
            annotations: None,
        };
        s.put_referrer(&r).unwrap();
        s.put_referrer(&r).unwrap();
        assert_eq!(s.referrers_of("a", "sha256:1").unwrap(), vec![r]);
        assert!(s.referrers_of("b", "sha256:1").unwrap().is_empty());
        s.remove_referrer("a", "sha256:2").unwrap();
        assert_eq!(s.referrer_count().unwrap(), 0);
    }
}
