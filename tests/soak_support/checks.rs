//! The end of the soak: every acknowledged tag at its digest and complete,
//! every acknowledged delete gone, every uncertain tag absent or at its
//! pushed digest, `fsck` clean, no dummy manifest left in storage.

use std::path::Path;

use regate::tag_delete::{dummy_evidence, is_dummy_config, DummyEvidence};

use super::ledger::{Ledger, TagState};
use super::workers::{pull, Pull, REPOS};
use crate::common::images::{sha256, ACCEPT_ALL};
use crate::common::storage::{read_blob, revisions};

/// What the tag answers now: None for 404, else the digest of its bytes.
async fn resolve(
    c: &reqwest::Client,
    base: &str,
    repo: &str,
    tag: &str,
) -> Result<Option<String>, String> {
    let r = c
        .get(format!("{base}/v2/{repo}/manifests/{tag}"))
        .header("accept", ACCEPT_ALL)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    match r.status().as_u16() {
        404 => Ok(None),
        200 => Ok(Some(sha256(&r.bytes().await.map_err(|e| e.to_string())?))),
        s => Err(format!("{s}")),
    }
}

/// Checks every tag of the ledger through the API; returns the problems.
pub async fn tags(c: &reqwest::Client, base: &str, ledger: &Ledger) -> Vec<String> {
    let mut problems = Vec::new();
    for (repo, tag, state) in ledger.all() {
        let now = resolve(c, base, &repo, &tag).await;
        match (&state, now) {
            (_, Err(e)) => problems.push(format!("{repo}:{tag} ({state:?}): GET answered {e}")),
            (TagState::Acked(d), Ok(Some(now))) if *d == now => {
                match pull(c, base, &repo, &tag, d).await {
                    Pull::Ok => {}
                    Pull::Retry(e) | Pull::Gone(e) | Pull::Wrong(e) => problems.push(format!(
                        "{repo}:{tag} (acknowledged at {d}) does not pull fully: {e}"
                    )),
                }
            }
            (TagState::Acked(d), Ok(now)) => {
                problems.push(format!("{repo}:{tag} acknowledged at {d}, now {now:?}"))
            }
            (TagState::Deleted(_), Ok(None)) => {}
            (TagState::Deleted(d), Ok(Some(now))) => problems.push(format!(
                "{repo}:{tag} (was {d}) acknowledged deleted, still resolves to {now}"
            )),
            (TagState::Uncertain(d), Ok(now)) if now.is_none() || now.as_ref() == Some(d) => {}
            (TagState::Uncertain(d), Ok(now)) => problems.push(format!(
                "{repo}:{tag} uncertain (pushed as {d}), now {now:?}"
            )),
            (TagState::Deleting(d), _) => {
                problems.push(format!("{repo}:{tag} ({d}) left in Deleting"))
            }
        }
    }
    problems
}

/// Dummy manifests among the stored revisions of the soak repositories.
pub fn dummies_in_storage(storage: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for repo in REPOS {
        for digest in revisions(storage, repo) {
            let Some(bytes) = read_blob(storage, &digest) else {
                continue;
            };
            let dummy = match dummy_evidence(&bytes) {
                DummyEvidence::Dummy => true,
                // The soak pushes no zero-layer image: one whose config is
                // gone is a dummy too.
                DummyEvidence::IfConfigIs(config) => {
                    read_blob(storage, &config).is_none_or(|c| is_dummy_config(&c))
                }
                DummyEvidence::NotDummy => false,
            };
            if dummy {
                found.push(format!("{repo}@{digest}"));
            }
        }
    }
    found
}
