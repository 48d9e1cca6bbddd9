//! The facts a plan needs: every tag of a repository, its digest, when it
//! was pushed and how that is known, and its last pull.
//!
//! Push dates, most reliable first: regate's record of the manifest PUT by
//! tag, when the tag still points at the digest recorded (a push straight to
//! the registry moves it without regate seeing it); the modification time of
//! the tag's `current/link` in the registry's storage (the registry rewrites
//! it on every PUT of the tag); the `created` of the image's config (an
//! index: its newest child's), which is when the image was built, not pushed.
//! With the storage readable, tags and digests come from it (no registry
//! call per tag); otherwise from the registry's API.

use std::path::{Path, PathBuf};

use futures_util::future::join_all;

use super::plan::{DateSource, RepoFacts, TagFacts};
use crate::registry_api::{ApiError, RegistryApi};
use crate::state::{blocking, State, StateError};

/// Registry calls in flight at once while gathering, per repository.
const PARALLEL: usize = 8;
/// Repositories gathered at once.
const REPOS_AT_ONCE: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum GatherError {
    #[error("{0}")]
    Api(#[from] ApiError),
    #[error("{0}")]
    State(#[from] StateError),
    #[error("reading the registry's storage at {path}: {source}")]
    Storage {
        path: String,
        source: std::io::Error,
    },
}

/// Where the facts come from.
#[derive(Clone)]
pub struct Sources {
    pub api: RegistryApi,
    pub state: State,
    /// The registry's storage root (managed mode, or `gc.storage_root`).
    pub storage_root: Option<PathBuf>,
}

/// A tag as the storage holds it: digest and the link's mtime.
type Stored = Vec<(String, String, Option<i64>)>;

fn tags_dir(root: &Path, repo: &str) -> PathBuf {
    crate::storage_layout::tags_dir(&crate::storage_layout::repository(root, repo))
}

/// Every tag of `repo` in the storage; `None` when the storage has no such
/// repository (then the API is asked).
fn stored_tags(root: &Path, repo: &str) -> Result<Option<Stored>, GatherError> {
    let dir = tags_dir(root, repo);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(GatherError::Storage {
                path: dir.display().to_string(),
                source,
            })
        }
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let link = crate::storage_layout::current_link(&e.path());
        // A deleted tag may leave its folder without the link.
        let Ok(digest) = std::fs::read_to_string(&link) else {
            continue;
        };
        let mtime = std::fs::metadata(&link)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs() as i64);
        out.push((
            e.file_name().to_string_lossy().into_owned(),
            digest.trim().to_owned(),
            mtime,
        ));
    }
    Ok(Some(out))
}

impl Sources {
    /// The facts of every repository of `repos`, in that order
    /// ([`REPOS_AT_ONCE`] at a time).
    pub async fn gather(&self, repos: &[String]) -> Result<Vec<RepoFacts>, GatherError> {
        let mut out = Vec::with_capacity(repos.len());
        for chunk in repos.chunks(REPOS_AT_ONCE) {
            for facts in join_all(chunk.iter().map(|r| self.repo(r))).await {
                out.push(facts?);
            }
        }
        Ok(out)
    }

    async fn repo(&self, repo: &str) -> Result<RepoFacts, GatherError> {
        let stored = match &self.storage_root {
            Some(root) => {
                let (root, r) = (root.clone(), repo.to_owned());
                tokio::task::spawn_blocking(move || stored_tags(&root, &r))
                    .await
                    .map_err(|e| GatherError::Storage {
                        path: "(task)".into(),
                        source: std::io::Error::other(e.to_string()),
                    })??
            }
            None => None,
        };
        let current: Stored = match stored {
            Some(s) => s,
            None => self.api_tags(repo).await?,
        };
        let (state, r) = (self.state.clone(), repo.to_owned());
        let known = blocking(move || state.tag_times(&r)).await?;
        let mut tags = Vec::with_capacity(current.len());
        let mut undated = Vec::new();
        for (tag, digest, mtime) in current {
            let times = known.get(&tag).cloned().unwrap_or_default();
            let pushed = match (&times.pushed, mtime) {
                (Some((d, at)), _) if *d == digest => Some((*at, DateSource::Regate)),
                (_, Some(m)) => Some((m, DateSource::Storage)),
                _ => None,
            };
            if pushed.is_none() {
                undated.push(tags.len());
            }
            tags.push(TagFacts {
                tag,
                digest,
                pushed,
                last_pull: times.pulled_at,
            });
        }
        // The image's own date, for what neither regate nor the storage
        // dates: once per digest (tags often share one).
        let mut digests: Vec<String> = undated.iter().map(|&i| tags[i].digest.clone()).collect();
        digests.sort_unstable();
        digests.dedup();
        let mut created = std::collections::HashMap::new();
        for chunk in digests.chunks(PARALLEL) {
            let found = join_all(chunk.iter().map(|d| self.created(repo, d))).await;
            for (d, c) in chunk.iter().zip(found) {
                created.insert(d.clone(), c?);
            }
        }
        for i in undated {
            tags[i].pushed = created
                .get(&tags[i].digest)
                .copied()
                .flatten()
                .map(|c| (c, DateSource::ImageCreated));
        }
        tags.sort_by(|a, b| a.tag.cmp(&b.tag));
        Ok(RepoFacts {
            repository: repo.to_owned(),
            tags,
        })
    }

    /// Tags and digests through the API (no link dates).
    async fn api_tags(&self, repo: &str) -> Result<Stored, GatherError> {
        let names = match self.api.tags(repo).await? {
            Ok(t) => t,
            Err((http::StatusCode::NOT_FOUND, _)) => Vec::new(),
            Err((status, body)) => {
                return Err(ApiError::Status {
                    what: format!("GET tags/list of {repo}"),
                    status,
                    body: String::from_utf8_lossy(&body).into_owned(),
                }
                .into())
            }
        };
        let mut out = Vec::with_capacity(names.len());
        for chunk in names.chunks(PARALLEL) {
            let found = join_all(chunk.iter().map(|t| self.api.resolve(repo, t))).await;
            for (t, d) in chunk.iter().zip(found) {
                // Gone meanwhile: nothing to plan for it.
                if let Some(d) = d? {
                    out.push((t.clone(), d, None));
                }
            }
        }
        Ok(out)
    }

    /// The `created` of the image `digest` (of an index: its newest child's).
    async fn created(&self, repo: &str, digest: &str) -> Result<Option<i64>, GatherError> {
        let Some(m) = self.api.manifest(repo, digest).await? else {
            return Ok(None);
        };
        let v: serde_json::Value = serde_json::from_slice(&m.bytes).unwrap_or_default();
        if let Some(children) = v["manifests"].as_array() {
            let mut newest = None;
            for c in children.iter().filter_map(|c| c["digest"].as_str()) {
                newest = newest.max(Box::pin(self.created_of_image(repo, c)).await?);
            }
            return Ok(newest);
        }
        Ok(config_created(&self.api, repo, &v).await?)
    }

    async fn created_of_image(&self, repo: &str, digest: &str) -> Result<Option<i64>, GatherError> {
        let Some(m) = self.api.manifest(repo, digest).await? else {
            return Ok(None);
        };
        let v: serde_json::Value = serde_json::from_slice(&m.bytes).unwrap_or_default();
        Ok(config_created(&self.api, repo, &v).await?)
    }
}

/// The `created` of the config an image manifest names.
async fn config_created(
    api: &RegistryApi,
    repo: &str,
    manifest: &serde_json::Value,
) -> Result<Option<i64>, ApiError> {
    let Some(config) = manifest["config"]["digest"].as_str() else {
        return Ok(None);
    };
    let Some(bytes) = api.blob(repo, config).await? else {
        return Ok(None);
    };
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    Ok(v["created"].as_str().and_then(parse_created))
}

/// An RFC 3339 time (`2024-01-02T03:04:05.123456789Z`) as epoch seconds.
pub fn parse_created(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp())
        .filter(|t| *t > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_times_parse() {
        assert_eq!(parse_created("1970-01-02T00:00:00Z"), Some(86400));
        assert_eq!(
            parse_created("2024-01-02T03:04:05.123456789+01:00"),
            Some(1704161045)
        );
        assert_eq!(
            parse_created("0001-01-01T00:00:00Z"),
            None,
            "Go's zero time"
        );
        assert_eq!(parse_created("yesterday"), None);
    }

    #[test]
    fn stored_tags_read_links_and_their_times() {
        let dir = tempfile::tempdir().unwrap();
        let t = tags_dir(dir.path(), "a/b");
        std::fs::create_dir_all(t.join("x/current")).unwrap();
        std::fs::write(t.join("x/current/link"), "sha256:1").unwrap();
        std::fs::create_dir_all(t.join("gone/current")).unwrap();
        let got = stored_tags(dir.path(), "a/b").unwrap().unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].0.as_str(), got[0].1.as_str()), ("x", "sha256:1"));
        assert!(got[0].2.is_some());
        assert!(stored_tags(dir.path(), "c").unwrap().is_none());
    }
}
