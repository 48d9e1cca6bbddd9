//! Reading the registry's filesystem layout, to check what it really holds.

use std::path::Path;

/// Digests of the manifest revisions a repository holds (by `link` file:
/// a deleted revision leaves an empty folder behind).
pub fn revisions(storage: &Path, repo: &str) -> Vec<String> {
    let dir = storage
        .join("docker/registry/v2/repositories")
        .join(repo)
        .join("_manifests/revisions/sha256");
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries.flatten() {
            if let Ok(link) = std::fs::read_to_string(e.path().join("link")) {
                out.push(link.trim().to_owned());
            }
        }
    }
    out.sort();
    out
}

/// Tag -> digest, as stored.
pub fn tags(storage: &Path, repo: &str) -> Vec<(String, String)> {
    let dir = storage
        .join("docker/registry/v2/repositories")
        .join(repo)
        .join("_manifests/tags");
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries.flatten() {
            if let Ok(link) = std::fs::read_to_string(e.path().join("current/link")) {
                out.push((
                    e.file_name().to_string_lossy().into_owned(),
                    link.trim().to_owned(),
                ));
            }
        }
    }
    out.sort();
    out
}

/// Digests of the blobs linked into a repository.
pub fn layer_links(storage: &Path, repo: &str) -> Vec<String> {
    let dir = storage
        .join("docker/registry/v2/repositories")
        .join(repo)
        .join("_layers/sha256");
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries.flatten() {
            if let Ok(link) = std::fs::read_to_string(e.path().join("link")) {
                out.push(link.trim().to_owned());
            }
        }
    }
    out.sort();
    out
}
