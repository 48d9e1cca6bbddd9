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

/// After a crashed tag delete was recovered: `kept` still points at
/// `digest`, `digest` is the repository's only manifest (no dummy left), the
/// blob links are as before, the journal is closed, and the history holds
/// `removed` removals.
#[allow(clippy::too_many_arguments)]
pub fn assert_recovered_cleanly(
    storage: &Path,
    repo: &str,
    kept: &str,
    digest: &str,
    blobs_before: &[String],
    state_dir: &Path,
    removed: usize,
    step: &str,
) {
    assert!(
        tags(storage, repo).contains(&(kept.to_owned(), digest.to_owned())),
        "{step}: {kept} stays"
    );
    assert_eq!(
        revisions(storage, repo),
        vec![digest.to_owned()],
        "{step}: no dummy manifest left"
    );
    assert_eq!(
        layer_links(storage, repo),
        blobs_before,
        "{step}: no dummy blob left linked"
    );
    let state = regate::state::State::open(state_dir).unwrap();
    assert!(
        state.journal_open_entries().unwrap().is_empty(),
        "{step}: journal closed"
    );
    assert_eq!(
        state.deletions(Some(repo), 100).unwrap().len(),
        removed,
        "{step}: removals in the history"
    );
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
