//! Rebuilding the referrers index for content pushed before regate was in
//! front (or after its state was lost): from the registry's storage when
//! regate can read it (every manifest revision, tagged or not), otherwise
//! through the API (catalog, tags, and the children of indexes: referrers
//! pushed by digest only cannot be found that way).

use std::path::Path;

use super::describe;
use crate::registry_api::RegistryApi;
use crate::state::{State, StateError};
use crate::storage_layout;

#[derive(Debug, thiserror::Error)]
pub enum ReindexError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Api(#[from] crate::registry_api::ApiError),
}

/// What a reindex found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReindexStats {
    pub repositories: usize,
    pub manifests: usize,
    pub referrers: usize,
}

/// Rebuilds the whole index from a filesystem storage root (the registry's
/// `rootdirectory`). Entries for manifests no longer stored are dropped.
pub fn from_storage(state: &State, root: &Path) -> Result<ReindexStats, ReindexError> {
    let repos = storage_layout::repository_dirs(root).map_err(|e| ReindexError::Io {
        path: e.path.display().to_string(),
        source: e.source,
    })?;
    let mut stats = ReindexStats {
        repositories: repos.len(),
        ..Default::default()
    };
    let mut found = Vec::new();
    for (name, dir) in &repos {
        let revisions = storage_layout::revisions_dir(dir);
        let Ok(entries) = std::fs::read_dir(&revisions) else {
            continue;
        };
        for entry in entries.flatten() {
            // A deleted revision leaves its folder without a link.
            let Ok(link) = std::fs::read_to_string(entry.path().join("link")) else {
                continue;
            };
            let digest = link.trim();
            let Some(hex) = digest.strip_prefix("sha256:") else {
                continue;
            };
            if hex.len() < 2 {
                continue;
            }
            let data = storage_layout::blob_data(root, hex);
            let Ok(bytes) = std::fs::read(&data) else {
                continue;
            };
            stats.manifests += 1;
            if let Some(r) = describe(name, digest, None, &bytes) {
                found.push(r);
            }
        }
    }
    stats.referrers = found.len();
    state.replace_referrers(&found)?;
    Ok(stats)
}

/// Adds what the API can reach: every tagged manifest and the children of
/// tagged indexes, in every repository of the catalog.
pub async fn from_api(state: &State, api: &RegistryApi) -> Result<ReindexStats, ReindexError> {
    let repos = api.catalog().await?;
    let mut stats = ReindexStats {
        repositories: repos.len(),
        ..Default::default()
    };
    for repo in repos {
        let tags = match api.tags(&repo).await? {
            Ok(t) => t,
            Err(_) => continue,
        };
        let mut queue: Vec<String> = tags;
        let mut seen = std::collections::HashSet::new();
        while let Some(reference) = queue.pop() {
            let Some(m) = api.manifest(&repo, &reference).await? else {
                continue;
            };
            if !seen.insert(m.digest.clone()) {
                continue;
            }
            stats.manifests += 1;
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&m.bytes) {
                for child in v["manifests"].as_array().into_iter().flatten() {
                    if let Some(d) = child["digest"].as_str() {
                        queue.push(d.to_owned());
                    }
                }
            }
            if let Some(r) = describe(&repo, &m.digest, Some(&m.media_type), &m.bytes) {
                let state = state.clone();
                crate::state::blocking(move || state.put_referrer(&r)).await?;
                stats.referrers += 1;
            }
        }
    }
    Ok(stats)
}
