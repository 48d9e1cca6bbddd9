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
