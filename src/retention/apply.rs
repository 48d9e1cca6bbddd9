//! Carrying out a plan: every deletion is a true tag delete through the
//! batch path of [`TagDeleter`] (journalled, verified, recorded for
//! `regate tags restore`), a batch per repository. What the tag delete
//! refuses (a tag protected meanwhile, one already gone) is a failed row,
//! never a wider delete.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use super::plan::Delete;
use crate::error::RegistryError;
use crate::route::{RepoName, Tag};
use crate::tag_delete::{TagDeleter, MAX_BATCH};

/// What became of one planned deletion.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    pub repository: String,
    pub tag: String,
    /// The digest the tag pointed at when deleted (or planned).
    pub digest: String,
    /// `deleted` or `failed`.
    pub status: &'static str,
    /// The HTTP status a client deleting it would have got.
    pub http_status: u16,
    pub error: Option<String>,
}

/// Deletes `deletes`; one outcome each, in the order of `deletes` grouped by
/// repository. `done` is told of each repository's outcomes as they come.
pub async fn apply(
    tags: &Arc<TagDeleter>,
    deletes: &[Delete],
    account: &str,
    mut done: impl FnMut(&[Outcome]),
) -> Vec<Outcome> {
    let mut by_repo: BTreeMap<&str, Vec<&Delete>> = BTreeMap::new();
    for d in deletes {
        by_repo.entry(&d.repository).or_default().push(d);
    }
    let mut out = Vec::with_capacity(deletes.len());
    for (repo, planned) in by_repo {
        for chunk in planned.chunks(MAX_BATCH) {
            let results = delete_chunk(tags, repo, chunk, account).await;
            done(&results);
            out.extend(results);
        }
    }
    out
}

async fn delete_chunk(
    tags: &Arc<TagDeleter>,
    repo: &str,
    planned: &[&Delete],
    account: &str,
) -> Vec<Outcome> {
    let failed = |d: &Delete, status: u16, e: String| Outcome {
        repository: d.repository.clone(),
        tag: d.tag.clone(),
        digest: d.digest.clone(),
        status: "failed",
        http_status: status,
        error: Some(e),
    };
    let Ok(name) = RepoName::parse(repo) else {
        return planned
            .iter()
            .map(|d| failed(d, 400, format!("{repo:?} is not a repository name")))
            .collect();
    };
    let names: Vec<Tag> = planned
        .iter()
        .filter_map(|d| Tag::parse(&d.tag).ok())
        .collect();
    let mut results: BTreeMap<String, _> = tags
        .delete_many(&name, &names, account)
        .await
        .into_iter()
        .collect();
    planned
        .iter()
        .map(|d| match results.remove(&d.tag) {
            Some(Ok(removed)) => Outcome {
                repository: d.repository.clone(),
                tag: d.tag.clone(),
                digest: removed.digest,
                status: "deleted",
                http_status: 202,
                error: None,
            },
            Some(Err(e)) => {
                let e = RegistryError::from(e);
                failed(d, e.status.as_u16(), e.message)
            }
            None => failed(d, 400, format!("{:?} is not a valid tag", d.tag)),
        })
        .collect()
}
