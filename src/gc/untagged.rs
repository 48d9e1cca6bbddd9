//! Untagged cleanup that keeps multi-arch images whole (never
//! `garbage-collect --delete-untagged`, which on 2.8 deletes the children of
//! every index: distribution issue 3178).
//!
//! Per repository, from the registry's filesystem layout
//! (`<root>/docker/registry/v2/repositories/<name>/_manifests/...`): the
//! manifests reachable from tags, recursively through indexes and manifest
//! lists, plus manifests whose `subject` is reachable (signatures, SBOMs), to a
//! fixpoint. Every other revision (a `link` file under `revisions/sha256/`;
//! folders without one are already deleted) is unreachable and is deleted
//! by digest through the registry API, while the gate is closed. A manifest
//! that cannot be read is never deleted, and a repository with an unreadable
//! reachable manifest is left alone (its children are unknown).
//!
//! The functions here plan and delete one repository at a time; the run
//! walks them in order and records each as it finishes (`gc::walk`), so a
//! walk cut short by a restart is resumed rather than started over.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::storage_layout;

#[derive(Debug, thiserror::Error)]
pub enum UntaggedError {
    #[error("reading the registry storage at {path}: {source}")]
    Storage {
        path: String,
        source: std::io::Error,
    },
}

/// What cleanup found (and deletes, or would delete) in one repository.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RepoPlan {
    pub repository: String,
    /// The attempt of the run (1, or more after a resume) that walked it.
    pub attempt: i64,
    /// Deletes an earlier attempt of the run made here before it was cut
    /// short (this plan no longer lists them: they are gone).
    pub deleted_earlier: usize,
    /// Milliseconds this repository's plan and deletes took.
    pub walk_ms: i64,
    pub tags: usize,
    pub revisions: usize,
    /// Unreachable manifests, by digest.
    pub delete: Vec<String>,
    /// Manifests kept because they could not be read, and why.
    pub unreadable: Vec<String>,
    /// Set when the whole repository was left alone.
    pub skipped: Option<String>,
    /// Deletes the registry refused (after a real run).
    pub failed: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UntaggedPlan {
    pub repositories: Vec<RepoPlan>,
}

impl UntaggedPlan {
    pub fn to_delete(&self) -> usize {
        self.repositories.iter().map(|r| r.delete.len()).sum()
    }

    pub fn deleted(&self) -> usize {
        self.repositories.iter().map(RepoPlan::deleted).sum()
    }
}

impl RepoPlan {
    /// Manifests deleted here by the run, its earlier attempts included.
    pub fn deleted(&self) -> usize {
        self.deleted_earlier + self.delete.len() - self.failed.len()
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> UntaggedError + '_ {
    move |source| UntaggedError::Storage {
        path: path.display().to_string(),
        source,
    }
}

/// Repository names under the storage root (a folder with `_manifests`), sorted.
pub fn repositories(root: &Path) -> Result<Vec<String>, UntaggedError> {
    let repos = storage_layout::repository_dirs(root).map_err(|e| UntaggedError::Storage {
        path: e.path.display().to_string(),
        source: e.source,
    })?;
    Ok(repos.into_iter().map(|(name, _)| name).collect())
}

fn read_link(path: &Path) -> Option<String> {
    let s = std::fs::read_to_string(path).ok()?;
    let s = s.trim();
    s.starts_with("sha256:").then(|| s.to_owned())
}

/// `sha256:<hex>` of every `link` file under `dir/<hex>/link`.
fn revision_links(dir: &Path) -> Result<Vec<String>, UntaggedError> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io_err(dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io_err(dir))?;
        if let Some(d) = read_link(&entry.path().join("link")) {
            out.push(d);
        }
    }
    Ok(out)
}

/// Digests the repository's tags point at.
fn tag_targets(repo_dir: &Path) -> Result<Vec<String>, UntaggedError> {
    let dir = storage_layout::tags_dir(repo_dir);
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io_err(&dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io_err(&dir))?;
        if let Some(d) = read_link(&storage_layout::current_link(&entry.path())) {
            out.push(d);
        }
    }
    Ok(out)
}

/// The references a manifest makes to other manifests.
#[derive(Debug, Default)]
struct ManifestRefs {
    children: Vec<String>,
    subject: Option<String>,
}

fn read_manifest(root: &Path, digest: &str) -> Result<ManifestRefs, String> {
    let hex = digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64)
        .ok_or("not a sha256 digest")?;
    let path = storage_layout::blob_data(root, hex);
    let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("not JSON: {e}"))?;
    let children = v
        .get("manifests")
        .and_then(|m| m.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|d| d.get("digest")?.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let subject = v
        .get("subject")
        .and_then(|s| s.get("digest"))
        .and_then(|d| d.as_str())
        .map(str::to_owned);
    Ok(ManifestRefs { children, subject })
}

/// Plans one repository.
pub fn plan_repo(root: &Path, name: &str) -> Result<RepoPlan, UntaggedError> {
    let repo_dir = storage_layout::repository(root, name);
    let tags = tag_targets(&repo_dir)?;
    let revisions: BTreeSet<String> = revision_links(&storage_layout::revisions_dir(&repo_dir))?
        .into_iter()
        .collect();
    let mut plan = RepoPlan {
        repository: name.to_owned(),
        tags: tags.len(),
        revisions: revisions.len(),
        ..Default::default()
    };
    let mut refs: HashMap<String, Result<ManifestRefs, String>> = HashMap::new();
    for d in &revisions {
        refs.insert(d.clone(), read_manifest(root, d));
    }

    let mut reachable: HashSet<String> = HashSet::new();
    let mut queue: Vec<String> = tags;
    let mut blind = Vec::new();
    loop {
        while let Some(d) = queue.pop() {
            if !reachable.insert(d.clone()) {
                continue;
            }
            match refs.get(&d) {
                Some(Ok(r)) => queue.extend(r.children.iter().cloned()),
                Some(Err(e)) => blind.push(format!("{d}: {e}")),
                // A tag or child that is not a revision here: nothing to follow.
                None => {}
            }
        }
        // Referrers of reachable manifests are reachable too.
        let more: Vec<String> = refs
            .iter()
            .filter(|(d, _)| !reachable.contains(*d))
            .filter_map(|(d, r)| match r {
                Ok(r) if r.subject.as_ref().is_some_and(|s| reachable.contains(s)) => {
                    Some(d.clone())
                }
                _ => None,
            })
            .collect();
        if more.is_empty() {
            break;
        }
        queue.extend(more);
    }
    if !blind.is_empty() {
        plan.skipped = Some(format!(
            "a reachable manifest could not be read, so its children are unknown: {}",
            blind.join("; ")
        ));
        return Ok(plan);
    }
    for d in revisions {
        if reachable.contains(&d) {
            continue;
        }
        match &refs[&d] {
            Ok(_) => plan.delete.push(d),
            // Its subject is unknown: it may be a signature of a kept image.
            Err(e) => plan.unreadable.push(format!("{d}: {e}")),
        }
    }
    Ok(plan)
}

/// Plans cleanup for every repository under `root`.
pub fn plan(root: &Path) -> Result<UntaggedPlan, UntaggedError> {
    let mut plans = Vec::new();
    for name in repositories(root)? {
        plans.push(plan_repo(root, &name)?);
    }
    Ok(UntaggedPlan {
        repositories: plans,
    })
}

/// Deletes one planned manifest through the registry API (straight to the
/// registry, past the closed gate). A manifest already gone (404) counts as
/// deleted; another answer is the error.
pub async fn delete_one(
    api: &crate::registry_api::RegistryApi,
    repository: &str,
    digest: &str,
) -> Result<(), String> {
    match api.delete_manifest(repository, digest).await {
        Ok(_) => {
            tracing::info!(target: "regate::gc", %repository, %digest, "deleted untagged manifest");
            Ok(())
        }
        Err(e) => Err(format!("{digest}: {e}")),
    }
}

#[cfg(test)]
mod tests;
