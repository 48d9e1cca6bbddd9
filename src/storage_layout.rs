//! Where the registry's filesystem storage driver (distribution 2.8) keeps
//! what regate reads behind its back: the paths under the storage root
//! (`rootdirectory`), and nothing else. Who reads them decides what a
//! missing or odd file means: fast reads, retention's dates, the untagged
//! cleanup and the referrers reindex.
//!
//! ```text
//! <root>/docker/registry/v2/repositories/<name>/_manifests/tags/<tag>/current/link
//! <root>/docker/registry/v2/repositories/<name>/_manifests/revisions/sha256/<hex>/link
//! <root>/docker/registry/v2/repositories/<name>/_layers/sha256/<hex>/link
//! <root>/docker/registry/v2/blobs/sha256/<first two hex>/<hex>/data
//! ```

use std::path::{Path, PathBuf};

/// `<root>/docker/registry/v2`.
pub fn v2(root: &Path) -> PathBuf {
    root.join("docker/registry/v2")
}

/// The folder under which repository names are folder paths.
pub fn repositories(root: &Path) -> PathBuf {
    v2(root).join("repositories")
}

/// Repository `name`'s folder.
pub fn repository(root: &Path, name: &str) -> PathBuf {
    repositories(root).join(name)
}

/// The folder of a repository's tags (one folder each), from its folder.
pub fn tags_dir(repo_dir: &Path) -> PathBuf {
    repo_dir.join("_manifests/tags")
}

/// The folder of a repository's sha256 manifest revisions, from its folder.
pub fn revisions_dir(repo_dir: &Path) -> PathBuf {
    repo_dir.join("_manifests/revisions/sha256")
}

/// The link naming the manifest `tag` points at, from the tags folder.
pub fn tag_link(tags_dir: &Path, tag: &str) -> PathBuf {
    current_link(&tags_dir.join(tag))
}

/// The same link, from the tag's own folder.
pub fn current_link(tag_dir: &Path) -> PathBuf {
    tag_dir.join("current/link")
}

/// The link that makes manifest `hex` (sha256) part of the repository.
pub fn revision_link(repo_dir: &Path, hex: &str) -> PathBuf {
    revisions_dir(repo_dir).join(hex).join("link")
}

/// The link that makes blob `hex` (sha256) part of the repository.
pub fn layer_link(repo_dir: &Path, hex: &str) -> PathBuf {
    repo_dir.join("_layers/sha256").join(hex).join("link")
}

/// The content of blob (or manifest) `hex` (sha256; at least two characters).
pub fn blob_data(root: &Path, hex: &str) -> PathBuf {
    v2(root)
        .join("blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data")
}

/// A folder of the storage that could not be read while walking it.
#[derive(Debug)]
pub struct WalkError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// Every repository under the storage root, as (name, folder), sorted by
/// name. A repository is a folder holding `_manifests`; names nest (`a` and
/// `a/b` can both be repositories). Folders starting with `_` are the
/// registry's own and are not descended into; symbolic links are not
/// followed. A storage without a repositories folder has none.
pub fn repository_dirs(root: &Path) -> Result<Vec<(String, PathBuf)>, WalkError> {
    let base = repositories(root);
    let mut out = Vec::new();
    let mut stack = vec![base.clone()];
    while let Some(dir) = stack.pop() {
        let failed = |source| WalkError {
            path: dir.clone(),
            source,
        };
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(failed(e)),
        };
        for entry in entries {
            let entry = entry.map_err(failed)?;
            if !entry.file_type().map_err(failed)?.is_dir() {
                continue;
            }
            let name = entry.file_name();
            if name == "_manifests" {
                if let Ok(rel) = dir.strip_prefix(&base) {
                    out.push((rel.to_string_lossy().into_owned(), dir.clone()));
                }
            } else if !name.to_string_lossy().starts_with('_') {
                stack.push(entry.path());
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_dirs_finds_nested_repositories_and_skips_registry_folders() {
        let root = tempfile::tempdir().unwrap();
        for repo in ["a", "a/b", "c/d/e"] {
            std::fs::create_dir_all(revisions_dir(&repository(root.path(), repo))).unwrap();
        }
        // The registry's own folders, and a folder that is no repository.
        std::fs::create_dir_all(repository(root.path(), "a/_layers/x/_manifests")).unwrap();
        std::fs::create_dir_all(repository(root.path(), "f/g")).unwrap();
        let names: Vec<String> = repository_dirs(root.path())
            .unwrap()
            .into_iter()
            .map(|(name, dir)| {
                assert_eq!(dir, repository(root.path(), &name));
                name
            })
            .collect();
        assert_eq!(names, ["a", "a/b", "c/d/e"]);
    }

    #[test]
    fn repository_dirs_of_an_empty_storage_is_empty() {
        let root = tempfile::tempdir().unwrap();
        assert!(repository_dirs(root.path()).unwrap().is_empty());
    }
}
