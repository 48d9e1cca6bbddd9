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

/// Where the registry keeps a blob's bytes (manifests are blobs too).
pub fn blob_data(storage: &Path, digest: &str) -> std::path::PathBuf {
    let hex = digest.trim_start_matches("sha256:");
    storage.join(format!(
        "docker/registry/v2/blobs/sha256/{}/{hex}/data",
        &hex[..2]
    ))
}

/// Reads a blob's bytes from storage, if they are there.
pub fn read_blob(storage: &Path, digest: &str) -> Option<Vec<u8>> {
    std::fs::read(blob_data(storage, digest)).ok()
}

/// Removes a blob's bytes (what a broken disk or a bad GC leaves).
pub fn remove_blob_data(storage: &Path, digest: &str) {
    std::fs::remove_file(blob_data(storage, digest)).unwrap();
}

/// Removes a manifest revision's `link` from a repository.
pub fn remove_revision_link(storage: &Path, repo: &str, digest: &str) {
    let hex = digest.trim_start_matches("sha256:");
    std::fs::remove_file(
        repo_dir(storage, repo)
            .join("_manifests/revisions/sha256")
            .join(hex)
            .join("link"),
    )
    .unwrap();
}
