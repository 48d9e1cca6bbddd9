//! Reading the registry's filesystem layout, to check what it really holds.

use std::path::Path;

fn repo_dir(storage: &Path, repo: &str) -> std::path::PathBuf {
    storage.join("docker/registry/v2/repositories").join(repo)
}

/// (entry name, link content) of every entry of `dir` that holds `link_path`
/// (a deleted entry leaves its folder without the link), sorted.
fn links(dir: &Path, link_path: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if let Ok(link) = std::fs::read_to_string(e.path().join(link_path)) {
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

/// Digests of the manifest revisions a repository holds (by `link` file).
pub fn revisions(storage: &Path, repo: &str) -> Vec<String> {
    let mut v: Vec<String> = links(
        &repo_dir(storage, repo).join("_manifests/revisions/sha256"),
        "link",
    )
    .into_iter()
    .map(|(_, l)| l)
    .collect();
    v.sort();
    v
}

/// Tag -> digest, as stored.
pub fn tags(storage: &Path, repo: &str) -> Vec<(String, String)> {
    links(
        &repo_dir(storage, repo).join("_manifests/tags"),
        "current/link",
    )
}

/// Digests of the blobs linked into a repository.
pub fn layer_links(storage: &Path, repo: &str) -> Vec<String> {
    let mut v: Vec<String> = links(&repo_dir(storage, repo).join("_layers/sha256"), "link")
        .into_iter()
        .map(|(_, l)| l)
        .collect();
    v.sort();
    v
}

/// Blob files whose content does not hash to the digest they are stored under.
pub fn blobs_not_matching_their_digest(storage: &Path) -> Vec<String> {
    use sha2::{Digest as _, Sha256};
    let root = storage.join("docker/registry/v2/blobs/sha256");
    let mut bad = Vec::new();
    for prefix in std::fs::read_dir(&root).into_iter().flatten().flatten() {
        for blob in std::fs::read_dir(prefix.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = blob.file_name().to_string_lossy().into_owned();
            match std::fs::read(blob.path().join("data")) {
                Ok(bytes) if hex::encode(Sha256::digest(&bytes)) == name => {}
                Ok(_) => bad.push(name),
                Err(e) => bad.push(format!("{name}: {e}")),
            }
        }
    }
    bad
}
