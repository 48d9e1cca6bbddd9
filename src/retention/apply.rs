//! Carrying out a plan: every deletion is a true tag delete through the
//! batch path of [`TagDeleter`] (journalled, verified, recorded for
//! `regate tags restore`), a batch per repository, each tag only while it
//! still points at the digest of the plan. What the tag delete refuses (a
//! tag protected or pushed again meanwhile, one already gone) is a failed
//! row, never a wider delete.

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

/// Repositories deleted from at once (each a batch of its own).
const REPOS_AT_ONCE: usize = 4;

/// Deletes `deletes`; one outcome each, grouped by repository (in the order
/// the repositories finish). `done` is told of each batch's outcomes as they
/// come.
pub async fn apply(
    tags: &Arc<TagDeleter>,
    deletes: &[Delete],
    account: &str,
    mut done: impl FnMut(&[Outcome]),
) -> Vec<Outcome> {
    let mut by_repo: BTreeMap<String, Vec<Delete>> = BTreeMap::new();
    for d in deletes {
        by_repo
            .entry(d.repository.clone())
            .or_default()
            .push(d.clone());
    }
    let mut batches = Vec::new();
    for (repo, planned) in by_repo {
        for chunk in planned.chunks(MAX_BATCH) {
            batches.push((repo.clone(), chunk.to_vec()));
        }
    }
    let mut out = Vec::with_capacity(deletes.len());
    let mut running = tokio::task::JoinSet::new();
    let mut in_flight = std::collections::HashMap::new();
    let mut pending = batches.into_iter();
    loop {
        while running.len() < REPOS_AT_ONCE {
            let Some((repo, planned)) = pending.next() else {
                break;
            };
            let (tags, account, mine) = (Arc::clone(tags), account.to_owned(), planned.clone());
            let id = running
                .spawn(async move { delete_chunk(&tags, &repo, &mine, &account).await })
                .id();
            in_flight.insert(id, planned);
        }
        let Some(joined) = running.join_next_with_id().await else {
            break;
        };
        let results = match joined {
            Ok((id, results)) => {
                in_flight.remove(&id);
                results
            }
            Err(e) => {
                // The tag delete runs its batch as a task of its own: this
                // one only waits, and fails only by a panic.
                tracing::error!(error = %e, "a retention batch stopped unexpectedly");
                let msg = format!("the batch stopped unexpectedly: {e}");
                in_flight
                    .remove(&e.id())
                    .unwrap_or_default()
                    .into_iter()
                    .map(|d| Outcome {
                        repository: d.repository,
                        tag: d.tag,
                        digest: d.digest,
                        status: "failed",
                        http_status: 500,
                        error: Some(msg.clone()),
                    })
                    .collect()
            }
        };
        done(&results);
        out.extend(results);
    }
    out
}

async fn delete_chunk(
    tags: &Arc<TagDeleter>,
    repo: &str,
    planned: &[Delete],
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
        .delete_many_expecting(
            &name,
            &names,
            account,
            Some(
                planned
                    .iter()
                    .map(|d| (d.tag.clone(), d.digest.clone()))
                    .collect(),
            ),
        )
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
